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
import tempfile
from pathlib import Path

import pytest

from sbox_shim import guard
from sbox_shim.guard import quarantine
from sbox_shim.plan import Mount
from tests.support import flipper

SECRET = b"SBOX-SWAP-CANARY"


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
    return flipper.start(root, "out", "out.x")


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

    from sbox_shim import gitwalk, lean

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
            seen.update(gitwalk.git_entries(str(root)) or ())  # None: the tree would not hold still
            seen.update(lean.sockets(str(root)))
    finally:
        flipper.kill()
        flipper.wait()
        listener.close()
    assert str(root / ".git") in seen, "the project's own .git was never found: the check would prove nothing"
    outside = sorted(seen - {str(root / ".git")})
    assert not outside, f"the walks listed what lies outside the project: {sorted(outside)}"


def test_the_index_never_keeps_a_directory_as_walked_when_a_link_was_listed(tmp_path: Path) -> None:
    """The guard's walk of a writable part keeps each directory's identity and ctime, and later
    walks skip a directory whose own are unchanged. A walk by path noted `w/sub/x` while `sub` was
    the directory and listed it while `sub` was a link to HOME's `sub`: the index then said the
    project's `x` had been seen without its `.git`, and every later walk (the guard after each
    step, the plan's check for `.git` entries to keep read-only) skipped it as unchanged."""
    from sbox_shim import kept
    from sbox_shim.guard import index

    home = tmp_path / "home"
    (home / "sub" / "x").mkdir(parents=True)  # the same names, without the plant
    top = tmp_path / "project" / "w"
    (top / "sub" / "x" / ".git").mkdir(parents=True)  # the plant, made by an earlier step
    (top / "sub.x").symlink_to(home / "sub")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    x = os.lstat(top / "sub" / "x")
    real = (x.st_dev, x.st_ino, x.st_ctime_ns)  # `x` is never renamed: this stays its identity
    where = index.path_of(str(top), str(state))
    assert where
    flipping = flipper.start(top, "sub", "sub.x")
    poisoned = walked = through_link = 0
    try:
        for _ in range(4000):
            # The live control: by path, `sub/x` is now and then HOME's, without the plant.
            through_link += not os.path.lexists(top / "sub" / "x" / ".git")
            kept.remove(where)  # a first walk of the tree each time
            scan = index.scan(str(top), str(state))
            record = kept.read_private(where)
            if not isinstance(record, dict):
                continue  # incomplete (a directory swapped away mid-walk): nothing kept
            if record["dirs"].get(str(top / "sub" / "x")) == real:
                walked += 1
                if str(top / "sub" / "x" / ".git") not in record["nested"] or \
                        str(top / "sub" / "x" / ".git") not in scan.nested:
                    poisoned += 1
    finally:
        flipping.kill()
        flipping.wait()
    assert through_link, "the swap never showed HOME's directory by path: the check would prove nothing"
    assert walked, "the project's `x` was never walked: the check would prove nothing"
    assert not poisoned, f"{poisoned} of {walked} walks kept the project's `x` as seen, without its `.git`"
