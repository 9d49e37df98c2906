"""A pinned bind mounted over a decoy: the check of the sandbox's mounts sees it.

sbox finds a nested repository's `.git` when it plans, pins it (opens it without following a
link) and has bwrap bind it read-only onto its own path. Another sandbox writing the project can,
in between, move the repository's directory away (`vendor/lib` to `vendor/libX`: the `.git`
itself, a read-only mount in that sandbox, cannot move, its parent can) and make a decoy
`vendor/lib/.git`. bwrap then mounts the real `.git` over the decoy: at `vendor/lib/.git` the
sandbox sees what sbox pinned, read-only, so a check of device and inode at the target passes,
while the real directory is writable at `vendor/libX/.git`, its config unredacted (red team 8 read
the token and planted a hook the host's `git commit` ran). Here the swap is made before bwrap
starts, the rest is real: bwrap's mounts, the sandbox's mount table, sbox's check (and the docker
backend's, which runs inside the container, run here in the same sandbox).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sbox_shim.backends import mountcheck

TOKEN = "SBOX-DECOY-TOKEN"


def _sandbox(root: Path, pinned: int, target: Path) -> subprocess.Popen[str]:
    """bwrap with the project writable and the pinned `.git` bound read-only onto `target`,
    running a shell that reports its pid (no pid namespace: a host pid) and waits."""
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", str(root), str(root),
            "--ro-bind-fd", str(pinned), str(target), "--", "sh", "-c", "echo $$; exec sleep 60"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, pass_fds=(pinned,))
    assert proc.stdout is not None
    return proc


def _in_container_check(root: Path, pinned: int, target: Path) -> subprocess.CompletedProcess[str]:
    """The docker backend's check inside the container (docker.VERIFY: sh, stat, awk over the
    mount table), run in the same sandbox as bwrap makes it: exit 125 when a bind is refused."""
    from sbox_shim.backends.docker import VERIFY

    st = os.fstat(pinned)
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", str(root), str(root),
            "--ro-bind-fd", str(pinned), str(target), "--", "/bin/sh", "-c", VERIFY, "sh",
            str(target), str(target), f"{st.st_dev}:{st.st_ino}", "--", "true"]
    return subprocess.run(argv, capture_output=True, text=True, pass_fds=(pinned,), timeout=60)


def _check(proc: subprocess.Popen[str], target: Path, pinned: int) -> str | None:
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    st = os.fstat(pinned)
    return mountcheck.mismatch(pid, mountcheck._mountinfo(pid), [(str(target), st.st_dev, st.st_ino)])


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_pinned_git_mounted_over_a_decoy_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "project"
    real = root / "vendor" / "lib" / ".git"
    (real / "hooks").mkdir(parents=True)
    (real / "config").write_text(f'[remote "origin"]\n\turl = https://me:{TOKEN}@git.example.test/x.git\n')
    pinned = os.open(real, os.O_PATH | os.O_DIRECTORY)
    try:
        # The control: mounted onto itself, the check passes.
        control = _sandbox(root, pinned, real)
        try:
            assert _check(control, real, pinned) == ""
        finally:
            control.kill()
            control.wait()
        inside = _in_container_check(root, pinned, real)
        assert inside.returncode == 0, inside.stderr
        # The other sandbox's move, between sbox's look and bwrap's mounts.
        os.rename(root / "vendor" / "lib", root / "vendor" / "libX")
        (root / "vendor" / "lib" / ".git").mkdir(parents=True)
        raced = _sandbox(root, pinned, real)
        try:
            why = _check(raced, real, pinned)
            # What the sandbox would get: the real config, writable, where it went.
            seen = subprocess.run(["nsenter", "-t", str(_pid_of(raced)), "-m", "cat",
                                   str(root / "vendor" / "libX" / ".git" / "config")],
                                  capture_output=True, text=True, timeout=30)
        finally:
            raced.kill()
            raced.wait()
        assert TOKEN in seen.stdout, "the race did not expose the real config: the check would prove nothing"
        assert why and "mounted over another directory" in why, why
        inside = _in_container_check(root, pinned, real)
        assert inside.returncode == 125 and "its parent moved" in inside.stderr, (inside.returncode, inside.stderr)
    finally:
        os.close(pinned)


def _pid_of(proc: subprocess.Popen[str]) -> int:
    """The sandboxed shell's pid: bwrap's child (no pid namespace here)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(children[0])
