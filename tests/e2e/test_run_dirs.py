"""sbox's run directories (generated /etc files, the egress socket, docker's gates): never where a
sandbox writes, and removed without following a link anything put there, even mid-removal."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbox_shim import runner
from support.trust import trust


def _run_dirs(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith(runner.RUN_PREFIX)) if base.is_dir() else []


@pytest.mark.parametrize("tmpdir", ["in the project", "outside"])
def test_a_tmpdir_in_the_project_gets_no_run_directory(tmp_path: Path, sbox_bin: str, tmpdir: str) -> None:
    """`TMPDIR=$PWD/.tmp` (an .envrc): a second sandbox writing the project would reach a run's
    egress socket or gate there. The run directory goes to /tmp instead; the control (a TMPDIR
    outside every project) shows where it goes otherwise, found the same way."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\n")
    trust(project / "sbox.yaml")
    base = project / ".tmp" if tmpdir == "in the project" else tmp_path / "tmp"
    base.mkdir()
    env = dict(os.environ, TMPDIR=str(base))
    run = subprocess.Popen([sbox_bin, "run", "--", "sleep", "5"], cwd=project, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while run.poll() is None and time.monotonic() < deadline and not seen:
        seen = _run_dirs(base)
        time.sleep(0.02)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    if tmpdir == "in the project":
        assert seen == [], seen
    else:
        assert seen and seen[0].startswith(f"{runner.RUN_PREFIX}{run.pid}-"), seen


# Another process of this user's, swapping `sub` (a directory) and `sub.x` (a link to the victim)
# in a run directory, over and over (RENAME_EXCHANGE: each name is always one or the other).
FLIP = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
end = time.time() + float(sys.argv[2])
a, b = os.path.join(sys.argv[1], "sub").encode(), os.path.join(sys.argv[1], "sub.x").encode()
while time.time() < end:
    libc.renameat2(-100, a, -100, b, 2)
"""


def test_a_directory_swapped_for_a_link_mid_removal_is_removed_as_a_link(tmp_path: Path) -> None:
    """The sweep of a killed run's directory, which another process of this user's is changing:
    `sub` and a link to a directory of the user's trade places while sbox removes the tree. Nothing
    the link points to is removed, round after round; the live control shows the link leads there."""
    victim = tmp_path / "victim"
    victim.mkdir()
    run_dir = tmp_path / f"{runner.RUN_PREFIX}99999999-aa"
    flipper = None
    try:
        for _ in range(300):
            (victim / "precious").write_text("keep me")
            stage = tmp_path / "stage"  # made aside, then renamed into place: the flipper finds it whole
            (stage / "sub").mkdir(parents=True)
            for i in range(20):
                (stage / "sub" / f"f{i}").write_text("x")
            (stage / "sub.x").symlink_to(victim)
            stage.rename(run_dir)
            if flipper is None:
                assert (run_dir / "sub.x" / "precious").read_text() == "keep me"  # control: the link leads there
                flipper = subprocess.Popen([sys.executable, "-c", FLIP, str(run_dir), "600"])
            for _ in range(100):  # an entry swapped in behind the removal is left for the next pass
                runner.remove_run_dir(str(run_dir))
                assert (victim / "precious").read_text() == "keep me", "the removal followed the link"
                if not run_dir.exists():
                    break
            assert not run_dir.exists()
    finally:
        if flipper is not None:
            flipper.kill()
            flipper.wait()
