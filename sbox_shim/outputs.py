"""A step's missing outputs, on the host: directories made before it, staged files copied back after.

See layout.py for why a missing output file is staged. Every host path here lies in the project and
is reached from its root a directory at a time, each opened in the one before it without following
a link, and the file itself is made, read, written or removed through that directory's descriptor:
the project may hold links an earlier run planted, and another sandbox writing the same project (a
dev server) can swap a directory for a link to HOME at any moment. A swap only makes the step fail.
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


def _parent(root: str, path: str, make: bool = False) -> tuple[int, str]:
    """An O_PATH descriptor of the directory holding `path` (in the project `root`) and its last
    name; with `make`, `path` itself is the directory wanted, made with its missing parents.
    OSError (ELOOP, ENOTDIR, ENOENT) where a component is a link, no directory or missing."""
    top = root.rstrip("/") or "/"
    if not path.startswith(top + "/"):
        raise OSError(0, "not in the project", path)
    parts = [p for p in path[len(top):].split("/") if p]
    if not parts or ".." in parts:
        raise OSError(0, "not in the project", path)
    from sbox_shim.lean import open_along

    if make:
        return open_along(top, "/".join(parts), make=0o777), ""
    return open_along(top, "/".join(parts[:-1])), parts[-1]


class Placeholder(Value):
    __slots__ = ("source", "target", "dev", "ino", "created")
    source: str  # the run-dir file bound over it
    target: str  # the project file
    dev: int
    ino: int
    created: bool  # False: an earlier step of the run made the file; its content was staged

    def __init__(self, source: str, target: str, dev: int, ino: int, created: bool = True) -> None:
        self._set(source=source, target=target, dev=dev, ino=ino, created=created)


def make_dirs(root: str, paths: Sequence[str]) -> None:
    """Create each missing output directory (and its missing parents) in the project `root`,
    never through a link."""
    for path in paths:
        try:
            fd, _ = _parent(root, path, make=True)
        except OSError as exc:
            raise SandboxError(f"cannot create {path}: {exc.strerror or exc} (a directory on its way is a link, "
                               "or no directory?); nothing ran") from None
        os.close(fd)


def stage(root: str, staged: Sequence[tuple[str, str]]) -> list[Placeholder]:
    """An empty run-dir file and an empty placeholder (O_EXCL: never an existing file) for each
    project file of `staged`. A regular file an earlier step of the same run created there is
    staged with its content."""
    made = []
    try:
        for source, target in staged:
            os.makedirs(os.path.dirname(source), mode=0o700, exist_ok=True)
            data, created = b"", True
            parent, name = _parent(root, target)
            try:
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666, dir_fd=parent)
                except FileExistsError:
                    fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        os.close(fd)
                        raise OSError(0, "not a regular file", target) from None
                    with os.fdopen(os.dup(fd), "rb") as f:
                        data, created = f.read(), False
            finally:
                os.close(parent)
            st = os.fstat(fd)
            os.close(fd)
            with open(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600), "wb") as out:
                out.write(data)
            made.append(Placeholder(source, target, st.st_dev, st.st_ino, created))
    except OSError as exc:
        unstage(root, made)
        raise SandboxError(f"cannot stage {exc.filename or target}: {exc.strerror or exc}; nothing ran") from None
    return made


def unstage(root: str, made: Sequence[Placeholder], err: TextIO | None = None) -> None:
    """After the step: each staged file's content replaces its placeholder; an untouched (empty)
    one sbox made leaves nothing behind. A placeholder that is no longer sbox's own, or no longer
    reached without a link, is left alone."""
    for p in made:
        try:
            parent, name = _parent(root, p.target)
        except OSError:
            if err:
                err.write(f"sbox: {p.target} changed during the run; its staged output is not copied back\n")
            continue
        try:
            _unstage_one(p, parent, name, err)
        finally:
            os.close(parent)


def _unstage_one(p: Placeholder, parent: int, name: str, err: TextIO | None) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return
    if (st.st_dev, st.st_ino) != (p.dev, p.ino) or not stat.S_ISREG(st.st_mode):
        if err:
            err.write(f"sbox: {p.target} changed during the run; its staged output is not copied back\n")
        return
    try:
        with open(p.source, "rb") as f:
            data = f.read()
            # The placeholder's own mode (the user's umask), executable if the output was made
            # so; never setuid.
            made_exec = os.fstat(f.fileno()).st_mode & 0o100
            mode = (st.st_mode & 0o666) | (((st.st_mode & 0o444) >> 2) if made_exec else 0)
        if not data and p.created:
            os.unlink(name, dir_fd=parent)
            return
        fd = os.open(name, os.O_WRONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            if os.fstat(out.fileno()).st_ino == p.ino:  # truncated only once known to be sbox's own
                out.truncate(0)
                out.write(data)
                if p.created:
                    os.fchmod(out.fileno(), mode)
    except OSError as exc:
        if err:
            err.write(f"sbox: cannot write {p.target}: {exc.strerror}\n")
