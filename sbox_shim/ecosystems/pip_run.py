"""pip's run-time hook (see hooks.py): the download phase and the offline install run only if
sbox's one-phase install (pip_install.py, the step before them) did not complete the install;
and that step is not tried again soon for a command it could not complete.

`step.hook` is ("pip", the run's wheelhouse, this command's note). The one-phase step leaves `DONE`
in the wheelhouse once pip installed everything from wheels; it runs sbox's own pip and no package
code, and the wheelhouse is made empty for each run (scratch.py), so the mark says only that. It
is read once, right after that step: the download phase that may follow writes the wheelhouse
too, and an sdist's metadata hook runs there, so nothing found later counts.
Without it (something needed a build, or the venv's pip is not sbox's) both phases run as they
would have without that step, and the note (a file in sbox's cache, which no sandbox mounts,
named after the project and the command) spares the next runs of the same command the attempt
for a day. Either way the install is as safe: the note only ever chooses the two phases.
"""
from __future__ import annotations

import os
import stat
import time

from sbox_shim.ecosystems import Context
from sbox_shim.kept import digest
from sbox_shim.plan import Step

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence, TextIO

DONE = ".sbox-installed"
SKIPPED = "every distribution was a wheel: installed in step 1"
NOTED = "this command needed a build when last run: straight to the two phases"
NOTE_DAYS = 1


def fell_back(ctx: Context, argv: Sequence[str]) -> str:
    """Where the note for this command in this project lives (sbox's cache, `pip/two-phase/`)."""
    key = digest("\0".join([os.path.realpath(ctx.project_root), *argv]).encode())[:32]
    return os.path.join(ctx.cache_dir, "pip", "two-phase", key)


def before(state: str | None, step: Step, err: TextIO) -> tuple[str | None, Step | None, str]:
    _, wheelhouse, note = step.hook
    if state is None:  # the one-phase step: tried unless it could not complete this command lately
        if _regular(note, NOTE_DAYS * 86400):
            return "noted", None, NOTED
        return "tried", step, ""
    if state == "tried":  # just after the one-phase step: decided now, for both phases
        if _regular(os.path.join(wheelhouse, DONE)):
            _remove(note)
            return "installed", None, SKIPPED
        _write(note)
        return "fallen", step, ""
    if state == "installed":
        return state, None, SKIPPED
    # Fallen back (or not tried): both phases run, whatever the wheelhouse holds by now. The
    # download phase may write it and runs sdists' metadata hooks: a mark it left decides nothing.
    return "fallen", step, ""


def _regular(path: str, newer_than: float | None = None) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (newer_than is None or time.time() - info.st_mtime < newer_than)


def _write(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w"):
            pass
    except OSError:
        pass


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def failed(state: str | None, err: TextIO) -> None:
    pass


def done(state: str | None) -> None:
    pass
