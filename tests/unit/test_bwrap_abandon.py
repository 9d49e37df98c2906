"""A sandbox started held and abandoned at once (the plan cache's warm path does so when a record
went stale while bwrap was starting): with an RLIMIT_NPROC or a cgroup, bwrap is forked, and the
fork may not have made its own session yet when sbox kills the session's group. sbox killed
nothing then and waited for a bwrap that waited on the block fd sbox held: a hang. Real bwrap,
abandoned many times in a row, in a child process the test gives a deadline."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from sbox_shim.backends import bwraprun
options = ["--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
           "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev"]
for _ in range(60):
    held = bwraprun.start(sys.argv[2], options, ["true"], nproc=4096, relay=False)
    held.abandon()
print("done")
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_forked_bwrap_abandoned_at_once_is_killed_not_waited_for() -> None:
    root = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-c", SCRIPT, root, str(shutil.which("bwrap"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
