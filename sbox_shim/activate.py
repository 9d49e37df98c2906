"""`sbox activate SHELL`: shell code that puts the shims first on PATH, idempotently.

Used as `eval "$(sbox activate bash)"` or `sbox activate fish | source`. Sourcing it twice leaves
one entry: every existing occurrence is removed before the shims dir is put in front.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Mapping

from sbox_shim import shims

# POSIX parameter expansion only, so bash, zsh, dash and busybox sh all read it the same way.
_POSIX = """\
# sbox: put the shims first on PATH (from `sbox activate {shell}`)
_sbox_shims={dir}
_sbox_drop() {{
    _sbox_list=":$1:"
    while case $_sbox_list in *":$_sbox_shims:"*) true ;; *) false ;; esac; do
        _sbox_list="${{_sbox_list%%":$_sbox_shims:"*}}:${{_sbox_list#*":$_sbox_shims:"}}"
    done
    _sbox_list=${{_sbox_list#:}}
    _sbox_list=${{_sbox_list%:}}
}}
_sbox_drop "${{PATH-}}"
PATH=$_sbox_shims${{_sbox_list:+:$_sbox_list}}
_sbox_drop "${{SBOX_SHIM_DIRS-}}"
SBOX_SHIM_DIRS=$_sbox_shims${{_sbox_list:+:$_sbox_list}}
export PATH SBOX_SHIM_DIRS
unset _sbox_shims _sbox_list
unset -f _sbox_drop
{rehash}
"""

_FISH = """\
# sbox: put the shims first on PATH (from `sbox activate fish`)
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
"""

REHASH = {"bash": "hash -r", "sh": "hash -r", "zsh": "rehash"}


def script(shell: str, shims_dir: str) -> str:
    """The activation code for `shell`; pure, so tests can run it in a real shell."""
    if shell == "fish":
        return _FISH.format(dir=_fish_quote(shims_dir))
    return _POSIX.format(shell=shell, dir=shlex.quote(shims_dir), rehash=REHASH[shell])


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cmd_activate(shell: str, dir: str | None, env: Mapping[str, str]) -> int:
    shims_dir = os.path.abspath(dir) if dir else shims.default_dir(env)
    if not shims.installed(shims_dir):
        print(f"sbox: no shims in {shims_dir} yet; run: sbox shims install", file=sys.stderr)
    sys.stdout.write(script(shell, shims_dir))
    return 0
