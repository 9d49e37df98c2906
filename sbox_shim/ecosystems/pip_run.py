"""pip's run-time hook (see hooks.py): the download phase and the offline install run only if
sbox's one-phase install (pip_install.py, the step before them) did not complete the install.

`step.hook` is ("pip", the run's wheelhouse). The one-phase step leaves `DONE` there once pip
installed everything from wheels; it runs sbox's own pip and no package code, and the wheelhouse is
made empty for each run (scratch.py), so the mark says only that. Without it (something needed a
build, or the venv's pip is not sbox's) both phases run as they would have without that step.
"""
from __future__ import annotations

import os
import stat
from typing import TextIO

from sbox_shim.plan import Step

DONE = ".sbox-installed"
SKIPPED = "every distribution was a wheel: installed in step 1"


def before(state: None, step: Step, err: TextIO) -> tuple[None, Step | None, str]:
    return None, (None if installed(step.hook[1]) else step), SKIPPED


def installed(wheelhouse: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(wheelhouse, DONE)).st_mode)
    except OSError:
        return False


def failed(state: None, err: TextIO) -> None:
    pass


def done(state: None) -> None:
    pass
