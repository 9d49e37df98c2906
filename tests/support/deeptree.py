"""Removing a tree built deeper than a path can name (a test's hostile plant): pytest's own
clean-up of its temporary directories recurses and would fail at the next session's start."""
from __future__ import annotations

import os
import stat


def remove(path: str) -> None:
    """Remove `path` and all below it: fd-relative and iterative, no link followed."""
    top = os.path.abspath(path)
    parent = os.open(os.path.dirname(top), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opened = [parent]
    stack = [(parent, os.path.basename(top))]
    try:
        while stack:
            at, name = stack[-1]
            try:
                mode = os.lstat(name, dir_fd=at).st_mode
            except FileNotFoundError:
                stack.pop()
                continue
            if not stat.S_ISDIR(mode):
                os.unlink(name, dir_fd=at)
                stack.pop()
                continue
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
            names = os.listdir(fd)
            if not names:
                os.close(fd)
                os.rmdir(name, dir_fd=at)
                stack.pop()
                continue
            opened.append(fd)
            stack += [(fd, n) for n in names]
    finally:
        for fd in opened:
            os.close(fd)
