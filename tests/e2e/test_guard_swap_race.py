"""The persistence guard against a directory another sandbox swaps for a link while it looks.

A sandbox with the project writable (a dev server) swaps `out/` and `out.x`, a link to a HOME-like
directory holding a secret, in a loop, while sbox's guard snapshots the tree before a step that
may write `out/` and compares it after. The guard keeps small files' content to put a changed one
back, and quarantines what changed, copying it when sbox's state is on another filesystem. A
walk that goes by path goes through `out` while it is the link: the secret is kept, then written
into the project (the next sandbox reads it) or into the quarantine (`sbox quarantine restore`
puts it there). Nothing here is mocked: the guard's own functions, a real concurrent process, the
files on disk.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sbox_shim import guard
from sbox_shim.guard import quarantine
from sbox_shim.plan import Mount

SECRET = b"SBOX-SWAP-CANARY"
FLIP = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
print("flipping", flush=True)
while True:
    libc.renameat2(-100, b"out", -100, b"out.x", 2)  # RENAME_EXCHANGE: `out` is the dir or the link
"""


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_bytes(SECRET + b"\n")
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    (root / "out" / "mine").write_text("built\n")
    (root / "out.x").symlink_to("../home")
    # The live control: through the link, the secret is right there for any walk that goes by path.
    assert (root / "out.x" / "secret").read_bytes().startswith(SECRET)
    return root, home


def _flipper(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", FLIP, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "flipping\n"
    return proc


def _holds_secret(path: Path) -> list[str]:
    return [str(p) for p in [path, *path.rglob("*")] if p.is_file() and not p.is_symlink()
            and SECRET in p.read_bytes()]


def test_the_snapshot_never_keeps_what_a_swapped_in_link_leads_to(tmp_path: Path) -> None:
    root, _ = _setup(tmp_path)
    mounts = [Mount(str(root / "out"), str(root / "out"), readonly=False)]
    flipper = _flipper(root)
    kept: list[str] = []
    failed: list[str] = []
    try:
        for _ in range(8000):
            try:
                snapshot = guard.before(str(root), mounts)
                guard.after(snapshot, mounts)
            except Exception as exc:  # the guard's check failing is a step let through unchecked
                failed.append(repr(exc))
                continue
            kept += [rel for rel, e in snapshot.entries.items()
                     if (e.content and SECRET in e.content) or rel.endswith("/secret")]
    finally:
        flipper.kill()
        flipper.wait()
    assert not kept, f"the guard kept the secret from outside the project: {kept[:5]}"
    assert not failed, f"a swap made the guard's check fail: {sorted(set(failed))[:3]}"


def test_a_quarantine_on_another_filesystem_never_copies_what_a_swapped_in_link_leads_to(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) here for sbox's quarantine")
    root, _ = _setup(tmp_path)
    where = Path(tempfile.mkdtemp(prefix="sbox-swap-quarantine-", dir=shm))
    flipper = _flipper(root)
    moved = 0
    try:
        for i in range(1500):
            _refill(root)
            parent = os.open(root, os.O_PATH | os.O_DIRECTORY)
            try:
                quarantine._move_from(parent, "out", str(where / str(i) / "out"))
                moved += 1
            except OSError:
                pass  # swapped away mid-move: what is left is where it was
            finally:
                os.close(parent)
        copies = _holds_secret(where)
    finally:
        flipper.kill()
        flipper.wait()
        shutil.rmtree(where, ignore_errors=True)
    assert moved > 0, "nothing was ever quarantined: the check would prove nothing"
    assert not copies, f"the quarantine holds the secret from outside the project: {copies[:5]}"


def _refill(root: Path) -> None:
    """Put back what the last move took: `out` and `out.x` are the directory and the link again
    (with one of them gone the flipper's exchange fails, so the names hold still meanwhile)."""
    here = [n for n in ("out", "out.x") if os.path.lexists(root / n)]
    if not here:
        (root / "out.x").symlink_to("../home")
        here = ["out.x"]
    if len(here) == 1:
        missing = root / ("out" if here == ["out.x"] else "out.x")
        if (root / here[0]).is_symlink():
            missing.mkdir()
            (missing / "mine").write_text("built\n")
        else:
            missing.symlink_to("../home")


def test_the_plan_s_walks_never_list_what_a_swapped_in_link_leads_to(tmp_path: Path) -> None:
    """Planning walks the project for `.git` entries (kept read-only) and unix sockets (masked): a
    walk by path went through `out` while it was the link and planned a mask for HOME's socket at
    `out/agent.sock` (bwrap then made that file in the project) and binds of HOME's `.git` (red
    team 7)."""
    import socket

    from sbox_shim import lean

    root, home = _setup(tmp_path)
    (home / ".git").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(home / "agent.sock"))
    (root / ".git").mkdir()  # the project's own, which the walks must find
    # The live control: through the link, both are there for a walk that goes by path.
    assert (root / "out.x" / ".git").is_dir() and (root / "out.x" / "agent.sock").is_socket()
    flipper = _flipper(root)
    seen: set[str] = set()
    try:
        for _ in range(3000):
            seen.update(lean.git_entries(str(root)))
            seen.update(lean.sockets(str(root)))
    finally:
        flipper.kill()
        flipper.wait()
        listener.close()
    assert str(root / ".git") in seen, "the project's own .git was never found: the check would prove nothing"
    outside = sorted(seen - {str(root / ".git")})
    assert not outside, f"the walks listed what lies outside the project: {sorted(outside)}"
