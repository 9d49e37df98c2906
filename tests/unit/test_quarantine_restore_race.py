"""`sbox quarantine restore` against a red team's race: while it restores `.husky/pre-commit`, a
sandbox still running in the project swaps `.husky` for a link to a directory outside the project
and back, as fast as it can. Restore may refuse, or fail, or put the file in the project; it
never writes through the link (the file never appears outside)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path

from sbox_shim.guard import quarantine, restore

HOOK = b"#!/bin/sh\ntouch /nonexistent/pwned\n"


def _quarantines(state: Path, root: Path, count: int) -> list[str]:
    """`count` quarantines, each holding a `.husky/pre-commit` as the guard leaves one."""
    idents = []
    for i in range(count):
        ident = f"20261130T000000-{i:06x}"
        held = state / "quarantine" / ident / "files" / ".husky"
        held.mkdir(parents=True)
        (held / "pre-commit").write_bytes(HOOK)
        manifest = {"id": ident, "root": str(root), "command": ["sh"], "time": 0.0,
                    "entries": [{"path": ".husky/pre-commit", "what": "created", "kind": "file", "why": "host-executed",
                                 "mode": "0o755", "sha256": hashlib.sha256(HOOK).hexdigest(), "link": None,
                                 "previous_restored": False}]}
        (state / "quarantine" / ident / "manifest.json").write_text(json.dumps(manifest))
        idents.append(ident)
    return idents


def _flipper(root: Path, outside: Path, stop: threading.Event, empty: bool) -> threading.Thread:
    """What the red team's sandbox ran, started: `.husky` swapped for a link to `outside` and
    back, as fast as it goes, until `stop`; with `empty`, what was put in it is removed each time."""
    def flip() -> None:
        husky, aside, link = root / ".husky", root / ".h2", root / "lnk"
        link.symlink_to(outside)
        while not stop.is_set():
            try:
                os.rename(husky, aside)
                os.rename(link, husky)
                os.rename(husky, link)
                if empty:
                    try:
                        os.unlink(aside / "pre-commit")
                    except FileNotFoundError:
                        pass
                os.rename(aside, husky)
            except OSError:
                pass

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    return flipper


def test_restore_never_writes_through_a_link_swapped_in_meanwhile(tmp_path: Path) -> None:
    root, state, outside = tmp_path / "project", tmp_path / "state", tmp_path / "outside-hooks"
    (root / ".husky").mkdir(parents=True)
    outside.mkdir()
    idents = _quarantines(state, root, 150)
    stop = threading.Event()
    flipper = _flipper(root, outside, stop, empty=True)
    try:
        for ident in idents:
            restore.cmd_restore(str(state), ident, force=True, err=io.StringIO())
            assert not (outside / "pre-commit").exists(), f"restore {ident} wrote through the link"
    finally:
        stop.set()
        flipper.join()
    assert list(outside.iterdir()) == []


def test_quarantine_never_moves_a_file_through_a_link_swapped_in_meanwhile(tmp_path: Path) -> None:
    """The same race on the way in: while the guard moves a planted `.husky/pre-commit` into the
    quarantine, another sandbox swaps `.husky` for a link to a host directory that holds a file of
    that name. The guard may fail (it says so) or move the project's file; it never moves the
    host's."""
    from sbox_shim.guard import Before, Change, Entry

    root, state, outside = tmp_path / "project", tmp_path / "state", tmp_path / "host-hooks"
    (root / ".husky").mkdir(parents=True)
    outside.mkdir()
    (outside / "pre-commit").write_bytes(b"the host's own\n")
    stop = threading.Event()
    change = Change(".husky/pre-commit", "created", Entry("file", 0o100755, (0, 0, 0, 0, 0)), "host-executed")
    flipper = _flipper(root, outside, stop, empty=False)
    try:
        for _ in range(300):
            try:  # the sandbox plants its hook (in the project: it cannot reach the host's directory)
                husky = os.open(root / ".husky", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    planted = os.open("pre-commit", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755,
                                      dir_fd=husky)
                    os.write(planted, HOOK)
                    os.close(planted)
                finally:
                    os.close(husky)
                quarantine.quarantine([change], Before(str(root), 0, {}), str(state), ["sh"])
            except OSError:
                pass
            assert (outside / "pre-commit").read_bytes() == b"the host's own\n"
    finally:
        stop.set()
        flipper.join()
