"""sbox's private state files: the plan cache's records, parsed configs, bwrap's options.

Each is plain data (marshal) in a directory under sbox's state directory, written atomically with
mode 0600 in a 0700 directory, and read back only if the file and its directory belong to this
user and no one else can write to them. build.py keeps the state directory read-only in every
sandbox that could otherwise reach it. Lean: the warm path uses it.
"""
from __future__ import annotations

import marshal
import posix
import sys

from sbox_shim import lean

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

KEEP = 256  # files kept per directory; the oldest go first


def hasher() -> Any:
    """A SHA-256 hasher from the built-in module: hashlib loads OpenSSL, tens of milliseconds here."""
    try:
        if sys.version_info >= (3, 12):
            from _sha2 import sha256  # type: ignore[import-not-found]
        else:
            from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256
    return sha256()


def digest(data: bytes) -> str:
    """SHA-256, hex."""
    h = hasher()
    h.update(data)
    return str(h.hexdigest())


def read_private(path: str) -> object:
    """What sbox stored at `path`, if it is ours: a regular file of this user, in a directory of
    this user, neither writable by anyone else. None otherwise."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not (_private(posix.fstat(fd)) and _private(posix.stat(lean.dirname(path)))):
            return None
        data = b""
        while chunk := posix.read(fd, 1 << 16):
            data += chunk
    finally:
        posix.close(fd)
    try:
        return marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None


def _private(st: posix.stat_result) -> bool:
    return st.st_uid == posix.getuid() and not st.st_mode & 0o022


def write_private(path: str, value: Any, prune_old: bool = True) -> None:
    """Store `value` (plain data) at `path` for `read_private`: atomically, in a private directory
    that keeps its newest KEEP files (all of them, without `prune_old`). Raises OSError, or
    ValueError for what marshal cannot hold."""
    write_bytes(path, marshal.dumps(value), prune_old)


def write_bytes(path: str, data: bytes, prune_old: bool = True) -> None:
    """Atomically, in a private directory; unless `prune_old` is False, the oldest files go once
    there are more than KEEP."""
    base = lean.dirname(path)
    lean.makedirs(base, 0o700)
    posix.chmod(base, 0o700)
    temporary = f"{path}.{posix.getpid()}.tmp"
    fd = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_NOFOLLOW | posix.O_CLOEXEC, 0o600)
    try:
        posix.write(fd, data)
    finally:
        posix.close(fd)
    posix.replace(temporary, path)
    if prune_old:
        prune(base)


def prune(base: str) -> None:
    with posix.scandir(base) as entries:
        records = [(e.stat().st_mtime_ns, e.path) for e in entries if not e.name.endswith(".tmp")]
    for _, old in sorted(records)[:-KEEP]:
        remove(old)


def remove(path: str) -> None:
    try:
        posix.unlink(path)
    except OSError:
        pass
