"""Copies the quarantine makes when sbox's state is on another filesystem than the project:
through directory descriptors, never through a link the project holds, holes kept as holes."""
from __future__ import annotations

import errno
import os
import shutil
import stat

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any


def copy_out(parent: int, name: str, target: str) -> None:
    """Copy `name`, in the directory open as `parent`, to `target` in the quarantine, as mv does
    across filesystems: links as links, modes and times kept, a socket or FIFO left out (its
    manifest line is what is kept). Each directory is opened in the one above it without
    following a link: one another sandbox swaps for a link meanwhile (`out` -> `../home`) is
    never copied as what it leads to. Iterative; OSError (ELOOP) for a tree deeper than
    MAX_DEPTH, which quarantine._move_or_hold renames beside itself instead."""
    from sbox_shim.guard import MAX_DEPTH, _open_listed

    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    stack: list[tuple[int, Any, str, os.stat_result | None]] = [(parent, iter((name,)), os.path.dirname(target), None)]
    try:
        while stack:
            fd, names, into, st = stack[-1]
            child = next(names, "")
            if not child:
                stack.pop()
                if st is not None:  # a directory copied: its rights and times last, as cp -a does
                    os.close(fd)
                    os.chmod(into, stat.S_IMODE(st.st_mode))
                    os.utime(into, ns=(st.st_atime_ns, st.st_mtime_ns))
                continue
            here = os.stat(child, dir_fd=fd, follow_symlinks=False)
            copy = os.path.join(into, os.path.basename(target) if st is None else child)
            if stat.S_ISLNK(here.st_mode):
                os.symlink(os.readlink(child, dir_fd=fd), copy)
                os.utime(copy, ns=(here.st_atime_ns, here.st_mtime_ns), follow_symlinks=False)
            elif stat.S_ISREG(here.st_mode):
                source = os.open(child, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
                try:
                    copy_data(source, copy)
                finally:
                    os.close(source)
                os.chmod(copy, stat.S_IMODE(here.st_mode))
                os.utime(copy, ns=(here.st_atime_ns, here.st_mtime_ns))
            elif stat.S_ISDIR(here.st_mode):
                if len(stack) > MAX_DEPTH:
                    raise OSError(errno.ELOOP, "too deep to copy across filesystems", child)
                inner = _open_listed(fd, child, owner=True)
                if inner is None:
                    raise OSError(errno.EACCES, "cannot be read to copy across filesystems", child)
                os.mkdir(copy, 0o700)
                stack.append((inner[0], inner[1], copy, here))
    finally:
        for fd, _, _, st in stack:
            if st is not None:
                os.close(fd)


def copy_file(source: str, target: str) -> None:
    """A regular file copied (never through a final link) with its holes kept as holes: a sparse
    file of terabytes a sandbox made costs what its data costs, not its size."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        copy_data(fd, target)
    finally:
        os.close(fd)
    shutil.copystat(source, target, follow_symlinks=False)


def copy_data(src: int, target: str) -> None:
    """The data of the regular file open as `src` into a new file `target` (0600), holes kept."""
    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        size, offset = os.fstat(src).st_size, 0
        while offset < size:
            try:
                start = os.lseek(src, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole to the end
                    break
                raise
            end = os.lseek(src, start, os.SEEK_HOLE)
            os.lseek(dst, start, os.SEEK_SET)
            while start < end:
                chunk = os.pread(src, min(end - start, 1 << 20), start)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
                start += len(chunk)
            offset = end
        os.ftruncate(dst, size)
    finally:
        os.close(dst)
