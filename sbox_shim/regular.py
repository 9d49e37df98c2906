"""Reading a file a sandbox could have written: a regular file only, never through a final link,
never more than a cap (a FIFO would hang sbox, `/dev/zero` exhaust its memory). The warm path's
guard reads package.json with it without loading the trust package, nor `os`: the calls go
through `os` wherever it is loaded, and only there can planning's probe (probe.py, which wraps
`os.open`) be watching, so every read it must note is noted; else through `posix`, the same
functions."""
from __future__ import annotations

import posix
import sys

S_IFMT, S_IFREG = 0o170000, 0o100000

MAX_BYTES = 1 << 20  # no config, requirements or manifest file sbox reads is larger


def read_regular(path: str, limit: int = MAX_BYTES, dir_fd: int | None = None, follow: bool = False) -> bytes | None:
    """The bytes of `path` (relative to the directory open at `dir_fd`, if given) if it is a
    regular file (its last component not a link, unless `follow`: a file the host's own config
    names, as the tool reading it would follow it) of at most `limit` bytes; None for anything
    else, missing or unreadable."""
    calls = sys.modules.get("os") or posix
    flags = posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC | (0 if follow else posix.O_NOFOLLOW)
    try:
        fd = calls.open(path, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = calls.fstat(fd)
        if st.st_mode & S_IFMT != S_IFREG or st.st_size > limit:
            return None
        chunks, total = [], 0
        while total <= limit:
            chunk = calls.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return None if total > limit else b"".join(chunks)
    except OSError:
        return None
    finally:
        calls.close(fd)
