"""The egress proxy listening in the sandbox's own network namespace (bwrap, as root): no bridge
inside, the same refusals, and the warm path for allowlisted steps. Listeners this test owns."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from support.listener import CanaryListener

from sbox_shim import compiled
from sbox_shim.backends import bwraprun
from sbox_shim.egress import netns

from conftest import require_backend
from .helpers import PY, Runs, profile, project
from .test_network import CONNECT, VIA_PROXY, _verdicts

# Inside the sandbox: every process's command line, and whether sbox's run directory is there.
PROCESSES = r"""
import glob, json, os
lines = []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    if path == "/proc/%d/cmdline" % os.getpid():
        continue
    try:
        lines.append(open(path, "rb").read().replace(b"\0", b" ").decode())
    except OSError:
        pass
print(json.dumps({"processes": lines, "run_dir": os.path.exists("/.sbox/run"),
                  "bridge": os.path.exists("/.sbox/bridge.py")}))
"""


@pytest.fixture
def bwrap_runs(sbox_bin: str) -> Iterator[Runs]:
    require_backend("bwrap")
    if not netns.usable():
        pytest.skip("sbox listens in the sandbox's namespace as root only (else the bridge runs)")
    yield Runs(sbox_bin, "bwrap")


def _config(allowed: CanaryListener) -> str:
    config = profile(network="on", network_allow=[f"registry.sbox.test:{allowed.port}"])
    return config + "hosts:\n  registry.sbox.test: [127.0.0.1]\n  evil.sbox.test: [127.0.0.1]\n"


def test_an_allowlisted_step_runs_no_bridge_and_sees_no_egress_socket(bwrap_runs: Runs, tmp_path: Path) -> None:
    with CanaryListener() as allowed:
        root = project(tmp_path, _config(allowed))
        seen = _verdicts(bwrap_runs.run(root, PY, "-c", PROCESSES))
        assert not any("/.sbox/bridge.py --socket" in line for line in seen["processes"]), seen
        assert seen["run_dir"] is False and seen["bridge"] is False, seen
        # and the proxy port and the registry's forwarded port still work, through the proxy
        target = f"registry.sbox.test:{allowed.port}"
        proxied = _verdicts(bwrap_runs.run(root, PY, "-c", VIA_PROXY, target))
        assert " 200 " in str(proxied[target]) + " ", proxied
        assert allowed.wait_for(1, b"canary-via-proxy")
        direct = _verdicts(bwrap_runs.run(root, PY, "-c", CONNECT, f"127.0.0.1:{allowed.port}"))
        assert direct[f"127.0.0.1:{allowed.port}"] == "connected"
        assert allowed.wait_for(2, b"canary-from-sandbox")


def test_a_repeated_allowlisted_step_is_warm_and_still_refuses(bwrap_runs: Runs, tmp_path: Path) -> None:
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = project(tmp_path, _config(allowed))
        records = compiled.directory(dict(os.environ))
        argv = (PY, "-c", VIA_PROXY, f"evil.sbox.test:{evil.port}", f"registry.sbox.test:{evil.port}",
                f"registry.sbox.test:{allowed.port}")
        for attempt in range(2):  # the cold run stores the record, the second runs from it
            result = bwrap_runs.run(root, *argv)
            verdicts = _verdicts(result)
            assert " 200 " in str(verdicts[f"registry.sbox.test:{allowed.port}"]) + " ", verdicts
            assert " 403 " in str(verdicts[f"evil.sbox.test:{evil.port}"]) + " ", verdicts
            assert " 403 " in str(verdicts[f"registry.sbox.test:{evil.port}"]) + " ", verdicts
            assert "blocked 2 connection attempt(s)" in result.stderr, result.stderr
            assert len(glob.glob(os.path.join(records, "*.plan"))) == 1, "the allowlisted step was not cached"
        logs = glob.glob(os.path.join(os.environ["SBOX_STATE_DIR"], "denials", "*.json"))
        assert len(logs) == 2 or json.loads(Path(logs[-1]).read_text())["denials"], logs
        assert allowed.wait_for(2, b"canary-via-proxy")
        assert evil.hits == 0


def test_listeners_are_made_in_the_sandbox_not_on_the_host(tmp_path: Path) -> None:
    """A listener made for the sandbox takes its port on the sandbox's loopback: a listener of
    the test's own on the host's loopback, on the same port, hears nothing of the sandbox."""
    require_backend("bwrap")
    if not netns.usable():
        pytest.skip("entering a sandbox's network namespace needs CAP_SYS_ADMIN (root)")
    with CanaryListener() as host_side:
        script = ("import socket; s = socket.create_connection(('127.0.0.1', %d), timeout=5); "
                  "s.sendall(b'from-sandbox'); s.shutdown(socket.SHUT_WR); print(s.recv(64).decode())"
                  % host_side.port)
        block_r, block_w = os.pipe()
        proc = subprocess.Popen(["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
                                 "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                                 "--block-fd", str(block_r), "--", PY, "-c", script],
                                pass_fds=(block_r,), stdout=subprocess.PIPE, text=True)
        os.close(block_r)
        try:
            pid = _child(proc.pid)
            with pytest.raises(OSError):  # the namespace of sbox itself: refused, nothing made
                netns.listen_in(os.getpid(), [("127.0.0.1", 0)])
            [listener] = netns.listen_in(pid, [("127.0.0.1", host_side.port)])
            os.write(block_w, b"x")
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn, listener:
                conn.settimeout(10)
                assert conn.recv(64) == b"from-sandbox"
                conn.sendall(b"answered-in-sandbox")
            out, _ = proc.communicate(timeout=30)
        finally:
            os.close(block_w)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert out.strip() == "answered-in-sandbox"
        assert host_side.hits == 0


SETNS = ("import errno, os, sys; sys.path.insert(0, sys.argv[1]); from sbox_shim.egress import netns; netns.prepare()\n"
         "try:\n    netns._setns(os.open('/dev/null', os.O_RDONLY), netns.CLONE_NEWNET)\n"
         "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
         "print('ctypes' in sys.modules)")


def test_libc_setns_is_called_without_loading_the_ctypes_package() -> None:
    """Before Python 3.12, setns(2) is libc's, reached through _ctypes alone (the ctypes package
    costs milliseconds before every allowlisted step); its errno still reaches the caller: /dev/null
    is no namespace (EINVAL)."""
    root = str(Path(netns.__file__).parents[2])
    out = subprocess.run([sys.executable, "-I", "-S", "-c", SETNS, root], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EINVAL", "False"]


def test_a_failing_ready_hook_kills_the_sandbox_before_the_command(tmp_path: Path) -> None:
    require_backend("bwrap")
    ran = tmp_path / "ran"
    # a root as sbox makes it (a tmpfs, read-only once set up: mountcheck waits for that)
    options = ["--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/usr", "/usr",
               "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
               "--proc", "/proc", "--dev", "/dev", "--bind", str(tmp_path), str(tmp_path), "--remount-ro", "/"]
    seen: list[int] = []

    def refuse(pid: int) -> str:
        seen.append(pid)
        return "no listeners"

    warned: list[str] = []
    code, status = bwraprun.run("/usr/bin/bwrap", options, ["/usr/bin/touch", str(ran)], ready=refuse,
                                warn=warned.append)
    assert code == 125 and status is None
    assert seen and "no listeners" in "".join(warned)
    assert not ran.exists()
    code, _ = bwraprun.run("/usr/bin/bwrap", options, ["/usr/bin/touch", str(ran)], ready=lambda pid: "")
    assert code == 0 and ran.exists()  # the same sandbox, made ready: the command runs


def _child(pid: int) -> int:
    """bwrap's pid 1: the child of the bwrap process we started."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("bwrap started no sandbox")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
