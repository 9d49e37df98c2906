"""The kernel surface: what sbox's seccomp filter and /proc masks refuse a package's script.

Each probe (tests/support/kernel_probe.py) runs for real inside `sbox run` on both backends, and
the same probe runs on the host as the live control: the call reaches the kernel there (OK, or an
errno other than EPERM that shows the kernel looked at it), and inside it is refused with EPERM.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from support.trust import trust

from .helpers import PY, Runs, marker, project

PROBE = Path(__file__).resolve().parents[1] / "support" / "kernel_probe.py"
REFUSED = "EPERM"


def setup_project(tmp_path: Path) -> Path:
    root = project(tmp_path)
    trust(root / "sbox.yaml")
    shutil.copy(PROBE, root / "probe.py")
    return root


def inside(runs: Runs, root: Path, *args: str) -> dict[str, str]:
    result = runs.run(root, PY, "probe.py", *args)
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def outside(*args: str) -> dict[str, str]:
    """The live control: the same probe, on the host."""
    result = subprocess.run([PY, str(PROBE), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def lines(stdout: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in stdout.splitlines() if " " in line}


# ---------------------------------------------------------------- the kernel keyring


class Key:
    """A `user` key in the caller's user keyring, readable by its owner: what a build's script
    could read by serial number if the keyring were reachable."""

    def __init__(self, payload: bytes) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.description = "sbox-test-" + payload.decode()
        serial = self.libc.syscall(ctypes.c_long(248), b"user", self.description.encode(), payload,
                                   ctypes.c_long(len(payload)), ctypes.c_long(-4))  # add_key, KEY_SPEC_USER_KEYRING
        if serial < 0:
            pytest.fail(f"add_key on the host failed: {os.strerror(ctypes.get_errno())}")
        self.serial = int(serial)
        self.keyctl(5, self.serial, 0x3F030000)  # SETPERM: possessor all, user view+read

    def keyctl(self, *args: int) -> int:
        return int(self.libc.syscall(ctypes.c_long(250), *(ctypes.c_long(a) for a in args)))

    def close(self) -> None:
        self.keyctl(3, self.serial)  # REVOKE
        self.keyctl(9, self.serial, -4)  # UNLINK from the user keyring


@pytest.fixture
def key() -> Iterator[Key]:
    if os.uname().machine != "x86_64":
        pytest.skip("the key fixture uses x86_64 syscall numbers")
    k = Key(marker().encode())
    try:
        yield k
    finally:
        k.close()


def test_a_host_key_cannot_be_read_by_serial_or_listed(runs: Runs, tmp_path: Path, key: Key) -> None:
    root = setup_project(tmp_path)
    control = outside("keyring", str(key.serial))
    assert control["keyring"] == f"OK {key.description[len('sbox-test-'):]}", control  # live: readable on the host
    with open("/proc/keys", encoding="ascii") as f:
        assert key.description in f.read()  # and listed there
    seen = inside(runs, root, "keyring", str(key.serial))
    assert seen["keyring"] == REFUSED, seen
    listing = runs.run(root, "sh", "-c", "cat /proc/keys /proc/key-users 2>&1; echo done")
    assert "done" in listing.stdout and key.description not in listing.stdout, listing.stdout


def test_request_key_is_refused(runs: Runs, tmp_path: Path) -> None:
    root = setup_project(tmp_path)
    assert outside("request_key")["request_key"] not in ("OK", REFUSED)  # ENOKEY: the kernel looked
    assert inside(runs, root, "request_key")["request_key"] == REFUSED


# ---------------------------------------------------------------- other processes, the kernel's own tools


def test_ptrace_of_the_sandboxes_pid_1_is_refused(runs: Runs, tmp_path: Path) -> None:
    root = setup_project(tmp_path)
    assert outside("ptrace", "child")["ptrace"] == "OK"  # live: a process may trace its child
    assert inside(runs, root, "ptrace", "1")["ptrace"] == REFUSED
    assert inside(runs, root, "ptrace", "child")["ptrace"] == REFUSED


@pytest.mark.parametrize("call", ["perf_event_open", "userfaultfd", "bpf", "mount", "setns", "unshare"])
def test_kernel_interfaces_are_refused(runs: Runs, tmp_path: Path, call: str) -> None:
    root = setup_project(tmp_path)
    assert outside(call)[call] != REFUSED  # live: the call reaches the kernel on the host
    assert inside(runs, root, call)[call] == REFUSED


def test_the_sandbox_runs_under_a_seccomp_filter(runs: Runs, tmp_path: Path) -> None:
    root = setup_project(tmp_path)
    assert inside(runs, root, "seccomp")["seccomp"] == "2"  # SECCOMP_MODE_FILTER


# ---------------------------------------------------------------- setuid and setgid files


def setid_files(root: Path) -> list[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.lstat(path).st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(path)
    return found


@pytest.mark.parametrize("mode", ["4755", "2755", "6755"])
def test_chmod_to_setuid_or_setgid_is_refused(runs: Runs, tmp_path: Path, mode: str) -> None:
    root = setup_project(tmp_path)
    control = tmp_path / "control"
    control.mkdir()
    (control / "tool").write_text("#!/bin/sh\n")
    assert outside("chmod", mode, str(control / "tool"))["chmod"].startswith("OK")  # live
    assert (control / "tool").stat().st_mode & 0o7777 == int(mode, 8)
    (root / "tool").write_text("#!/bin/sh\n")
    seen = inside(runs, root, "chmod", mode, str(root / "tool"))
    assert seen["chmod"] == f"{REFUSED} fchmodat2={REFUSED}", seen
    assert setid_files(root) == []


def test_a_plain_chmod_still_works(runs: Runs, tmp_path: Path) -> None:
    root = setup_project(tmp_path)
    (root / "tool").write_text("#!/bin/sh\n")
    (root / "tool").chmod(0o600)
    seen = inside(runs, root, "chmod", "755", str(root / "tool"))
    assert seen["chmod"].startswith("OK"), seen
    assert (root / "tool").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("how", ["create", "mknod"])
def test_creating_a_setuid_file_is_refused(runs: Runs, tmp_path: Path, how: str) -> None:
    root = setup_project(tmp_path)
    assert outside(how, str(tmp_path / "control"))[how] == "OK"  # live
    assert (tmp_path / "control").stat().st_mode & stat.S_ISUID
    assert inside(runs, root, how, str(root / "planted"))[how] == REFUSED
    assert setid_files(root) == []
