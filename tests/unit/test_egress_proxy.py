"""The egress proxy, for real: a unix socket in, loopback TCP listeners we own out."""
from __future__ import annotations

import datetime
import hashlib
import http.server
import os
import socket
import ssl
import stat
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from sbox_shim.egress.policy import EgressPolicy
from sbox_shim.egress.proxy import EgressProxy

TIMEOUT = 10.0  # a safety net against hangs, never a measurement


class Upstream:
    """A loopback TCP server that records what each connection sent and echoes it back."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []  # one entry per connection, once it has ended
        self.accepted = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.release()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        """Echo everything back; record it."""
        data = b""
        with conn:
            try:
                while chunk := conn.recv(65536):
                    data += chunk
                    conn.sendall(chunk)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.received.append(data)
        self.finished.release()

    def wait_finished(self) -> bytes:
        assert self.finished.acquire(timeout=TIMEOUT)
        return self.received[-1]

    def close(self) -> None:
        self.sock.close()


class Blaster:
    """A loopback TCP server that sends `size` bytes (forever if None) to whoever connects."""

    def __init__(self, size: int | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self.payload = bytes(range(256)) * 4096  # 1 MiB
        self.size = size
        self.cut_off = threading.Event()  # the proxy closed the connection while we sent
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        with conn:
            try:
                sent = 0
                while self.size is None or sent < self.size:
                    conn.sendall(self.payload)
                    sent += len(self.payload)
            except OSError:
                self.cut_off.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_hello(server_hostname: str | None) -> bytes:
    context = ssl.create_default_context()
    if server_hostname is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def unix_client(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(path)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


class Env:
    def __init__(self, tmp_path: Path, upstream: Upstream, web_port: int) -> None:
        self.upstream = upstream
        self.socket_path = str(tmp_path / "egress.sock")
        dead_port = free_port()
        policy = EgressPolicy(
            pins={
                "registry.test": ("127.0.0.1",),
                "mirror.test": ("127.0.0.1",),  # from a wildcard: not explicit
                "fallback.test": ("::1", "127.0.0.1"),  # nothing listens on ::1 at that port
                "dead.test": ("127.0.0.1",),
            },
            ports={
                "registry.test": (upstream.port, web_port),
                "mirror.test": (upstream.port,),
                "fallback.test": (upstream.port,),
                "dead.test": (dead_port,),
            },
            explicit=frozenset(("registry.test", "fallback.test", "dead.test")),
        )
        self.dead_port = dead_port
        self.proxy = EgressProxy(policy, self.socket_path, connect_timeout=TIMEOUT)
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        sock = unix_client(self.socket_path)
        self.clients.append(sock)
        return sock

    def tunnel(self, target: str, first: bytes = b"") -> tuple[socket.socket, bytes]:
        sock = self.connect()
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + first)
        return sock, read_head(sock)

    def assert_nothing_reached_upstream(self) -> None:
        """An allowed tunnel must be the next (and only) connection the upstream accepts."""
        sock, head = self.tunnel(f"registry.test:{self.upstream.port}")
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"marker")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"marker"
        assert self.upstream.wait_finished() == b"marker"
        assert self.upstream.received == [b"marker"]


Seen = list[tuple[str, dict[str, str]]]  # (path, headers) of each request the web server got


@pytest.fixture
def web() -> Iterator[tuple[int, Seen]]:
    seen: Seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, dict(self.headers.items())))
            body = b"hello from the registry"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, {**self.headers, "body": body.decode()}))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(tmp_path: Path, upstream: Upstream, web: tuple[int, Seen]) -> Iterator[Env]:
    env = Env(tmp_path, upstream, web[0])
    with env.proxy:
        yield env
    for sock in env.clients:
        sock.close()
    assert not os.path.exists(env.socket_path)


def test_socket_is_open_to_any_uid(env: Env) -> None:
    mode = os.stat(env.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o777


def test_connect_round_trip_with_half_close(env: Env) -> None:
    sock, head = env.tunnel(f"REGISTRY.test:{env.upstream.port}")
    assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
    sock.sendall(b"ping " * 1000)
    sock.shutdown(socket.SHUT_WR)  # the echo answers only after our EOF reaches it
    assert read_all(sock) == b"ping " * 1000
    assert env.upstream.wait_finished() == b"ping " * 1000
    assert env.proxy.denials == []


def test_connect_falls_back_to_the_next_pinned_address(env: Env) -> None:
    sock, head = env.tunnel(f"fallback.test:{env.upstream.port}")
    assert head.startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"x")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"x"


def test_connect_unreachable_is_502_not_a_denial(env: Env) -> None:
    sock, head = env.tunnel(f"dead.test:{env.dead_port}")
    assert head.startswith(b"HTTP/1.1 502 ")
    assert env.proxy.denials == []


@pytest.mark.parametrize(
    ("target", "reason"),
    (
        ("evil.test:{port}", "not-allowlisted"),
        ("127.0.0.1:{port}", "ip-literal"),
        ("[::1]:{port}", "ip-literal"),
        ("2130706433:{port}", "ip-literal"),
        ("0x7f.1:{port}", "ip-literal"),
        ("[::ffff:127.0.0.1]:{port}", "ip-literal"),
        ("mirror.test:{port}", "private-address"),
        ("registry.test:443", "port"),
    ),
)
def test_connect_refused(env: Env, target: str, reason: str) -> None:
    target = target.format(port=env.upstream.port)
    sock, head = env.tunnel(target)
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert f"({reason})".encode() in read_all(sock)

    [denial] = env.proxy.denials
    host, _, port = target.rpartition(":")
    assert denial == {
        "time": denial["time"], "kind": "connect", "host": host.strip("[]"), "port": int(port),
        "reason": reason, "hint": denial["hint"],
    }
    assert datetime.datetime.fromisoformat(denial["time"]).tzinfo is not None
    env.assert_nothing_reached_upstream()


def test_denial_hint_names_the_host(env: Env) -> None:
    env.tunnel("evil.test:443")
    assert env.proxy.denials[0]["hint"] == 'add "evil.test" to network_allow'


@pytest.mark.parametrize("pipelined", (False, True))
def test_tls_for_another_name_never_reaches_upstream(env: Env, pipelined: bool) -> None:
    hello = client_hello("evil.test")
    target = f"registry.test:{env.upstream.port}"
    sock, head = env.tunnel(target, first=hello if pipelined else b"")
    assert head.startswith(b"HTTP/1.1 200 ")
    if not pipelined:
        sock.sendall(hello)
    assert read_all(sock) == b""  # closed, nothing echoed
    assert env.upstream.wait_finished() == b""  # it saw a connection, and not one byte
    [denial] = env.proxy.denials
    assert (denial["kind"], denial["reason"], denial["sni"]) == ("sni", "sni-mismatch", "evil.test")


def test_tls_without_sni_is_refused(env: Env) -> None:
    sock, _ = env.tunnel(f"registry.test:{env.upstream.port}", first=client_hello(None))
    assert read_all(sock) == b""
    assert env.upstream.wait_finished() == b""
    assert [d["reason"] for d in env.proxy.denials] == ["sni-missing"]


def test_tls_for_the_same_name_is_forwarded(env: Env) -> None:
    hello = client_hello("Registry.Test")
    sock, head = env.tunnel(f"registry.test:{env.upstream.port}")
    for i in range(0, len(hello), 100):  # in small pieces: the proxy has to reassemble
        sock.sendall(hello[i:i + 100])
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == hello
    assert env.upstream.wait_finished() == hello
    assert env.proxy.denials == []


def test_plain_http_is_rewritten_to_origin_form(env: Env, web: tuple[int, Seen]) -> None:
    port, seen = web
    sock = env.connect()
    sock.sendall(
        f"GET http://registry.test:{port}/simple/pkg/?q=1 HTTP/1.1\r\n"
        f"Host: elsewhere.test\r\n"
        f"Proxy-Authorization: Basic c2VjcmV0\r\n"
        f"Proxy-Connection: keep-alive\r\n"
        f"Accept: */*\r\n\r\n".encode(),
    )
    response = read_all(sock)
    assert response.startswith(b"HTTP/1.0 200 ") and response.endswith(b"hello from the registry")
    [(path, headers)] = seen
    assert path == "/simple/pkg/?q=1"
    assert headers["Host"] == f"registry.test:{port}"
    assert headers["Connection"] == "close" and headers["Accept"] == "*/*"
    assert not [name for name in headers if name.lower().startswith("proxy-")]


def test_plain_http_refused(env: Env) -> None:
    sock = env.connect()
    sock.sendall(b"GET http://evil.test/x HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 403 ")
    denials = [(d["kind"], d["host"], d["port"]) for d in env.proxy.denials]
    assert denials == [("http", "evil.test", 80)]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    (
        (b"GET / HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400),  # origin-form: not for a proxy
        (b"CONNECT registry.test HTTP/1.1\r\n\r\n", 400),  # no port
        (b"CONNECT registry.test:99999 HTTP/1.1\r\n\r\n", 400),
        (b"GET http://user@registry.test/ HTTP/1.1\r\n\r\n", 400),
        (b"GET https://registry.test/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://registry.test/ HTTP/1.1\r\nX: a\nB: c\r\n\r\n", 400),  # bare LF
        (b"GET http://registry.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\x05hello\r\n\r\n", 400),
        (b"GET http://registry.test/ HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ),
)
def test_bad_requests(env: Env, request_bytes: bytes, status: int) -> None:
    sock = env.connect()
    sock.sendall(request_bytes)
    assert read_head(sock).startswith(f"HTTP/1.1 {status} ".encode())
    assert [d["kind"] for d in env.proxy.denials] == ["bad-request"]
    env.assert_nothing_reached_upstream()


def test_misbehaving_clients_do_not_disturb_others(env: Env) -> None:
    gone = env.connect()
    gone.sendall(b"CONNECT registry.te")
    gone.close()
    idle = env.connect()
    idle.sendall(b"CONNECT registry.test:1 HTTP/1.1\r\nX-Slow: ")
    stalled, _ = env.tunnel(f"registry.test:{env.upstream.port}", first=b"\x16\x03\x01")
    sock, head = env.tunnel(f"registry.test:{env.upstream.port}")
    sock.sendall(b"still fine")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"still fine"
    # stop() (by the fixture) must not wait for the idle and the stalled connections
    idle.close()
    stalled.close()


def test_connections_beyond_the_limit_are_closed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox that opens connections without end gets at most MAX_CONNECTIONS served at once
    (a thread each): the next one is closed unserved, and served again once one has ended."""
    from sbox_shim.egress import proxy as proxy_module

    monkeypatch.setattr(proxy_module, "MAX_CONNECTIONS", 2)
    held = [env.connect(), env.connect()]
    for sock in held:
        sock.sendall(b"CONNECT registry.te")  # half a head: each holds its connection
    extra = env.connect()
    extra.settimeout(TIMEOUT)
    try:  # closed without an answer (reset if what it sent was not read, or before it sent)
        extra.sendall(f"CONNECT registry.test:{env.upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert read_all(extra) == b""
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert env.upstream.received == [] and env.upstream.accepted.acquire(timeout=0.2) is False
    held.pop().close()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the closed one is let go of soon after (until then, closed or reset)
        try:
            sock, head = env.tunnel(f"registry.test:{env.upstream.port}")
        except (ConnectionError, AssertionError):  # reset or broken pipe; read_head asserts on a close
            head = b""
        if head.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert head.startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_a_tcp_listener_it_serves_is_a_proxy_port(env: Env) -> None:
    """serve(): the proxy accepts on a TCP listener it is given (made in a sandbox's network
    namespace by netns.py) and serves each connection as the proxy port's, refusals included."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    env.proxy.serve(listener, None)
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 403 ")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"CONNECT registry.test:{env.upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(client_hello("other.test"))  # TLS for another name: refused
        assert read_all(sock) == b""
    assert [d["reason"] for d in env.proxy.denials][-2:] == ["not-allowlisted", "sni-mismatch"]
    assert env.upstream.wait_finished() == b""  # connected at CONNECT, then not one byte sent


def test_ipv6_upstream(tmp_path: Path) -> None:
    try:
        upstream = Upstream("::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    policy = EgressPolicy(
        pins={"v6.test": ("::1",)}, ports={"v6.test": (upstream.port,)},
        explicit=frozenset(("v6.test",)),
    )
    with EgressProxy(policy, str(tmp_path / "egress.sock")) as proxy, \
            unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT v6.test:{upstream.port} HTTP/1.1\r\n\r\nv6".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"v6"
    upstream.close()


def test_stop_closes_open_tunnels(tmp_path: Path, upstream: Upstream) -> None:
    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)}, ports={"registry.test": (upstream.port,)},
        explicit=frozenset(("registry.test",)),
    )
    proxy = EgressProxy(policy, str(tmp_path / "egress.sock"))
    proxy.start()
    sock = unix_client(proxy.socket_path)
    sock.sendall(f"CONNECT registry.test:{upstream.port} HTTP/1.1\r\n\r\nopen".encode())
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    assert sock.recv(4) == b"open"
    proxy.stop()
    assert read_all(sock) == b""
    assert upstream.wait_finished() == b"open"
    assert not (tmp_path / "egress.sock").exists()
    proxy.stop()  # idempotent
    sock.close()


def blaster_proxy(tmp_path: Path, blaster: Blaster) -> EgressProxy:
    policy = EgressPolicy(
        pins={"big.test": ("127.0.0.1",)}, ports={"big.test": (blaster.port,)},
        explicit=frozenset(("big.test",)),
    )
    return EgressProxy(policy, str(tmp_path / "egress.sock"))


def test_large_download_to_a_slow_reader_arrives_intact(tmp_path: Path) -> None:
    blaster = Blaster(size=32 * 1024 * 1024)
    with blaster_proxy(tmp_path, blaster) as proxy, unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT big.test:{blaster.port} HTTP/1.1\r\n\r\n".encode())
        # The origin speaks first, at once: its bytes must still come after the 200.
        assert read_head(sock) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        received = bytearray()
        while chunk := sock.recv(4096):  # small reads: the proxy has to hold the origin back
            received += chunk
        assert len(received) == 32 * 1024 * 1024
        assert received == blaster.payload * 32


def test_a_client_that_leaves_mid_download_closes_the_origin(tmp_path: Path) -> None:
    blaster = Blaster(size=None)
    with blaster_proxy(tmp_path, blaster) as proxy, unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT big.test:{blaster.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        assert sock.recv(65536)
        sock.close()
        assert blaster.cut_off.wait(TIMEOUT)


def test_an_address_listed_literally_may_skip_sni(tmp_path: Path, upstream: Upstream) -> None:
    policy = EgressPolicy(
        pins={"127.0.0.1": ("127.0.0.1",)}, ports={"127.0.0.1": (upstream.port,)},
        explicit=frozenset(("127.0.0.1",)),
    )
    hello = client_hello(None)  # clients send no SNI when they connect to an address
    with EgressProxy(policy, str(tmp_path / "egress.sock")) as proxy, \
            unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\n\r\n".encode() + hello)
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == hello
        assert proxy.denials == []


class HashEcho:
    """A loopback TCP server that echoes one connection and keeps the sha256 of what it got."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port: int = self.sock.getsockname()[1]
        self.result: list[tuple[int, str]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        sha, size = hashlib.sha256(), 0
        buf = bytearray(1024 * 1024)
        with conn:
            while n := conn.recv_into(buf):
                sha.update(memoryview(buf)[:n])
                size += n
                conn.sendall(memoryview(buf)[:n])
            conn.shutdown(socket.SHUT_WR)
        self.result.append((size, sha.hexdigest()))


def test_large_upload_and_echo_through_the_proxy_arrive_intact(tmp_path: Path) -> None:
    echo = HashEcho()
    policy = EgressPolicy(
        pins={"big.test": ("127.0.0.1",)}, ports={"big.test": (echo.port,)},
        explicit=frozenset(("big.test",)),
    )
    payload = os.urandom(40 * 1024 * 1024)
    with EgressProxy(policy, str(tmp_path / "egress.sock")) as proxy, \
            unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT big.test:{echo.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")

        def upload() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 3 * 1024 * 1024 + 17):  # uneven pieces
                sock.sendall(view[i:i + 3 * 1024 * 1024 + 17])
            sock.shutdown(socket.SHUT_WR)

        uploader = threading.Thread(target=upload)
        uploader.start()
        sha, size = hashlib.sha256(), 0
        while chunk := sock.recv(1024 * 1024):
            sha.update(chunk)
            size += len(chunk)
        uploader.join(TIMEOUT)
    expected = (len(payload), hashlib.sha256(payload).hexdigest())
    echo.thread.join(TIMEOUT)
    assert echo.result == [expected]  # what the origin got
    assert (size, sha.hexdigest()) == expected  # what came back


def test_bytes_pipelined_after_a_connect_reach_the_origin_in_order(env: Env) -> None:
    """The ClientHello and what follows it, sent with the CONNECT in one go: the proxy has read
    them already when the relay starts, and must pass them on first."""
    hello = client_hello("registry.test")
    sock, head = env.tunnel(f"registry.test:{env.upstream.port}", first=hello + b"after")
    assert head.startswith(b"HTTP/1.1 200 ")
    sock.sendall(b" and later")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == hello + b"after and later"
    assert env.upstream.wait_finished() == hello + b"after and later"


def test_a_request_body_sent_with_the_head_reaches_the_origin(
        env: Env, web: tuple[int, Seen]) -> None:
    port, seen = web
    sock = env.connect()
    sock.sendall(
        f"POST http://registry.test:{port}/upload HTTP/1.1\r\n"
        f"Content-Length: 17\r\n\r\nfirst half".encode(),
    )
    sock.sendall(b"+second")
    assert read_all(sock).endswith(b"\r\n\r\nfirst half+second")  # echoed
    [(path, headers)] = seen
    assert (path, headers["body"]) == ("/upload", "first half+second")


def test_stop_during_an_sni_peek_is_not_a_denial(tmp_path: Path, upstream: Upstream) -> None:
    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)}, ports={"registry.test": (upstream.port,)},
        explicit=frozenset(("registry.test",)),
    )
    proxy = EgressProxy(policy, str(tmp_path / "egress.sock"))
    proxy.start()
    sock = unix_client(proxy.socket_path)
    sock.sendall(f"CONNECT registry.test:{upstream.port} HTTP/1.1\r\n\r\n\x16\x03\x01".encode())
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    assert upstream.accepted.acquire(timeout=TIMEOUT)
    proxy.stop()  # cuts the half-sent ClientHello short: that is no tls-incomplete
    assert read_all(sock) == b""
    assert upstream.wait_finished() == b""
    assert proxy.denials == []
    sock.close()


# What an allowed connection carries. cdn.test stands for a registry on a shared CDN: its address
# also serves other sites, picked by the Host header or the SNI. It is not a loopback registry the
# bridge forwards (forwards=frozenset()), though the test's listener is on loopback.

def cdn_proxy(tmp_path: Path, port: int) -> EgressProxy:
    policy = EgressPolicy(
        pins={"cdn.test": ("127.0.0.1",)}, ports={"cdn.test": (port,)},
        explicit=frozenset(("cdn.test",)), forwards=frozenset(),
    )
    return EgressProxy(policy, str(tmp_path / "egress.sock"))


PLAIN_GET = b"GET / HTTP/1.1\r\nHost: other-tenant.test\r\n\r\n"


@pytest.mark.parametrize("pipelined", (False, True))
@pytest.mark.parametrize("payload", (PLAIN_GET, b"SSH-2.0-OpenSSH_9.6\r\n"))
def test_plain_bytes_inside_connect_never_reach_upstream(
        tmp_path: Path, upstream: Upstream, pipelined: bool, payload: bytes) -> None:
    with cdn_proxy(tmp_path, upstream.port) as proxy, unix_client(proxy.socket_path) as sock:
        connect = f"CONNECT cdn.test:{upstream.port} HTTP/1.1\r\n\r\n".encode()
        sock.sendall(connect + payload if pipelined else connect)
        assert read_head(sock) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        if not pipelined:
            sock.sendall(payload)
        assert read_all(sock) == b""  # closed, nothing echoed
        assert upstream.wait_finished() == b""  # it saw a connection, and not one byte
        [denial] = proxy.denials
    reason = "plain-http" if payload == PLAIN_GET else "not-tls"
    first = payload.split(b"\r\n")[0].decode()
    assert (denial["kind"], denial["host"], denial["reason"], denial["first"]) == (
        "sni", "cdn.test", reason, first)


def test_tls_for_the_name_still_passes_where_plain_bytes_do_not(
        tmp_path: Path, upstream: Upstream) -> None:
    hello = client_hello("cdn.test")
    with cdn_proxy(tmp_path, upstream.port) as proxy, unix_client(proxy.socket_path) as sock:
        sock.sendall(f"CONNECT cdn.test:{upstream.port} HTTP/1.1\r\n\r\n".encode() + hello)
        assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(PLAIN_GET)  # after a good ClientHello, the tunnel is the client's
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == hello + PLAIN_GET
        assert upstream.wait_finished() == hello + PLAIN_GET
        assert proxy.denials == []


class OneAnswer(Upstream):
    """A loopback HTTP origin that answers the first request head of each connection, ends its
    side, and records every byte the connection brings until the proxy closes it."""

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                conn.shutdown(socket.SHUT_WR)
                while chunk := conn.recv(65536):
                    data += chunk
            except OSError:
                pass
        self.received.append(data)
        self.finished.release()


def absolute(port: int, path: str, extra: str = "") -> bytes:
    return f"GET http://cdn.test:{port}{path} HTTP/1.1\r\nHost: cdn.test\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("pipelined", (False, True))
def test_one_plain_http_request_per_connection(tmp_path: Path, pipelined: bool) -> None:
    origin = OneAnswer()
    second = b"GET /tenant HTTP/1.1\r\nHost: other-tenant.test\r\n\r\n"
    with cdn_proxy(tmp_path, origin.port) as proxy, unix_client(proxy.socket_path) as sock:
        first = absolute(origin.port, "/first", "Connection: keep-alive\r\n")
        sock.sendall(first + second if pipelined else first)
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        try:  # a client keeping the connection alive sends its next request
            sock.sendall(second)
        except OSError:
            pass  # already closed: just as good
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert read_all(sock) == b""  # the connection ends after the one answer
        received = origin.wait_finished()
        assert proxy.denials == []
    assert received.startswith(b"GET /first HTTP/1.1\r\nHost: cdn.test:")
    assert received.count(b"HTTP/1.1") == 1 and b"other-tenant" not in received


def test_a_request_body_is_forwarded_and_what_follows_it_is_not(tmp_path: Path) -> None:
    origin = OneAnswer()
    with cdn_proxy(tmp_path, origin.port) as proxy, unix_client(proxy.socket_path) as sock:
        sock.sendall(f"POST http://cdn.test:{origin.port}/up HTTP/1.1\r\n"
                     f"Content-Length: 12\r\n\r\nfirst".encode())
        sock.sendall(b" second" + absolute(origin.port, "/next"))
        assert read_all(sock).endswith(b"\r\n\r\nok")
        received = origin.wait_finished()
        assert proxy.denials == []
    assert received.startswith(b"POST /up HTTP/1.1\r\n")
    assert received.endswith(b"\r\n\r\nfirst second")


@pytest.mark.parametrize("framing", ("Transfer-Encoding: chunked\r\n",
                                     "Content-Length: 5\r\nContent-Length: 6\r\n",
                                     "Content-Length: +5\r\n"))
def test_a_body_framed_otherwise_is_refused(tmp_path: Path, upstream: Upstream,
                                            framing: str) -> None:
    with cdn_proxy(tmp_path, upstream.port) as proxy, unix_client(proxy.socket_path) as sock:
        sock.sendall(f"POST http://cdn.test:{upstream.port}/ HTTP/1.1\r\n{framing}\r\n".encode()
                     + b"5\r\nhello\r\n0\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 411 ")
        assert [(d["kind"], d["reason"]) for d in proxy.denials] == [("bad-request", "body-framing")]
    assert not upstream.accepted.acquire(timeout=0.2)
