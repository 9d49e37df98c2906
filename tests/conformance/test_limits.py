"""Resource limits: time, processes, memory. A limit a backend cannot enforce is a visible xfail."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sbox_shim.backends import cgroups

from .helpers import PY, Runs, kill_all, marker, processes_with, profile, project, wait_until_gone

FORK = r"""
import os, sys, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
    print("FORKED", n)
except OSError as e:
    print("LIMITED", n, e.strerror)
"""


def _groups_left() -> list[str]:
    """The cgroups of sbox processes that are gone (cgroups.py names them sbox-PID-...)."""
    out = []
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        for directory, dirs, _ in os.walk(base):
            out += [os.path.join(directory, d) for d in dirs if d.startswith("sbox-")
                    and not os.path.exists(f"/proc/{d.split('-')[1]}")]
            if directory.count("/") > 8:
                dirs.clear()
    return out


def test_pids_limit(runs: Runs, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if runs.backend == "bwrap" and os.getuid() == 0 and cgroups.unusable(None, 50):
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            f"bwrap: {cgroups.unusable(None, 50)}; RLIMIT_NPROC is what it has, and the kernel exempts "
            "host root from it")))
    root = project(tmp_path, profile(limits="{pids: 50}"))
    tag = marker()
    result = runs.run(root, PY, "-c", FORK, tag)
    kill_all(processes_with(tag))
    assert "LIMITED" in result.stdout, result.stdout + result.stderr
    assert _groups_left() == []


def test_memory_limit(runs: Runs, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if runs.backend == "bwrap" and cgroups.unusable(64 << 20, None):
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            f"bwrap: {cgroups.unusable(64 << 20, None)}; a per-process rlimit would not be the same")))
    script = "b = bytearray(512 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ALLOCATED')"
    control = runs.run(project(tmp_path, name="control"), PY, "-c", script)
    assert "ALLOCATED" in control.stdout, control.stderr  # the same sandbox without the limit
    root = project(tmp_path, profile(limits="{memory: 64m}"))
    result = runs.run(root, PY, "-c", script)
    assert "ALLOCATED" not in result.stdout
    assert result.returncode != 0
    assert "not enforced" not in result.stderr, result.stderr
    assert _groups_left() == []


def test_timeout_limit_leaves_nothing(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(limits="{timeout: 2}"))
    tag = marker()
    result = runs.run(root, "sh", "-c", f"{PY} -c 'import time; time.sleep(300)' {tag} & wait")
    assert result.returncode == 124
    assert wait_until_gone(tag) == []
