"""Reading files that a sandbox could have written: regular files only, never through a final
link, never more than a cap. A FIFO would hang sbox and `/dev/zero` would exhaust its memory."""
from __future__ import annotations

import os
import stat

from sbox_shim.regular import MAX_BYTES as MAX_BYTES, read_regular as read_regular  # re-exported
from sbox_shim.text import printable as printable  # re-exported


def read_text(path: str, limit: int = MAX_BYTES) -> str:
    """A config file's text, or "" when it is missing, unreadable or not a plain regular file (a
    tool ignores what it cannot read too)."""
    data = read_regular(path, limit)
    if data is None:
        return ""
    return decode(data)


def decode(data: bytes) -> str:
    """Text as a tool reads it: a byte-order mark picks the encoding, else UTF-8; "" if neither."""
    encoding = "utf-8"
    for bom, name in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                      (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"), (b"\xef\xbb\xbf", "utf-8-sig")):
        if data.startswith(bom):  # as pip reads a requirements file: a byte-order mark decides
            encoding = name
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return ""


def why_unreadable(path: str, limit: int = MAX_BYTES) -> str | None:
    """Why `read_regular` refuses `path` (for an error line), or None if it would read it."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (sbox never follows links a project holds)"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    if st.st_size > limit:
        return f"is larger than {limit >> 20} MiB"
    return None if read_regular(path, limit) is not None else "cannot be read"


