"""The rollback's work on trees (rollback.py), every call relative to a directory descriptor
sbox holds, no link followed: a clone of hard links, its setuid and setgid bits cleared, its
removal, and a small file's bytes.
"""
from __future__ import annotations

import os
import stat

from sbox_shim.guard import NESTED

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID


def read_bytes(fd: int, name: str, limit: int) -> bytes | None:
    """The bytes of regular file `name` (never through a link), None if it is anything else."""
    from sbox_shim.regular import read_regular

    return read_regular(name, limit, dir_fd=fd)


def clone(fd: int, target: int, top: bool = False, copy: bool = False) -> None:
    """Recreate the tree open at `fd` in the directory open at `target`: directories made, links
    copied as links, regular files hard-linked (the top level's own files, which a tool rewrites
    in place, copied, last: npm trusts its hidden lockfile only when it is newer than the
    directories)."""
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda e: not e.is_dir(follow_symlinks=False))
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=target)
                child, made = os.open(name, DIR, dir_fd=fd), -1
                try:
                    made = os.open(name, DIR, dir_fd=target)
                    clone(child, made, copy=copy or name in NESTED)
                finally:
                    os.close(child)
                    if made >= 0:
                        os.close(made)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=fd), name, dir_fd=target)
            elif stat.S_ISREG(st.st_mode):
                if not (top or copy or name in NESTED):
                    try:
                        os.link(name, name, src_dir_fd=fd, dst_dir_fd=target, follow_symlinks=False)
                        continue
                    except OSError:
                        pass
                _copy(fd, name, target, st.st_mode)


def _copy(fd: int, name: str, target: int, mode: int) -> None:
    import shutil

    with os.fdopen(os.open(name, FILE, dir_fd=fd), "rb") as f, \
            os.fdopen(os.open(name, NEW, 0o600, dir_fd=target), "wb") as out:
        shutil.copyfileobj(f, out)
        os.fchmod(out.fileno(), stat.S_IMODE(mode))


def empty(fd: int) -> bool:
    with os.scandir(fd) as entries:
        return next(iter(entries), None) is None


def empty_out(fd: int) -> None:
    """Remove everything in the directory open at `fd` (sbox's own; no link followed)."""
    with os.scandir(fd) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(entry.name, DIR, dir_fd=fd)
            except OSError:
                continue
            try:
                empty_out(child)
            finally:
                os.close(child)
            try:
                os.rmdir(entry.name, dir_fd=fd)
            except OSError:
                pass
        else:
            try:
                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass


def strip_setid(fd: int) -> None:
    """Clear the setuid and setgid bits of every regular file in the tree open at `fd`."""
    with os.scandir(fd) as listing:
        entries = list(listing)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            child = os.open(entry.name, DIR, dir_fd=fd)
            try:
                strip_setid(child)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode) and st.st_mode & _SETID:
            _unset(fd, entry.name)


def _unset(fd: int, name: str) -> None:
    """Clear the setuid and setgid bits of regular file `name` through a descriptor on it (one
    without a read bit: through an O_PATH descriptor, which Linux has, and /proc)."""
    readable = True
    try:
        file = os.open(name, FILE, dir_fd=fd)
    except PermissionError:
        if not hasattr(os, "O_PATH"):  # macOS: the rollback stops and says where the kept state is
            raise
        file, readable = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd), False
    try:
        st = os.fstat(file)
        if stat.S_ISREG(st.st_mode) and st.st_mode & _SETID:
            mode = stat.S_IMODE(st.st_mode) & ~_SETID
            os.fchmod(file, mode) if readable else os.chmod(f"/proc/self/fd/{file}", mode)
    finally:
        os.close(file)
