"""Teardown the command cannot stop: no hang once it has exited, no container outliving sbox,
bounded scratch space."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.trust import trust

from .helpers import PY, Runs, docker_client, finish, kill_all, marker, processes_with, profile, project, read_line

# Inside: leave a loop behind that appends to the project every 50 ms (in a session of its own),
# and a second child SIGSTOPped; then ptrace-stop (or failing that SIGSTOP) every other process
# in sight, pid 1 included, wait until each is stopped, and exit.
STOP_ALL = r"""
import ctypes, os, signal, sys, time
path = sys.argv[1]
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    loop = os.fork()
    if loop == 0:
        with open(path, "a") as f:
            while True:
                f.write("x\n"); f.flush(); time.sleep(0.05)
    os.write(w, str(loop).encode()); os._exit(0)
os.wait()
loop = int(os.read(r, 64))
sleeper = os.fork()
if sleeper == 0:
    time.sleep(3600); os._exit(0)
os.kill(sleeper, signal.SIGSTOP)
libc = ctypes.CDLL(None, use_errno=True)
for name in (sorted(os.listdir("/proc")) if sys.argv[2] == "all" else []):
    pid = int(name) if name.isdigit() else 0
    if pid in (0, os.getpid(), loop, sleeper):
        continue
    if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
        os.waitpid(pid, 0x40000000)  # __WALL: until it is stopped
        libc.ptrace(17, pid, 0, signal.SIGSTOP)  # PTRACE_DETACH, leaving it group-stopped
        print("PTRACED", pid, flush=True)
        continue
    try:
        os.kill(pid, signal.SIGSTOP)
        print("STOPPED", pid, flush=True)
    except OSError:
        pass
print("EXITING", flush=True)
"""

BOUND = 20.0  # far above the teardown grace: reaching it means sbox hung
REMOVED_WITHIN = 10.0  # after sbox's SIGKILL, for its container to go


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_a_stopped_sandbox_is_torn_down_once_the_command_exits(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=True))
    trust(root / "sbox.yaml")
    grows = root / "grows"
    proc = runs.start(root, PY, "-c", STOP_ALL, str(grows), "all", marker())
    try:
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"sbox hung after the command exited:\n{out}\n{err}") from None
    assert "EXITING" in out, out + err
    before = _size(grows)
    assert before > 0, "the loop never wrote: the attack did not run"
    time.sleep(1)
    middle = _size(grows)
    time.sleep(1)
    assert (before, middle) == (middle, _size(grows)), "the loop outlived sbox and still writes the project"


def test_a_stopped_loop_control_outside_sbox_keeps_writing(tmp_path: Path) -> None:
    """Live control: the same attack on the host leaves its loop writing after it exits."""
    grows = tmp_path / "grows"
    tag = marker()
    # on the host nothing else is stopped (it would stop the machine's processes): only the sleeper
    with open(tmp_path / "out", "w") as out:  # the loop keeps it open: no pipe to wait on
        subprocess.run([PY, "-c", STOP_ALL, str(grows), "none", tag], stdout=out, timeout=BOUND, check=True)
    try:
        assert "EXITING" in (tmp_path / "out").read_text()
        time.sleep(0.5)
        before = _size(grows)
        time.sleep(1)
        assert _size(grows) > before
    finally:
        kill_all(processes_with(tag))


# Inside: kill every process it can see (the docker backend's helpers included), then wait.
KILL_ALL_THEN_WAIT = r"""
import os, signal, sys, time
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) != os.getpid():
        try:
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
print("KILLED", flush=True)
time.sleep(300)
"""


def test_a_killed_sbox_leaves_no_container(docker_backend: str, sbox_bin: str, tmp_path: Path) -> None:
    runs = Runs(sbox_bin, docker_backend)
    root = project(tmp_path)
    trust(root / "sbox.yaml")
    proc = runs.start(root, PY, "-c", KILL_ALL_THEN_WAIT, marker())
    assert read_line(proc) == "KILLED"
    time.sleep(0.5)  # whatever the kill reached has died by now
    client = docker_client()
    found = client.containers.list(all=True, filters={"name": f"sbox-{proc.pid}-"})
    assert found and found[0].status == "running", "control: the container runs while sbox does"
    proc.send_signal(signal.SIGKILL)
    # dead but not reaped: its pid stays taken, so no other sbox run on this daemon takes the
    # container for a stale one and removes it, which would hide a missing watcher
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    deadline = time.monotonic() + REMOVED_WITHIN
    while client.containers.list(all=True, filters={"name": f"sbox-{proc.pid}-"}):
        if time.monotonic() > deadline:
            for c in client.containers.list(all=True, filters={"name": f"sbox-{proc.pid}-"}):
                c.remove(force=True)
            finish(proc)
            pytest.fail("the container outlived the SIGKILLed sbox")
        time.sleep(0.2)
    finish(proc)


FILL = r"""
import errno, sys
n = int(sys.argv[1])
try:
    with open(sys.argv[2], "wb") as f:
        for _ in range(n // (1 << 20)):
            f.write(b"\0" * (1 << 20))
            f.flush()
    print("WROTE")
except OSError as e:
    print("FULL" if e.errno == errno.ENOSPC else "ERROR", e.strerror)
"""


@pytest.mark.parametrize("where", ["/tmp", "/var/tmp", "HOME", "/dev/shm"])
def test_scratch_follows_the_memory_limit(runs: Runs, tmp_path: Path, where: str) -> None:
    root = project(tmp_path, profile(limits="{memory: 64m}"))
    trust(root / "sbox.yaml")
    target = "$HOME/fill" if where == "HOME" else f"{where}/fill"
    result = runs.run(root, "sh", "-c", f'{PY} -c \'{FILL}\' {128 << 20} "{target}"')
    assert result.stdout.startswith("FULL"), result.stdout + result.stderr


def test_scratch_control_the_same_write_fits_without_a_limit(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    trust(root / "sbox.yaml")
    result = runs.run(root, "sh", "-c", f'{PY} -c \'{FILL}\' {128 << 20} /tmp/fill')
    assert result.stdout.startswith("WROTE"), result.stdout + result.stderr


def test_default_scratch_is_below_half_the_ram(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    trust(root / "sbox.yaml")
    result = runs.run(root, "sh", "-c", 'df -k /tmp /var/tmp "$HOME" /dev/shm')
    half = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 // 1024
    sizes = [int(line.split()[1]) for line in result.stdout.splitlines()[1:]]
    assert len(sizes) == 4, result.stdout + result.stderr
    assert all(0 < size <= half // 2 for size in sizes), (sizes, half)  # the kernel's default is half
