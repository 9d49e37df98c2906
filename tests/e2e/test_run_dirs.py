"""sbox's run directories (generated /etc files, the egress socket, docker's gates): never where a
sandbox writes, and removed without following a link anything put there, even mid-removal."""
from __future__ import annotations

import os
import subprocess
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


def test_a_directory_swapped_for_a_link_mid_removal_is_removed_as_a_link(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep of a killed run's directory (which another process of this user may have made, or
    be changing): between listing `sub` and entering it, `sub` becomes a link to a directory of the
    user's. Nothing there is removed."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    run_dir = tmp_path / f"{runner.RUN_PREFIX}99999999-aa"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / "sub" / "f").write_text("x")
    (run_dir / "g").write_text("y")
    swapped: list[bool] = []

    def swap() -> None:
        if not swapped:
            swapped.append(True)
            (run_dir / "sub" / "f").unlink()
            (run_dir / "sub").rmdir()
            (run_dir / "sub").symlink_to(victim)

    real_open, real_scandir = os.open, os.scandir

    def opening(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(path) in ("sub", str(run_dir / "sub")):
            swap()
        return real_open(path, *args, **kwargs)

    def listing(path=".", *args, **kwargs):  # type: ignore[no-untyped-def]
        if not isinstance(path, int) and os.fspath(path) == str(run_dir / "sub"):
            swap()
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "scandir", listing)
    runner.remove_run_dir(str(run_dir))
    monkeypatch.undo()
    assert swapped, "the removal never entered sub"
    assert (victim / "precious").read_text() == "keep me"
    assert not run_dir.exists()
