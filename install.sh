#!/usr/bin/env bash
# Install sbox from this checkout: a private venv, `sbox` on PATH, the shims, and the one line
# that activates them in your shell. Edits no rc file unless --rc is given.
#
#   ./install.sh [--prefix DIR] [--bin-dir DIR] [--rc]
#
#   --prefix DIR    the venv to create (default: ${SBOX_HOME:-~/.local/share/sbox}/venv)
#   --bin-dir DIR   where to link the `sbox` command (default: ~/.local/bin)
#   --rc            also append the activation line, once, to your shell's rc file
#   PYTHON=...      the interpreter to build the venv with (default: python3)
set -euo pipefail

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'install.sh: %s\n' "$*"; }

: "${HOME:?HOME must be set}"
prefix="${SBOX_HOME:-$HOME/.local/share/sbox}/venv"
bin_dir="$HOME/.local/bin"
edit_rc=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
    --bin-dir=*) bin_dir=${1#*=}; shift ;;
    --rc) edit_rc=1; shift ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

src=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
[ -f "$src/pyproject.toml" ] && [ -d "$src/sbox_shim" ] || die "$src does not look like the sbox source tree"
mkdir -p -- "$prefix" "$bin_dir"
prefix=$(cd -P -- "$prefix" && pwd -P)
bin_dir=$(cd -P -- "$bin_dir" && pwd -P)

# Build from a copy, so the checkout stays untouched (no build/ or *.egg-info left behind).
work=$(mktemp -d "${TMPDIR:-/tmp}/sbox-install.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
files=(pyproject.toml sbox_shim bin)
for f in "$src"/README* "$src"/LICENSE*; do
  [ -e "$f" ] && files+=("${f##*/}")
done
tar -C "$src" --exclude=__pycache__ -cf - "${files[@]}" | tar -C "$work" -xf -

say "creating the venv in $prefix"
"${PYTHON:-python3}" -m venv -- "$prefix"
say "installing sbox into it"
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check "$work"
# This venv is sbox's own: its `sbox` can start Python with -I -S (see sbox_shim/launcher.py).
"$prefix/bin/python" -m sbox_shim.launcher "$prefix/bin/sbox"

link="$bin_dir/sbox"
if [ -e "$link" ] && [ ! -L "$link" ]; then
  die "$link exists and is not a link to sbox; move it away or pass --bin-dir"
fi
ln -sfn -- "$prefix/bin/sbox" "$link"
say "linked $link -> $prefix/bin/sbox"

"$link" shims install || say "some shims were not written (see above); the others are in place"

# The activation line for the user's shell, with the sbox path written as the user would.
shell=$(basename -- "${SHELL:-bash}")
case $shell in bash|zsh|fish) ;; *) shell=sh ;; esac
sbox_word=$(printf '%q' "$link")
case $link in
  "$HOME"/*) rest=${link#"$HOME"/}; [[ $rest =~ ^[A-Za-z0-9._/+-]+$ ]] && sbox_word="~/$rest" ;;
esac
if [ "$shell" = fish ]; then
  line="$sbox_word activate fish | source"
  rc_file="${XDG_CONFIG_HOME:-$HOME/.config}/fish/config.fish"
else
  line="eval \"\$($sbox_word activate $shell)\""
  case $shell in
    bash) rc_file="$HOME/.bashrc" ;;
    zsh) rc_file="${ZDOTDIR:-$HOME}/.zshrc" ;;
    *) rc_file="$HOME/.profile" ;;
  esac
fi

if [ "$edit_rc" = 1 ]; then
  mkdir -p -- "$(dirname -- "$rc_file")"
  if [ -f "$rc_file" ] && grep -qxF -- "$line" "$rc_file"; then
    say "$rc_file already activates sbox"
  else
    printf '\n# sbox: run package managers in a sandbox in projects that opt in\n%s\n' "$line" >> "$rc_file"
    say "added the activation line to $rc_file; open a new shell to use it"
  fi
else
  say "done. To activate the shims, add this line to $rc_file (or rerun with --rc):"
  printf '\n    %s\n\n' "$line"
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) say "note: $bin_dir is not on your PATH; add it to type \`sbox\` without its full path" ;;
esac
say "then, in a project: sbox init"
