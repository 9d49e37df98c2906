"""A step's missing outputs, on the host: directories made before it, staged files copied back after.

See layout.py for why a missing output file is staged. Every host path here is reached a component
at a time without following a link: the project may hold links an earlier run planted.
"""
from __future__ import annotations

import os
import stat
from sbox_shim.errors import SandboxError
from sbox_shim.plan import Value

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence, TextIO

_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Placeholder(Value):
    __slots__ = ("source", "target", "dev", "ino", "created")
    source: str  # the run-dir file bound over it
    target: str  # the project file
    dev: int
    ino: int
    created: bool  # False: an earlier step of the run made the file; its content was staged

    def __init__(self, source: str, target: str, dev: int, ino: int, created: bool = True) -> None:
        self._set(source=source, target=target, dev=dev, ino=ino, created=created)


def make_dirs(paths: Sequence[str]) -> None:
    """Create each missing output directory (and its missing parents), never through a link."""
    for path in paths:
        here = "/"
        for part in [p for p in path.split("/") if p]:
            here = os.path.join(here, part)
            try:
                os.mkdir(here, 0o777)
            except FileExistsError:
                pass
            except OSError as exc:
                raise SandboxError(f"cannot create {path}: {exc.strerror}") from None
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                raise SandboxError(f"cannot create {path}: {here} is not a directory (a link?); nothing ran")


def stage(staged: Sequence[tuple[str, str]]) -> list[Placeholder]:
    """An empty run-dir file and an empty placeholder (O_EXCL: never an existing file) for each.
    A regular file an earlier step of the same run created there is staged with its content."""
    made = []
    try:
        for source, target in staged:
            os.makedirs(os.path.dirname(source), mode=0o700, exist_ok=True)
            data, created = b"", True
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
            except FileExistsError:
                fd = os.open(target, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise OSError(0, "not a regular file", target) from None
                with os.fdopen(os.dup(fd), "rb") as f:
                    data, created = f.read(), False
            st = os.fstat(fd)
            os.close(fd)
            with open(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600), "wb") as out:
                out.write(data)
            made.append(Placeholder(source, target, st.st_dev, st.st_ino, created))
    except OSError as exc:
        unstage(made)
        raise SandboxError(f"cannot stage {exc.filename}: {exc.strerror}; nothing ran") from None
    return made


def unstage(made: Sequence[Placeholder], err: TextIO | None = None) -> None:
    """After the step: each staged file's content replaces its placeholder; an untouched (empty)
    one sbox made leaves nothing behind. A placeholder that is no longer sbox's own is left alone."""
    for p in made:
        try:
            st = os.lstat(p.target)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (p.dev, p.ino) or not stat.S_ISREG(st.st_mode):
            if err:
                err.write(f"sbox: {p.target} changed during the run; its staged output is not copied back\n")
            continue
        try:
            with open(p.source, "rb") as f:
                data = f.read()
                # The placeholder's own mode (the user's umask), executable if the output was made
                # so; never setuid.
                made_exec = os.fstat(f.fileno()).st_mode & 0o100
                mode = (st.st_mode & 0o666) | (((st.st_mode & 0o444) >> 2) if made_exec else 0)
            if not data and p.created:
                os.unlink(p.target)
                continue
            fd = os.open(p.target, os.O_WRONLY | os.O_TRUNC | _NOFOLLOW)
            with os.fdopen(fd, "wb") as out:
                if (os.fstat(out.fileno()).st_ino) == p.ino:
                    out.write(data)
                    if p.created:
                        os.fchmod(out.fileno(), mode)
        except OSError as exc:
            if err:
                err.write(f"sbox: cannot write {p.target}: {exc.strerror}\n")
