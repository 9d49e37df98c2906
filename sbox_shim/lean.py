"""What sbox's warm path needs of `os`, on the built-in `posix` module.

`import os` costs about 3 ms on this project's test machine (it builds `os.environ` on
`_collections_abc`): more than the rest of the warm path's imports together, on every repeated
command. So the modules the warm path loads (entry, compiled, kept, paths, backends.bwraprun) call
`posix` and these helpers; the rest of sbox uses `os` as usual. Linux and macOS only, like sbox.
"""
from __future__ import annotations

import posix
import sys


def environ() -> dict[str, str]:
    """`os.environ` as a plain dict: names and values decoded the way os decodes them."""
    encoding = sys.getfilesystemencoding()
    return {name.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for name, value in posix.environ.items()}


def join(base: str, *parts: str) -> str:
    """`os.path.join` for str paths: an absolute part starts again."""
    path = base
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def dirname(path: str) -> str:
    """`os.path.dirname`."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") or head


def makedirs(path: str, mode: int = 0o777) -> None:
    """`os.makedirs(path, mode, exist_ok=True)`."""
    parent = dirname(path)
    if parent and parent != path:
        try:
            posix.stat(parent)
        except FileNotFoundError:
            makedirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        pass
