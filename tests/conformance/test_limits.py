"""Resource limits: time, processes, memory. A limit a backend cannot enforce is a visible xfail."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def test_pids_limit(runs: Runs, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if runs.backend == "bwrap" and os.getuid() == 0:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "bwrap: no cgroups; RLIMIT_NPROC is what it has, and the kernel exempts host root from it")))
    root = project(tmp_path, profile(limits="{pids: 50}"))
    tag = marker()
    result = runs.run(root, PY, "-c", FORK, tag)
    kill_all(processes_with(tag))
    assert "LIMITED" in result.stdout, result.stdout + result.stderr


def test_memory_limit(runs: Runs, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if runs.backend == "bwrap":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "bwrap: no cgroups to cap the sandbox's memory; a per-process rlimit would not be the same")))
    root = project(tmp_path, profile(limits="{memory: 64m}"))
    script = "b = bytearray(512 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ALLOCATED')"
    result = runs.run(root, PY, "-c", script)
    assert "ALLOCATED" not in result.stdout
    assert result.returncode != 0


def test_timeout_limit_leaves_nothing(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(limits="{timeout: 2}"))
    tag = marker()
    result = runs.run(root, "sh", "-c", f"{PY} -c 'import time; time.sleep(300)' {tag} & wait")
    assert result.returncode == 124
    assert wait_until_gone(tag) == []
