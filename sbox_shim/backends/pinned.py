"""Mount sources pinned by file descriptor: what sbox checked is what the sandbox gets.

sbox checks that no path it binds inside the project goes through a link, then the backend
resolves the path again when it mounts it. In between, another sandbox writing the same project
can swap a directory for a link (`out` -> `../../home`) and have HOME mounted. So each source
inside the project is opened component by component from the project root with O_PATH and
O_NOFOLLOW, and the backend binds the open file (bwrap's --bind-fd, docker through the fd's
/proc path), never the path. Lean: the warm path uses it (posix only).
"""
from __future__ import annotations

import posix

from sbox_shim import lean

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

O_PATH = getattr(posix, "O_PATH", 0o10000000)
_FLAGS = O_PATH | posix.O_NOFOLLOW | posix.O_CLOEXEC
S_IFMT, S_IFLNK = 0o170000, 0o120000
ELOOP = 40


def inside(path: str, root: str) -> bool:
    return bool(root) and lean.inside(path, root)


def open_source(root: str, source: str) -> int:
    """An O_PATH fd on `source`, which lies at or under `root`: the root as the user named it, each
    component below it opened relative to its parent without following a link. Raises OSError
    (ELOOP) when a component is a link, as the checks before said none was."""
    fd = posix.open(root, O_PATH | posix.O_CLOEXEC)
    try:
        rest = source[len(root.rstrip("/")):].strip("/")
        for part in [p for p in rest.split("/") if p]:
            child = posix.open(part, _FLAGS, dir_fd=fd)
            posix.close(fd)
            fd = child
            if posix.fstat(fd).st_mode & S_IFMT == S_IFLNK:
                raise OSError(ELOOP, "a link inside the project; sbox never mounts through one", source)
    except BaseException:
        posix.close(fd)
        raise
    return fd


def open_all(root: str, sources: Sequence[str]) -> list[int]:
    """`open_source` for each, in order; on any failure nothing stays open."""
    fds: list[int] = []
    try:
        for source in sources:
            fds.append(open_source(root, source))
    except BaseException:
        for fd in fds:
            posix.close(fd)
        raise
    return fds
