"""The plan cache's warm path runs under the same seccomp filter and /proc masks as the cold path.

A warm run (proven warm by -X importtime, see test_plan_cache.py) tries a setuid chmod, ptrace of
pid 1 and the kernel keyring; each must be refused as on the cold run. And when the filter cannot
be built, sbox fails closed: exit 125, one line, nothing run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.trust import trust

from conformance.helpers import PY, profile, project
from e2e.test_plan_cache import BWRAP, Sbox, caller_env, interpreter
from e2e.test_plan_cache import sbox  # noqa: F401  (the fixture)

pytestmark = pytest.mark.bwrap
PROBE = Path(__file__).resolve().parents[1] / "support" / "kernel_probe.py"


def test_the_warm_path_applies_the_filter_and_the_masks(sbox: Sbox) -> None:
    shutil.copy(PROBE, sbox.root / "probe.py")
    (sbox.root / "tool").write_text("#!/bin/sh\n")
    command = ("sh", "-c", f"{PY} probe.py chmod 4755 tool; {PY} probe.py ptrace 1; {PY} probe.py seccomp; "
               "cat /proc/keys >/dev/null 2>&1 && echo keys-readable || echo keys-masked")
    cold, warm = sbox.run_twice(*command)
    assert warm.stdout == cold.stdout, f"{cold}\n{warm}"
    assert warm.stdout.splitlines() == ["chmod EPERM fchmodat2=EPERM", "ptrace EPERM", "seccomp 2", "keys-masked"], str(warm)
    assert not os.stat(sbox.root / "tool").st_mode & 0o6000


def test_without_a_filter_nothing_runs(sbox_bin: str, tmp_path: Path) -> None:
    """pyseccomp made unimportable (a module of that name that raises): sbox says so and exits 125."""
    from conftest import require_backend

    require_backend("bwrap")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pyseccomp.py").write_text("raise ImportError('libseccomp is gone')\n")
    root = project(tmp_path, profile() + BWRAP)
    trust(root / "sbox.yaml")
    env = {**caller_env(), "SBOX_PLAN_CACHE": "0"}
    code = f"import sys; sys.path.insert(0, {str(broken)!r}); from sbox_shim.cli import main; raise SystemExit(main())"

    result = subprocess.run([interpreter(sbox_bin), "-c", code, "run", "--", "touch", "ran"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1 and "seccomp" in result.stderr, result.stderr
    assert not (root / "ran").exists()
