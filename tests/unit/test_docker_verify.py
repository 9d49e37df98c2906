"""The docker backend's check before the command (docker.VERIFY), run by the real /bin/sh, awk and
stat on this host: each pinned target must be a mount point holding the device and inode sbox
checked, or nothing runs (exit 125)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sbox_shim.backends.docker import VERIFY, _escaped


def _ident(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def _check(*triples: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    """VERIFY with (target, "dev:ino") pairs, then a command that says it ran (its arguments kept)."""
    args = [w for target, ident in triples for w in (target, _escaped(target), ident)]
    return subprocess.run(["/bin/sh", "-c", VERIFY, "sh", *args, "--", "echo", "ran", "--", "a=b"],
                          capture_output=True, text=True, timeout=30)


def test_mount_points_holding_what_sbox_checked_run_the_command_with_its_arguments() -> None:
    result = _check(("/", _ident("/")), ("/proc", _ident("/proc")))
    assert (result.returncode, result.stdout, result.stderr) == (0, "ran -- a=b\n", "")


def test_another_inode_at_the_target_runs_nothing() -> None:
    result = _check(("/", _ident("/")), ("/proc", "1:2"))
    assert (result.returncode, result.stdout) == (125, "")
    assert "sbox: /proc is not what sbox checked" in result.stderr


def test_a_target_that_is_no_mount_point_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    result = _check(("/", _ident("/")), (str(tmp_path / "d"), _ident(str(tmp_path / "d"))))
    assert (result.returncode, result.stdout) == (125, "")
    assert f"sbox: {tmp_path / 'd'} is not what sbox checked" in result.stderr


def test_a_target_that_is_gone_runs_nothing_even_if_the_others_match(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    result = _check((gone, "1:1"), ("/", _ident("/")), ("/proc", _ident("/proc")))
    assert (result.returncode, result.stdout) == (125, "")
