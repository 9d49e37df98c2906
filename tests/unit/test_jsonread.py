"""jsonread.loads reads what json.loads reads, and refuses what it refuses (ValueError)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sbox_shim import jsonread

DOCUMENTS = [
    b'{"packages": {"": {"name": "app"}, "node_modules/a": {"version": "1.0.0", "hasInstallScript": true}}}',
    b'  \n{"a": [1, 2.5, -3e2, null, false, "\\u00e9\\n"]}\r\n\t',
    "\ufeff".encode() + b'{"bom": 1}',
    '{"é": "ü"}'.encode("utf-16"),
    b"[]",
    b'"text"',
    b"12",
    b'{"a": 1, "a": 2}',
    b'{"a": NaN, "b": -Infinity}',
]
REFUSED = [b"", b"   ", b"{", b'{"a": 1} {}', b"{'a': 1}", b'{"a": nan}', b"[1,]",
           b'{"a": "\x01"}', b"\xff\xfe{", "{}\u00a0".encode()]


@pytest.mark.parametrize("data", DOCUMENTS)
def test_reads_what_json_reads(data: bytes) -> None:
    assert repr(jsonread.loads(data)) == repr(json.loads(data))
    if not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        assert repr(jsonread.loads(data.decode())) == repr(json.loads(data.decode()))


@pytest.mark.parametrize("data", REFUSED)
def test_refuses_what_json_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        jsonread.loads(data)


def test_reading_a_document_imports_neither_json_nor_re() -> None:
    code = ("import sys; from sbox_shim import jsonread; jsonread.loads(b'{\"a\": [1, \"b\"]}'); "
            "print(sorted(m for m in ('json', 're') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
