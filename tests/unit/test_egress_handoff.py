"""Connections handed to the proxy whole (SCM_RIGHTS), as the bridge does; and hostile handoffs."""
from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sbox_shim.egress.bridge import HANDOFF_PROXY
from sbox_shim.egress.bridge import TAKEN

from .test_egress_bridge import BRIDGE
from .test_egress_proxy import cdn_proxy
from .test_egress_proxy import client_hello
from .test_egress_proxy import env  # noqa: F401 (a fixture)
from .test_egress_proxy import Env
from .test_egress_proxy import read_all
from .test_egress_proxy import read_head
from .test_egress_proxy import TIMEOUT
from .test_egress_proxy import unix_client
from .test_egress_proxy import upstream  # noqa: F401 (a fixture)
from .test_egress_proxy import Upstream
from .test_egress_proxy import web  # noqa: F401 (a fixture)
from .test_egress_proxy import free_port


def forward(target: str) -> bytes:
    return f"SBOX-FD FORWARD {target}\r\n\r\n".encode()


def send(path: str, header: bytes, *fds: int) -> socket.socket:
    """A unix connection to the proxy that sent `header` with `fds` in one message."""
    sock = unix_client(path)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([header], ancillary)
    return sock


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): a connected loopback TCP pair; `theirs` is the one to hand off."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        theirs, _ = listener.accept()
    return ours, theirs


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_fds_back_to(count: int) -> None:
    """The proxy (in this process) closes what it holds once its tasks wind down."""
    deadline = time.monotonic() + TIMEOUT
    while open_fds() != count:
        assert time.monotonic() < deadline, f"{open_fds()} descriptors open, not {count}"
        time.sleep(0.01)


def hand_off(env: Env, header: bytes) -> socket.socket:
    """Hand a fresh TCP connection to the proxy as the bridge would; our end of it."""
    ours, theirs = tcp_pair()
    with send(env.socket_path, header, theirs.fileno()) as conn:
        assert read_all(conn) == TAKEN
    theirs.close()  # the proxy holds its own copy
    return ours


def test_a_proxy_port_connection_is_served_directly(env: Env) -> None:
    sock = hand_off(env, HANDOFF_PROXY)
    target = f"registry.test:{env.upstream.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    assert read_head(sock) == b"HTTP/1.1 200 Connection established\r\n\r\n"
    sock.sendall(b"ping")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"ping"
    assert env.upstream.wait_finished() == b"ping"


def test_a_proxy_port_refusal_is_403(env: Env) -> None:
    sock = hand_off(env, HANDOFF_PROXY)
    sock.sendall(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    assert read_head(sock).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    sock.sendall(b"more")  # late bytes: the answer must still arrive whole
    sock.shutdown(socket.SHUT_WR)
    assert b"refused (not-allowlisted)" in read_all(sock)
    assert [d["host"] for d in env.proxy.denials] == ["evil.test"]


def test_a_forward_is_a_tunnel_without_an_answer_line(env: Env) -> None:
    sock = hand_off(env, forward(f"registry.test:{env.upstream.port}"))
    sock.sendall(b"raw bytes")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"raw bytes"
    assert env.upstream.wait_finished() == b"raw bytes"
    assert env.proxy.denials == []


@pytest.mark.parametrize("target", ("evil.test:443", "registry.test:1", "127.0.0.1:22"))
def test_a_refused_forward_just_closes(env: Env, target: str) -> None:
    sock = hand_off(env, forward(target))
    assert read_all(sock) == b""
    assert [d["kind"] for d in env.proxy.denials] == ["connect"]


def test_a_forward_with_tls_for_another_name_never_reaches_upstream(env: Env) -> None:
    sock = hand_off(env, forward(f"registry.test:{env.upstream.port}"))
    sock.sendall(client_hello("evil.test"))
    assert read_all(sock) == b""
    assert env.upstream.wait_finished() == b""  # a connection, and not one byte
    [denial] = env.proxy.denials
    assert (denial["reason"], denial["sni"]) == ("sni-mismatch", "evil.test")


def test_a_forged_forward_to_a_name_the_bridge_does_not_forward_carries_no_plain_http(
        tmp_path: Path, upstream: Upstream) -> None:
    """The sandbox can hand off a socket with any forward header: what decides whether plain
    bytes may pass is the policy's forwards, never the header."""
    with cdn_proxy(tmp_path, upstream.port) as proxy:
        ours, theirs = tcp_pair()
        with send(proxy.socket_path, forward(f"cdn.test:{upstream.port}"), theirs.fileno()) as conn:
            assert read_all(conn) == TAKEN
        theirs.close()
        with ours:
            ours.sendall(b"GET / HTTP/1.1\r\nHost: other-tenant.test\r\n\r\n")
            assert read_all(ours) == b""
        assert upstream.wait_finished() == b""
        assert [d["reason"] for d in proxy.denials] == ["plain-http"]


def test_a_proxy_port_tunnel_with_tls_for_another_name_never_reaches_upstream(env: Env) -> None:
    sock = hand_off(env, HANDOFF_PROXY)
    target = f"registry.test:{env.upstream.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode() + client_hello("evil.test"))
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    assert read_all(sock) == b""
    assert env.upstream.wait_finished() == b""
    assert [d["reason"] for d in env.proxy.denials] == ["sni-mismatch"]


def refused(env: Env, header: bytes, *fds: int) -> None:
    """The proxy closes the unix connection without taking anything, and records nothing."""
    with send(env.socket_path, header, *fds) as conn:
        assert read_all(conn) == b""
    assert env.proxy.denials == []


@pytest.mark.parametrize("header", (HANDOFF_PROXY, forward("registry.test:443")))
def test_a_pipe_is_neither_read_nor_written(env: Env, header: bytes) -> None:
    before = open_fds()
    read_end, write_end = os.pipe()
    os.write(write_end, b"GET http://registry.test/ HTTP/1.1\r\n\r\n")
    refused(env, header, read_end)
    refused(env, header, write_end)
    os.close(write_end)
    assert os.read(read_end, 1024) == b"GET http://registry.test/ HTTP/1.1\r\n\r\n"
    assert os.read(read_end, 1024) == b""  # nothing was written, and no copy is left open
    os.close(read_end)
    assert_fds_back_to(before)


def test_a_regular_file_is_neither_read_nor_written(env: Env) -> None:
    with tempfile.TemporaryFile() as file:
        file.write(b"CONNECT registry.test:443 HTTP/1.1\r\n\r\n")
        file.flush()
        file.seek(0)
        refused(env, HANDOFF_PROXY, file.fileno())
        assert file.tell() == 0  # the shared offset did not move: nothing read
        assert file.read() == b"CONNECT registry.test:443 HTTP/1.1\r\n\r\n"


def test_sockets_other_than_a_connected_tcp_one_are_refused(env: Env) -> None:
    left, right = socket.socketpair()
    right.sendall(b"CONNECT registry.test:443 HTTP/1.1\r\n\r\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    with left, right, listener, udp, unconnected:
        for sock in (left, listener, udp, unconnected):
            refused(env, HANDOFF_PROXY, sock.fileno())
        left.setblocking(False)
        assert left.recv(1024) == b"CONNECT registry.test:443 HTTP/1.1\r\n\r\n"  # unread
        right.setblocking(False)
        with pytest.raises(BlockingIOError):
            right.recv(1024)  # nothing written


@pytest.mark.parametrize("header", (
    b"SBOX-FD PROXY\r\n\r\nCONNECT registry.test:443 HTTP/1.1\r\n\r\n",  # bytes after the header
    b"SBOX-FD PROXY\r\n",
    b"SBOX-FD FORWARD registry.test\r\n\r\n",
    b"SBOX-FD FORWARD registry.test:443 x\r\n\r\n",
    b"SBOX-FD FORWARD r\xc3\xa9gistry.test:443\r\n\r\n",
    forward("registry.test:" + "4" * 600),
    b"CONNECT registry.test:443 HTTP/1.1\r\n\r\n",  # a request with a descriptor
))
def test_a_bad_header_refuses_even_a_tcp_socket(env: Env, header: bytes) -> None:
    ours, theirs = tcp_pair()
    with ours, theirs:
        refused(env, header, theirs.fileno())
        theirs.close()
        assert ours.recv(1024) == b""  # closed, nothing written


def test_two_descriptors_are_both_refused_and_closed(env: Env) -> None:
    before = open_fds()
    (ours1, theirs1), (ours2, theirs2) = tcp_pair(), tcp_pair()
    with ours1, ours2:
        refused(env, HANDOFF_PROXY, theirs1.fileno(), theirs2.fileno())
        theirs1.close()
        theirs2.close()
        assert ours1.recv(10) == ours2.recv(10) == b""  # nothing written, no copy kept
    assert_fds_back_to(before)


def test_a_handoff_header_without_its_descriptor_is_closed_quietly(env: Env) -> None:
    refused(env, HANDOFF_PROXY)  # the bridge falls back to piping bytes


def test_descriptors_after_the_first_message_are_discarded(env: Env) -> None:
    before = open_fds()
    read_end, write_end = os.pipe()
    sock = unix_client(env.socket_path)
    target = f"registry.test:{env.upstream.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\n".encode())
    time.sleep(0.05)  # a message of its own
    sock.sendmsg([b"\r\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_end]))])
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"x")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"x"
    sock.close()
    os.close(write_end)
    assert os.read(read_end, 10) == b""  # the proxy kept no copy of it
    os.close(read_end)
    assert_fds_back_to(before)


def test_a_shared_socket_made_blocking_cannot_stall_the_proxy(env: Env) -> None:
    """The sandbox keeps its copy, clears O_NONBLOCK on it (the flag is shared) and steals what
    arrives on it: woken for bytes that are gone, the proxy must not block in recv(), but go on
    serving others."""
    ours, theirs = tcp_pair()
    with ours, theirs:
        with send(env.socket_path, HANDOFF_PROXY, theirs.fileno()) as conn:
            assert read_all(conn) == TAKEN
        theirs.setblocking(True)
        try:
            for _ in range(50):
                ours.sendall(b"G")
                theirs.setblocking(False)
                try:
                    theirs.recv(1)  # stolen from under the proxy, mostly
                except BlockingIOError:
                    pass
                theirs.setblocking(True)
                time.sleep(0.002)
            env.assert_nothing_reached_upstream()  # another client is served meanwhile
        finally:
            ours.sendall(b"\r\n\r\n")  # unstick a proxy that did block, so that it can stop


# The bridge, for real.

def test_the_bridge_holds_no_handed_off_connection(env: Env) -> None:
    """While a tunnel through a --forward port is open, the bridge holds only its listeners."""
    port = free_port()
    argv = [sys.executable, "-I", "-S", BRIDGE, "--socket", env.socket_path,
            "--forward", f"127.0.0.1:{port}=registry.test:{env.upstream.port}", "--", "sleep", "60"]
    process = subprocess.Popen(argv)
    try:
        sock = connect_when_up(port, process)
        with sock:
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"  # through the proxy: the tunnel is open
            # The proxy answered TAKEN and closed before it relayed; the bridge, once scheduled,
            # drops both its copies: then only the listener is left (a loaded machine may take a while).
            deadline = time.monotonic() + TIMEOUT
            while True:
                sockets = [os.readlink(f"/proc/{process.pid}/fd/{fd}")
                           for fd in os.listdir(f"/proc/{process.pid}/fd")]
                held = sum(link.startswith("socket:") for link in sockets)
                if held == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert held == 1  # the listener, while the tunnel stays open
            sock.sendall(b"again")
            assert sock.recv(5) == b"again"
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def connect_when_up(port: int, process: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)


class Stripper:
    """A unix socket in front of the proxy that passes bytes and drops descriptors (as some
    socket forwarders do): the bridge must fall back to piping bytes."""

    def __init__(self, path: str, proxy_path: str) -> None:
        self.path, self.proxy_path = path, proxy_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            upstream = unix_client(self.proxy_path)
            upstream.settimeout(None)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):  # a plain recv: the kernel drops the descriptors
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_the_bridge_falls_back_to_bytes_when_descriptors_are_dropped(
        env: Env, tmp_path: Path) -> None:
    stripper = Stripper(str(tmp_path / "stripper.sock"), env.socket_path)
    listen, port = free_port(), free_port()
    code = f"""
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=10)
s.sendall(b"forwarded")
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
s = socket.create_connection(("127.0.0.1", {listen}), timeout=10)
s.sendall(b"CONNECT evil.test:443 HTTP/1.1\\r\\n\\r\\n")
print(s.recv(100).decode().splitlines()[0])
"""
    argv = [sys.executable, "-I", "-S", BRIDGE, "--socket", stripper.path,
            "--listen", f"127.0.0.1:{listen}",
            "--forward", f"127.0.0.1:{port}=registry.test:{env.upstream.port}",
            "--", sys.executable, "-c", code]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT * 3)
    finally:
        stripper.sock.close()
    assert (result.returncode, result.stdout) == (0, "forwarded\nHTTP/1.1 403 Forbidden\n")
    assert [d["host"] for d in env.proxy.denials] == ["evil.test"]
