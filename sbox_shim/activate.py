"""`sbox activate SHELL`: shell code that puts the shims first on PATH, idempotently, and keeps
them there with a prompt hook.

Used as `eval "$(sbox activate bash)"` or `sbox activate fish | source`. Sourcing it twice leaves
one entry: every existing occurrence is removed before the shims dir is put in front.
"""
from __future__ import annotations

import os
import shlex
import sys

from sbox_shim import shims

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping

# POSIX parameter expansion only, so bash, zsh, dash and busybox sh all read it the same way.
# `_sbox_front` puts the shims first; `_sbox_hook` runs before every prompt (bash PROMPT_COMMAND,
# zsh precmd, as direnv and mise do) and puts them back in front when something else got there
# first: `source .venv/bin/activate` prepends the venv's bin, whose pip would run unsandboxed.
_POSIX = """\
# sbox: put the shims first on PATH and keep them there (from `sbox activate {shell}`)
_sbox_drop() {{
    _sbox_list=":$1:"
    while case $_sbox_list in *":$2:"*) true ;; *) false ;; esac; do
        _sbox_list="${{_sbox_list%%":$2:"*}}:${{_sbox_list#*":$2:"}}"
    done
    _sbox_list=${{_sbox_list#:}}
    _sbox_list=${{_sbox_list%:}}
}}
_sbox_front() {{
    _sbox_drop "${{PATH-}}" {dir}
    PATH={dir}${{_sbox_list:+:$_sbox_list}}
    export PATH
    unset _sbox_list
    {rehash}
}}
_sbox_hook() {{
    case "${{PATH-}}" in {dir}|{dir}:*) ;; *:{dir}|*:{dir}:*) _sbox_front ;; esac
}}
_sbox_front
_sbox_drop "${{SBOX_SHIM_DIRS-}}" {dir}
SBOX_SHIM_DIRS={dir}${{_sbox_list:+:$_sbox_list}}
export PATH SBOX_SHIM_DIRS
unset _sbox_list
{rehash}
{hook}"""

# How each shell runs the hook before a prompt; plain sh has no such hook.
_HOOKS = {
    "bash": """case "${PROMPT_COMMAND-}" in *_sbox_hook*) ;; *) PROMPT_COMMAND="${PROMPT_COMMAND:+$PROMPT_COMMAND
}_sbox_hook" ;; esac
""",
    "zsh": """case " ${precmd_functions[*]-} " in *" _sbox_hook "*) ;; *) precmd_functions+=(_sbox_hook) ;; esac
""",
    "sh": "# (sh has no prompt hook: if something puts a directory before the shims, source this again)\n",
}

_FISH = """\
# sbox: put the shims first on PATH and keep them there (from `sbox activate fish`)
set -l _sbox_shims {dir}
while set -l _sbox_i (contains -i -- $_sbox_shims $PATH)
    set -e PATH[$_sbox_i]
end
set -gx PATH $_sbox_shims $PATH
set -l _sbox_dirs (string split -n : -- "$SBOX_SHIM_DIRS")
while set -l _sbox_i (contains -i -- $_sbox_shims $_sbox_dirs)
    set -e _sbox_dirs[$_sbox_i]
end
set -gx SBOX_SHIM_DIRS (string join : -- $_sbox_shims $_sbox_dirs)
# Before every prompt: the shims back in front if something (a venv's activate.fish) got there first.
function _sbox_hook --on-event fish_prompt
    set -l d {dir}
    if contains -- $d $PATH; and test "$PATH[1]" != "$d"
        while set -l i (contains -i -- $d $PATH)
            set -e PATH[$i]
        end
        set -gx PATH $d $PATH
    end
end
"""

REHASH = {"bash": "hash -r", "sh": "hash -r", "zsh": "rehash"}


def script(shell: str, shims_dir: str) -> str:
    """The activation code for `shell`; pure, so tests can run it in a real shell."""
    if shell == "fish":
        return _FISH.format(dir=_fish_quote(shims_dir))
    return _POSIX.format(shell=shell, dir=shlex.quote(shims_dir), rehash=REHASH[shell], hook=_HOOKS[shell])


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cmd_activate(shell: str, dir: str | None, env: Mapping[str, str]) -> int:
    shims_dir = os.path.abspath(dir) if dir else shims.default_dir(env)
    if not shims.installed(shims_dir):
        print(f"sbox: no shims in {shims_dir} yet; run: sbox shims install", file=sys.stderr)
    sys.stdout.write(script(shell, shims_dir))
    return 0
