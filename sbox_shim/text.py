"""Text a sandbox could have written, made safe to print (imports nothing: on the warm path)."""
from __future__ import annotations

_BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F}


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (ESC, CR, newlines, C1) and bidirectional
    overrides escaped, so a name or a line a sandbox wrote cannot forge or hide what sbox prints."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 and ch != "\t" or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in _BIDI or 0xDC80 <= code <= 0xDCFF:  # overrides; undecodable bytes (surrogateescape)
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
