"""Reading a file a sandbox could have written: a regular file only, never through a final link,
never more than a cap (a FIFO would hang sbox, `/dev/zero` exhaust its memory). Only `os` and
`stat`: the warm path's guard reads package.json with it without loading the trust package."""
from __future__ import annotations

import os
import stat

MAX_BYTES = 1 << 20  # no config, requirements or manifest file sbox reads is larger


def read_regular(path: str, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of `path` if it is a regular file (its last component not a link) of at most
    `limit` bytes; None for anything else, missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return None if total > limit else b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
