"""Planning's probe (probe.py) notes every file planning reads, the plan cache's `content` facts:
also those read through regular.read_regular, which the warm path's guard uses without `os`."""
from __future__ import annotations

from pathlib import Path

from sbox_shim import probe, regular
from sbox_shim.trust import files


def test_a_file_read_through_read_regular_is_noted(tmp_path: Path) -> None:
    npmrc = tmp_path / ".npmrc"
    npmrc.write_text("registry=http://127.0.0.1:1/\n")
    with probe.watching(str(tmp_path)) as probes:
        assert files.read_regular(str(npmrc)) == npmrc.read_bytes()
        assert regular.read_regular(str(tmp_path / "package.json")) is None  # absent: still looked at
    assert ("content", str(npmrc)) in probes.facts()
    assert ("content", str(tmp_path / "package.json")) in probes.facts()
