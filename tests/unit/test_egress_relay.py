"""The tunnel data path: splice (or the user-space fallback) between real sockets, both ways."""
from __future__ import annotations

import errno
import glob
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable
from typing import Iterator
from typing import Optional

import pytest

import sbox_shim
from sbox_shim.egress import bridge
from sbox_shim.egress.relay import relay

TIMEOUT = 30.0  # a safety net against hangs, never a measurement
MIB = 1024 * 1024


@pytest.fixture(params=["splice", "copy", "splice-refused"])
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with splice, with the user-space copy forced (as on Python 3.9), and with
    a kernel that refuses to splice these sockets (EINVAL: the copy takes over)."""
    calls: list[int] = []
    real_splice = getattr(os, "splice", None)
    if request.param != "copy" and real_splice is None:
        pytest.skip("no os.splice here (Python < 3.10)")
    if request.param == "copy":
        monkeypatch.setattr(bridge, "SPLICE", False)
    elif request.param == "splice-refused":
        def refuse(*args: int) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(os, "splice", refuse)
    else:
        def counted(*args: int) -> int:
            calls.append(1)
            return real_splice(*args)  # type: ignore[no-any-return, misc]
        monkeypatch.setattr(os, "splice", counted)
    yield request.param
    if request.param == "splice":
        assert calls, "the splice path was not taken"


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


class Tunnel:
    """client <-unix-> [relay] <-tcp-> server: the proxy's own shape (`tcp`: the client on TCP
    too, as a handed-off or listener connection is). The test holds both ends."""

    def __init__(self, first: Callable[[], Optional[bytes]] = lambda: b"",
                 tcp: bool = False) -> None:
        self.client, client_side = tcp_pair() if tcp else socket.socketpair()
        origin_side, self.server = tcp_pair()
        self.sides = (client_side, origin_side)
        for sock in (self.client, self.server):
            sock.settimeout(TIMEOUT)
        self.thread = threading.Thread(target=self._run, args=(first,), daemon=True)
        self.thread.start()

    def _run(self, first: Callable[[], Optional[bytes]]) -> None:
        try:
            relay(*self.sides, first)
        finally:
            for sock in self.sides:
                sock.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the relay did not end"

    def close(self) -> None:
        self.client.close()
        self.server.close()
        self.join()


@pytest.fixture
def tunnel_factory() -> Iterator[Callable[..., Tunnel]]:
    made: list[Tunnel] = []

    def make(first: Callable[[], Optional[bytes]] = lambda: b"", tcp: bool = False) -> Tunnel:
        made.append(Tunnel(first, tcp))
        return made[-1]

    yield make
    for tunnel in made:
        tunnel.close()


def send_random(sock: socket.socket, size: int, digest: list[str]) -> None:
    """Send `size` random bytes in uneven pieces, then EOF; their sha256 goes into `digest`."""
    sha = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = os.urandom(min(size - sent, 1 + sent % (3 * MIB)))
        sha.update(piece)
        sock.sendall(piece)
        sent += len(piece)
    sock.shutdown(socket.SHUT_WR)
    digest.append(sha.hexdigest())


def receive_all(sock: socket.socket, into: list[tuple[int, str]]) -> None:
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(256 * 1024)
    while n := sock.recv_into(buf):
        sha.update(memoryview(buf)[:n])
        size += n
    into.append((size, sha.hexdigest()))


def ended(sock: socket.socket) -> bool:
    """Read to the end: EOF, or a reset (a closed unix socket with unread data resets)."""
    try:
        while sock.recv(MIB):
            pass
    except ConnectionResetError:
        pass
    return True


def run_all(*jobs: tuple[Callable[..., None], tuple[object, ...]]) -> None:
    threads = [threading.Thread(target=job, args=args, daemon=True) for job, args in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_large_transfer_both_ways_arrives_intact(
        data_path: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    tunnel = tunnel_factory()
    up_sent: list[str] = []
    down_sent: list[str] = []
    up_got: list[tuple[int, str]] = []
    down_got: list[tuple[int, str]] = []
    run_all(
        (send_random, (tunnel.client, 48 * MIB, up_sent)),
        (send_random, (tunnel.server, 64 * MIB, down_sent)),
        (receive_all, (tunnel.server, up_got)),
        (receive_all, (tunnel.client, down_got)),
    )
    assert up_got == [(48 * MIB, up_sent[0])]
    assert down_got == [(64 * MIB, down_sent[0])]
    tunnel.join()


@pytest.mark.parametrize("big_pipe", ("granted", "refused", "all-in-use"))
def test_a_long_direction_grows_its_pipe_once(
        big_pipe: str, monkeypatch: pytest.MonkeyPatch,
        tunnel_factory: Callable[..., Tunnel]) -> None:
    """Past GROW bytes a direction asks for a big pipe, once, and carries on with what it got:
    the big one, or the default one if the kernel refuses (above fs.pipe-max-size) or BIG_PIPES
    are all in use; a big one is given back at the end. Both ends on TCP, as with the proxy's
    listener in the sandbox."""
    if not bridge.SPLICE:
        pytest.skip("no os.splice here (Python < 3.10)")
    big_pipes = threading.BoundedSemaphore(1)
    monkeypatch.setattr(bridge, "BIG_PIPES", big_pipes)
    if big_pipe == "refused":
        monkeypatch.setattr(bridge, "BIG_PIPE", 2**31 - 1)  # above any fs.pipe-max-size
    elif big_pipe == "all-in-use":
        big_pipes.acquire()
    grown: list[int] = []
    real_grow = bridge._grow

    def grow(pipe: int) -> int:
        grown.append(real_grow(pipe))
        return grown[-1]

    monkeypatch.setattr(bridge, "_grow", grow)
    tunnel = tunnel_factory(tcp=True)
    tunnel.client.shutdown(socket.SHUT_WR)
    sent: list[str] = []
    got: list[tuple[int, str]] = []
    run_all((send_random, (tunnel.server, 24 * MIB, sent)), (receive_all, (tunnel.client, got)))
    assert got == [(24 * MIB, sent[0])]
    tunnel.join()
    assert grown == ([bridge.BIG_PIPE] if big_pipe == "granted" else [bridge.MOVE])
    if big_pipe == "all-in-use":
        big_pipes.release()
    assert big_pipes.acquire(blocking=False)  # given back


def test_half_close_client_first(data_path: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    """The client's EOF reaches the server, and the answer it sends after that still flows."""
    tunnel = tunnel_factory()
    tunnel.client.sendall(b"request")
    tunnel.client.shutdown(socket.SHUT_WR)
    request = b""
    while chunk := tunnel.server.recv(65536):
        request += chunk
    assert request == b"request"
    answer = os.urandom(8 * MIB)

    def respond() -> None:
        tunnel.server.sendall(answer)
        tunnel.server.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=respond)
    sender.start()
    got: list[tuple[int, str]] = []
    receive_all(tunnel.client, got)
    sender.join(TIMEOUT)
    assert got == [(len(answer), hashlib.sha256(answer).hexdigest())]
    tunnel.join()  # both directions have ended: the relay is done


def test_half_close_server_first(data_path: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    """The server's EOF reaches the client, which may still upload."""
    tunnel = tunnel_factory()
    tunnel.server.sendall(b"banner")
    tunnel.server.shutdown(socket.SHUT_WR)
    assert tunnel.client.recv(100) == b"banner"
    assert tunnel.client.recv(100) == b""
    upload = os.urandom(4 * MIB)
    sender = threading.Thread(target=tunnel.client.sendall, args=(upload,))
    sender.start()
    received = bytearray()
    while len(received) < len(upload):
        chunk = tunnel.server.recv(MIB)
        assert chunk
        received += chunk
    sender.join(TIMEOUT)
    assert received == upload
    tunnel.client.shutdown(socket.SHUT_WR)
    assert tunnel.server.recv(1) == b""
    tunnel.join()


def test_early_bytes_go_first(data_path: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    """What `first()` returns (bytes the proxy already read) reaches the origin before the rest."""
    tunnel = tunnel_factory(lambda: b"already read;")
    tunnel.client.sendall(b"then spliced")
    tunnel.client.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := tunnel.server.recv(65536):
        data += chunk
    assert data == b"already read;then spliced"


def test_origin_bytes_flow_while_first_is_still_deciding(
        tunnel_factory: Callable[..., Tunnel]) -> None:
    release = threading.Event()
    tunnel = tunnel_factory(lambda: b"" if release.wait(TIMEOUT) else None)
    tunnel.server.sendall(b"origin speaks first")
    assert tunnel.client.recv(100) == b"origin speaks first"
    release.set()
    tunnel.client.sendall(b"x")
    assert tunnel.server.recv(1) == b"x"


@pytest.mark.parametrize("refusal", ("none", "oserror"))
def test_first_refuses_nothing_reaches_the_origin(
        refusal: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    def first() -> Optional[bytes]:
        if refusal == "oserror":
            raise ConnectionResetError
        return None

    tunnel = tunnel_factory(first)
    try:
        tunnel.client.sendall(b"must not pass")
    except BrokenPipeError:
        pass  # refused already
    assert tunnel.server.recv(100) == b""
    assert ended(tunnel.client)
    tunnel.join()


@pytest.mark.parametrize("leaver", ("client", "server"))
def test_one_side_failing_tears_both_down(
        data_path: str, leaver: str, tunnel_factory: Callable[..., Tunnel]) -> None:
    """One end goes away mid-transfer (the server with a reset); the relay ends both directions,
    and the other end sees its connection end instead of hanging."""
    tunnel = tunnel_factory()
    gone, other = (tunnel.client, tunnel.server) if leaver == "client" else (tunnel.server,
                                                                           tunnel.client)
    stop = threading.Event()

    def blast() -> None:  # the other end keeps sending towards the one that leaves
        payload = os.urandom(MIB)
        other.settimeout(1)  # a TCP peer that got a FIN may wait on a closed window for long
        try:
            while not stop.is_set():
                other.sendall(payload)
        except OSError:
            pass

    blaster = threading.Thread(target=blast, daemon=True)
    blaster.start()
    assert gone.recv(65536)
    if leaver == "server":  # an abortive close: RST, so the relay's I/O on that side fails
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()
    tunnel.join()  # both directions ended
    stop.set()
    blaster.join(TIMEOUT)
    assert not blaster.is_alive()
    other.settimeout(TIMEOUT)
    assert ended(other)  # it reads an end, EOF or a reset, rather than waiting


def test_abort_from_another_thread_ends_the_relay_and_its_threads() -> None:
    """The proxy's stop() aborts a tunnel: relay() returns once both threads have let go."""
    client, client_side = socket.socketpair()
    origin_side, server = tcp_pair()
    for sock in (client, server):
        sock.settimeout(TIMEOUT)
    relaying = threading.Thread(target=relay, args=(client_side, origin_side, lambda: b""))
    relaying.start()
    server.sendall(b"hi")
    assert client.recv(2) == b"hi"
    bridge.abort(client_side, origin_side)
    relaying.join(TIMEOUT)
    assert not relaying.is_alive()
    # The threads have let go: the sockets may be closed, and both ends saw the end.
    client_side.close()
    origin_side.close()
    assert client.recv(1) == b""
    assert server.recv(1) == b""


def test_spawn_reuses_idle_threads() -> None:
    """Starting a thread is the dearest part of a small request: idle ones take the next job."""
    idents: list[int] = []
    assert bridge.spawn(lambda: idents.append(threading.get_ident())).wait(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while bridge.IDLE.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # the worker files itself as idle just after the job's event is set
    before = {t.ident for t in threading.enumerate() if t.name == "sbox-relay"}
    assert bridge.spawn(lambda: idents.append(threading.get_ident())).wait(TIMEOUT)
    assert idents[0] in before and idents[1] in before


def old_python() -> str | None:
    """A Python 3.9 (no os.splice), to run the fallback for real, if this machine has one."""
    roots = {os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")} - {""}
    candidates = [shutil.which("python3.9") or ""]
    for root in sorted(roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.9*", "bin", "python3.9")))
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=TIMEOUT)
        except OSError:
            continue
        if probe.stdout == "(3, 9)\n":
            return candidate
    return None


def test_the_proxy_on_python_39_copies_through_user_space(tmp_path: Path) -> None:
    python = old_python()
    if python is None:
        pytest.skip("no Python 3.9 on this machine")
    code = textwrap.dedent("""
        import hashlib, os, socket, sys, threading
        from sbox_shim.egress import bridge
        from sbox_shim.egress.policy import EgressPolicy
        from sbox_shim.egress.proxy import EgressProxy
        assert not bridge.SPLICE
        payload = os.urandom(16 * 1024 * 1024)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        def serve():
            conn, _ = listener.accept()
            conn.sendall(payload)
            conn.close()
        threading.Thread(target=serve, daemon=True).start()
        policy = EgressPolicy(pins={"big.test": ("127.0.0.1",)}, ports={"big.test": (port,)},
                              explicit=frozenset(("big.test",)))
        with EgressProxy(policy, sys.argv[1]) as proxy:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(sys.argv[1])
            sock.sendall(f"CONNECT big.test:{port} HTTP/1.1\\r\\n\\r\\n".encode())
            data = b""
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        print(head.split(b"\\r\\n")[0].decode(), len(body), body == payload)
    """)
    root = str(Path(sbox_shim.__file__).parents[1])
    result = subprocess.run(
        [python, "-c", code, str(tmp_path / "egress.sock")], capture_output=True, text=True,
        timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": root},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"HTTP/1.1 200 Connection established {16 * MIB} True\n"
