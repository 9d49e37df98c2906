"""A red team's finding: a step leaves a 2 TiB sparse file under a watched name, and hard-links it
elsewhere. Moving it into a quarantine on another filesystem, and giving it an inode of its own,
copied every byte of its size (hours, and a full disk). Holes are now copied as holes. The real
guard on a real tree, the quarantine on another filesystem (/dev/shm, a tmpfs) where there is one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from sbox_shim import guard
from sbox_shim.guard import quarantine
from sbox_shim.plan import Mount

SIZE = 2 << 40


def _state_elsewhere(tmp_path: Path) -> Path:
    for base in ("/dev/shm", "/run", str(tmp_path)):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(dir=base))
    raise AssertionError("no writable directory")


def test_a_huge_sparse_plant_is_quarantined_without_copying_its_holes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "node_modules").mkdir(parents=True)
    (root / "Makefile").write_text("all:\n\techo host\n")
    mounts = [Mount(str(root), str(root), readonly=False)]
    snapshot = guard.before(str(root), mounts)
    with open(root / ".pdbrc", "wb") as f:  # what the step left: mostly a hole, some data at the end
        f.truncate(SIZE)
        f.seek(SIZE - 6)
        f.write(b"import")
    os.link(root / ".pdbrc", root / "node_modules" / "kept")  # so the quarantine gives it an inode of its own
    state = _state_elsewhere(tmp_path)
    try:
        if os.stat(state).st_dev == os.stat(root).st_dev:
            pytest.skip("no other filesystem to quarantine into here")  # the hard link still makes sbox copy it
        changes = guard.after(snapshot, mounts)
        assert [c.path for c in changes] == [".pdbrc"]
        moved = quarantine.quarantine(changes, snapshot, str(state), ["sh"])
        assert moved is not None
        kept = state / "quarantine" / moved[0] / "files" / ".pdbrc"
        st = os.stat(kept)
        assert st.st_size == SIZE and st.st_blocks * 512 < 64 << 20  # the holes stayed holes
        with open(kept, "rb") as f:
            f.seek(SIZE - 6)
            assert f.read() == b"import"
        assert not (root / ".pdbrc").exists() and os.stat(root / "node_modules" / "kept").st_ino != st.st_ino
    finally:
        import shutil

        shutil.rmtree(state, ignore_errors=True)
