"""JSON read with the interpreter's own scanner (`_json`), without importing `json`.

`json` imports `re` and with it `enum` and `functools`: about 7 ms here, paid on the warm path of
every repeated `npm install` to read two lockfiles. The scanner `json` itself uses does the
parsing; this adds only what `json.loads` does around it (the encoding, the whitespace around the
document, nothing after it). A document that is not JSON raises ValueError, as `json.loads` does.
"""
from __future__ import annotations

import _json

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Any

WHITESPACE = " \t\n\r"  # JSON's, which is narrower than str.strip()'s


_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}  # as json.loads


class _Context:
    """What the scanner reads from `json.JSONDecoder`, as json.loads makes it: strict, no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # it reads these attributes


def loads(data: bytes | str) -> Any:
    if isinstance(data, bytes):
        if b"\0" in data[:4]:  # UTF-16 or UTF-32, which json.loads detects: rare enough to pay for it
            import json

            return json.loads(data)
        data = data.decode("utf-8-sig")
    text = data.strip(WHITESPACE)
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if end != len(text):
        raise ValueError("extra data after the JSON document")
    return value
