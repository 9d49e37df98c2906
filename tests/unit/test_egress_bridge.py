"""The bridge as it runs in a sandbox: a separate `python -I -S bridge.py` process, real sockets."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import sbox_shim.egress
from sbox_shim.egress.policy import EgressPolicy
from sbox_shim.egress.proxy import EgressProxy

from .test_egress_relay import old_python

BRIDGE = str(Path(sbox_shim.egress.__file__).parent / "bridge.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # one that an unprivileged uid can run
TIMEOUT = 30.0  # a safety net against hangs, never a measurement

# Runs as the bridge's child: talks through the forwarded port and through the proxy port.
CHILD = """
import socket, sys

def read_all(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk

def head(sock):
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        data += sock.recv(1)
    return data

forwarded = socket.create_connection(("127.0.0.1", {forward}), timeout=10)
forwarded.sendall(b"via-forward")
forwarded.shutdown(socket.SHUT_WR)
print("forward:", read_all(forwarded).decode())

for target in ("registry.test:{upstream}", "evil.test:443"):
    proxied = socket.create_connection(("127.0.0.1", {listen}), timeout=10)
    proxied.sendall(f"CONNECT {{target}} HTTP/1.1\\r\\nHost: {{target}}\\r\\n\\r\\n".encode())
    print("status:", head(proxied).split(b"\\r\\n")[0].decode())
    proxied.sendall(b"via-proxy")
    proxied.shutdown(socket.SHUT_WR)
    print("proxy:", read_all(proxied).decode(errors="replace").splitlines()[-1:])
sys.exit(7)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Echo:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                    conn.sendall(chunk)
                self.received.append(data)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.sock.close()


@pytest.fixture
def proxy(tmp_path: Path, echo: Echo) -> Iterator[EgressProxy]:
    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)},
        ports={"registry.test": (echo.port,)},
        explicit=frozenset(("registry.test",)),
    )
    with EgressProxy(policy, str(tmp_path / "egress.sock")) as proxy:
        yield proxy


def bridge(
        proxy: EgressProxy, *args: str, listen: int = 0, **popen: object,
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-I", "-S", BRIDGE, "--socket", proxy.socket_path]
    argv += ["--listen", f"127.0.0.1:{listen or free_port()}", *args]
    return subprocess.Popen(argv, text=True, **popen)  # type: ignore[call-overload, no-any-return]


def python(code: str) -> list[str]:
    return ["--", sys.executable, "-c", textwrap.dedent(code)]


def test_bytes_flow_through_forward_and_proxy(proxy: EgressProxy, echo: Echo) -> None:
    listen, forward = free_port(), free_port()
    code = CHILD.format(listen=listen, forward=forward, upstream=echo.port)
    process = bridge(
        proxy, "--forward", f"127.0.0.1:{forward}=registry.test:{echo.port}", *python(code),
        listen=listen, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 7, err
    assert out.splitlines() == [
        "forward: via-forward",
        "status: HTTP/1.1 200 Connection established",
        "proxy: ['via-proxy']",
        "status: HTTP/1.1 403 Forbidden",
        "proxy: ['sbox: egress to evil.test:443 refused (not-allowlisted); "
        "add \"evil.test\" to network_allow']",
    ]
    assert sorted(echo.received) == [b"via-forward", b"via-proxy"]
    assert [d["host"] for d in proxy.denials] == ["evil.test"]


def test_forward_to_a_refused_target_just_closes(proxy: EgressProxy) -> None:
    forward = free_port()
    code = f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {forward}), timeout=10)
        print(repr(s.recv(100)))
    """
    process = bridge(
        proxy, "--forward", f"127.0.0.1:{forward}=evil.test:443", *python(code),
        stdout=subprocess.PIPE,
    )
    out, _ = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, out) == (0, "b''\n")
    assert [d["reason"] for d in proxy.denials] == ["not-allowlisted"]


@pytest.mark.parametrize("signum", (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT))
def test_signals_are_relayed(proxy: EgressProxy, signum: signal.Signals) -> None:
    code = """
        import signal, sys, time
        def stop(signum, frame):
            print("child got", signal.Signals(signum).name, flush=True)
            sys.exit(3)
        for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"):
            signal.signal(getattr(signal, name), stop)
        print("ready", flush=True)
        time.sleep(60)
    """
    process = bridge(proxy, *python(code), stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signum)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, out) == (3, f"child got {signum.name}\n")


def test_child_starts_with_no_blocked_or_ignored_signals(proxy: EgressProxy) -> None:
    process = bridge(
        proxy, "--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", stdout=subprocess.PIPE,
    )
    out, _ = process.communicate(timeout=TIMEOUT)
    blocked, ignored = (int(line.split()[1], 16) for line in out.splitlines())
    # Signals 32 and 33 are glibc's own, which posix_spawn always leaves ignored.
    assert (blocked, ignored & 0x7FFFFFFF) == (0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON}")
def test_works_as_an_unprivileged_uid(echo: Echo) -> None:
    directory = tempfile.mkdtemp(prefix="sbox-egress-")
    os.chmod(directory, 0o755)
    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)}, ports={"registry.test": (echo.port,)},
        explicit=frozenset(("registry.test",)),
    )
    forward = free_port()
    code = f"""
        import os, socket
        s = socket.create_connection(("127.0.0.1", {forward}), timeout=10)
        s.sendall(b"as " + str(os.getuid()).encode())
        s.shutdown(socket.SHUT_WR)
        print(s.recv(100).decode())
    """
    try:
        with EgressProxy(policy, os.path.join(directory, "egress.sock")) as proxy:
            argv = [SYSTEM_PYTHON, "-I", "-S", BRIDGE, "--socket", proxy.socket_path]
            argv += ["--forward", f"127.0.0.1:{forward}=registry.test:{echo.port}"]
            argv += ["--", SYSTEM_PYTHON, "-c", textwrap.dedent(code)]
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, text=True, user=65534, group=65534,
                extra_groups=[], cwd="/",
            )
            out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        shutil.rmtree(directory)
    assert (process.returncode, out) == (0, "as 65534\n")


def test_death_by_signal_is_128_plus_n(proxy: EgressProxy) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    process = bridge(proxy, *python(code))
    assert process.wait(timeout=TIMEOUT) == 128 + signal.SIGKILL


def test_child_sees_stdin_and_environment(proxy: EgressProxy) -> None:
    code = "import os, sys; print(sys.stdin.read().upper(), os.environ['SBOX_TEST_VAR'])"
    process = bridge(
        proxy, *python(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={"SBOX_TEST_VAR": "kept", "PATH": "/usr/bin:/bin"},
    )
    out, _ = process.communicate("hello", timeout=TIMEOUT)
    assert (process.returncode, out) == (0, "HELLO kept\n")


def test_missing_command(proxy: EgressProxy) -> None:
    process = bridge(proxy, "--", "sbox-no-such-command", stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 127
    assert err == "sbox: bridge: sbox-no-such-command: command not found\n"


def test_port_in_use_is_125_and_runs_nothing(proxy: EgressProxy, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        process = bridge(
            proxy, *python(f"open({str(marker)!r}, 'w')"), listen=port, stderr=subprocess.PIPE,
        )
        _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 125
    assert err.startswith(f"sbox: bridge: cannot listen on 127.0.0.1:{port}: ")
    assert len(err.splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "args",
    (
        ["--socket", "/nonexistent/egress.sock", "--", "true"],
        ["--socket", "{socket}", "--forward", "nonsense", "--", "true"],
        ["--socket", "{socket}", "--listen", "127.0.0.1:0x50", "--", "true"],
        ["--socket", "{socket}", "--bogus", "--", "true"],
        ["--socket", "{socket}", "--"],
        ["--socket", "{socket}", "true"],
    ),
)
def test_bad_invocations_are_125(proxy: EgressProxy, args: list[str]) -> None:
    argv = [sys.executable, "-I", "-S", BRIDGE] + [a.format(socket=proxy.socket_path) for a in args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 125
    assert result.stderr.startswith("sbox: bridge: ") and len(result.stderr.splitlines()) == 1


def pythons() -> list[str]:
    """This interpreter (splice), and a Python 3.9 if there is one (no os.splice: the copy)."""
    old = old_python()
    return [sys.executable] + ([old] if old else [])


@pytest.mark.parametrize("interpreter", pythons(), ids=lambda path: os.path.basename(path))
def test_a_large_transfer_through_bridge_and_proxy_is_intact(
        proxy: EgressProxy, echo: Echo, interpreter: str) -> None:
    """Upload 24 MiB through --forward while reading the echo back: both directions, in full."""
    forward = free_port()
    argv = [interpreter, "-I", "-S", BRIDGE, "--socket", proxy.socket_path,
            "--forward", f"127.0.0.1:{forward}=registry.test:{echo.port}", "--", "sleep", "60"]
    process = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", forward), timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
        payload = os.urandom(24 * 1024 * 1024)

        def upload() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        uploader = threading.Thread(target=upload)
        uploader.start()
        sha, size = hashlib.sha256(), 0
        with sock:
            while chunk := sock.recv(1024 * 1024):
                sha.update(chunk)
                size += len(chunk)
        uploader.join(TIMEOUT)
        assert (size, sha.hexdigest()) == (len(payload), hashlib.sha256(payload).hexdigest())
    finally:
        process.terminate()
        process.wait(TIMEOUT)
