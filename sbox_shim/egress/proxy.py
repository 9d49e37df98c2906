"""The egress proxy: the only way out of a sandbox whose network is allowlisted.

It runs on the host, in a thread of the sbox process, and listens on a unix socket that is
mounted into the sandbox (where `bridge.py` exposes it on 127.0.0.1, handing each connection
it accepts over whole: see `intake`). It speaks just enough HTTP/1.1 for package managers:
`CONNECT host:port` tunnels and absolute-form plain-HTTP requests; a connection to a bridge's
`--forward` port is served as a tunnel to its target, as if CONNECTed, with no answer line.
Every request goes through `policy.decide()`; allowed ones are connected to the addresses pinned
at plan time (names are never resolved again, so DNS rebinding cannot redirect them).

What an allowed connection carries is checked too, since the address alone does not say which
site is reached (on a shared CDN, the Host header or the SNI picks it): a tunnel must carry TLS
whose ClientHello names the host that was CONNECTed to (plain HTTP or anything else is refused:
its Host would pick any tenant), except to a loopback registry the user listed with its port
(`policy.may_carry_plain`); and a plain-HTTP connection carries one request, whose Host we
write, and is closed after its answer (`relay.Once`).

Threads, no event loop (asyncio alone would cost tens of milliseconds to import on every step):
one accepts on each listener, and each connection is served in a thread of its own (kept for
reuse: `bridge.spawn`), which reads the request head (with a deadline, on raw sockets: every byte
read is in hand), decides, connects, and then relays (`relay.relay`: in the kernel, one more
thread for the other direction). Besides the unix socket, the proxy may serve TCP listeners that
the sandbox's own loopback holds (`serve`: see netns.py), whose connections are served as a
handoff's.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import socket
import threading
import time

from sbox_shim.egress import httphead
from sbox_shim.egress import intake
from sbox_shim.egress.bridge import abort
from sbox_shim.egress.bridge import spawn
from sbox_shim.egress.policy import decide
from sbox_shim.egress.policy import EgressPolicy
from sbox_shim.egress.policy import may_carry_plain
from sbox_shim.egress.policy import normalize_host
from sbox_shim.egress.policy import parse_ip_literal
from sbox_shim.egress.relay import Once
from sbox_shim.egress.relay import relay
from sbox_shim.egress.sni import MAX_HELLO
from sbox_shim.egress.sni import parse_client_hello_sni
from sbox_shim.egress.sni import Peek

MAX_HEAD = intake.MAX_HEAD
HEAD_TIMEOUT = 60.0
LINGER = 2.0  # seconds for a refused client to finish sending (see _linger)
MAX_DENIALS = 10_000  # a looping script must not grow the host process without bound
MAX_CONNECTIONS = 1024  # served at once (a thread each, two while relaying); more are closed
STOP_TIMEOUT = 30.0  # seconds stop() waits for the connections it has shut down to let go

# One refused attempt: {"time": ISO 8601 UTC, "kind": "connect" | "http" | "sni" | "bad-request",
#                       "host": str, "port": int, "reason": str, "hint": str[, "sni": str]}
TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    Denial = dict[str, Any]


class _Refused(Exception):
    """The client has been answered (or dropped) and the denial recorded."""


class EgressProxy:
    def __init__(
            self,
            policy: EgressPolicy,
            socket_path: str,
            *,
            connect_timeout: float = 10.0,
    ) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self._denials: list[Denial] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._live: set[socket.socket] = set()  # under _lock: every socket a connection holds
        self._busy = 0  # under _lock: connections being served
        self._accepting: list[threading.Event] = []
        self._wake: tuple[int, int] | None = None  # a pipe: written once, by stop()
        self._stopping = False  # under _lock: what fails then is the shutdown, not a denial

    def start(self) -> None:
        """Listen on the unix socket (none if `socket_path` is ""), then accept from a thread of
        its own; `serve` adds listeners."""
        if self._wake is not None:
            raise RuntimeError("EgressProxy already started")
        listener = intake.listen(self.socket_path) if self.socket_path else None
        self._stopping = False
        self._wake = os.pipe()
        if listener is not None:
            self.serve(listener, None, unix=True)

    def serve(self, listener: socket.socket, target: tuple[str, int] | None,
              unix: bool = False) -> None:
        """Accept on `listener` until stop(), which closes it. A TCP listener's connections are
        served as a handoff's: tunnels to `target` (a forward's HOST:PORT), or, for None, proxy
        clients. `unix`: the proxy's own socket, whose connections say what they are."""
        if self._wake is None:
            listener.close()
            raise RuntimeError("EgressProxy not started")
        done = threading.Event()
        self._accepting.append(done)
        wake = self._wake[0]
        threading.Thread(target=self._accept, args=(listener, target, unix, wake, done),
                         name="sbox-egress-proxy", daemon=True).start()

    def stop(self) -> None:
        """Close the listeners and every connection, wait for them, remove the socket."""
        if self._wake is None:
            return
        with self._lock:
            self._stopping = True
            live = list(self._live)
        os.write(self._wake[1], b"x")
        for done in self._accepting:
            done.wait(STOP_TIMEOUT)
        abort(*live)  # every thread blocked on one of them wakes with an end or an error
        deadline = time.monotonic() + STOP_TIMEOUT
        with self._lock:
            while self._busy and (left := deadline - time.monotonic()) > 0:
                abort(*self._live)
                self._idle.wait(min(left, 0.1))
        for fd in self._wake:
            os.close(fd)
        self._wake = None
        self._accepting = []
        try:
            if self.socket_path:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> EgressProxy:
        self.start()
        return self

    def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def denials(self) -> list[Denial]:
        with self._lock:
            return [dict(denial) for denial in self._denials]

    def _accept(self, listener: socket.socket, target: tuple[str, int] | None, unix: bool,
                wake: int, done: threading.Event) -> None:
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(wake, select.POLLIN)
        listener.setblocking(False)
        try:
            while True:
                if any(fd == wake for fd, _ in poller.poll()):
                    return
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as e:
                    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        _log("egress proxy: cannot accept connections")
                        return
                    time.sleep(0.1)  # out of descriptors: let some connections finish
                    continue
                if not self._enter(conn):
                    conn.close()
                    continue
                try:
                    spawn(functools.partial(self._handle, conn, target, unix))
                except RuntimeError:  # out of threads: refuse this one connection
                    self._leave([conn])
                    conn.close()
        finally:
            listener.close()
            done.set()

    def _enter(self, conn: socket.socket) -> bool:
        """Count a connection in (False once stopping, or with MAX_CONNECTIONS in hand: a
        sandbox opening connections without end must not grow the host process without bound);
        stop() shuts its sockets down."""
        with self._lock:
            if self._stopping or self._busy >= MAX_CONNECTIONS:
                return False
            self._live.add(conn)
            self._busy += 1
            return True

    def _track(self, sock: socket.socket, held: list[socket.socket]) -> None:
        """One more socket of a connection (a handed-off client, an origin) for stop() to end."""
        held.append(sock)
        with self._lock:
            self._live.add(sock)
            stopping = self._stopping
        if stopping:
            abort(sock)

    def _leave(self, held: list[socket.socket]) -> None:
        with self._lock:
            self._live.difference_update(held)
            self._busy -= 1
            self._idle.notify_all()

    def _record(self, kind: str, host: str, port: int, reason: str, hint: str = "",
                **extra: str) -> None:
        denial: Denial = {"time": _now(), "kind": kind, "host": host, "port": port,
                          "reason": reason, "hint": hint, **extra}
        with self._lock:
            if len(self._denials) < MAX_DENIALS and not self._stopping:
                self._denials.append(denial)

    def _handle(self, conn: socket.socket, target: tuple[str, int] | None, unix: bool) -> None:
        client, relayed, held = conn, False, [conn]
        deadline = time.monotonic() + HEAD_TIMEOUT
        try:
            if unix:
                first = intake.receive(conn, deadline)
                if isinstance(first, bytes):
                    if first:
                        relayed = self._serve(conn, first, deadline, held)
                    return
                client = first.client  # a handoff: serve the connection it brought instead
                self._track(client, held)
                conn.close()
                target = first.target
            else:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target is None:
                relayed = self._serve(client, b"", deadline, held)
                return
            with self._open("connect", client, *target, deadline=deadline, held=held,
                            answer=False) as origin:
                relayed = True
                relay(client, origin, self._vetter(client, b"", *target, origin))
        except (_Refused, intake.Declined, OSError):
            pass  # refused and told, or the client went away, or too slow (TimeoutError)
        except Exception:
            _log("egress proxy: unexpected error")
        finally:
            if not relayed and client.family != socket.AF_UNIX and not self._stopping:
                _linger(client)  # answered, never relayed: let it read the answer
            self._leave(held)
            for sock in held:
                sock.close()

    def _serve(self, client: socket.socket, data: bytes, deadline: float,
               held: list[socket.socket]) -> bool:
        """Serve one proxy request; True once it is relayed (else it was answered or dropped)."""
        received = intake.read_head(client, data, deadline)
        if received is None:
            return False  # closed before the end of its request head
        head, rest = received
        if len(head) > MAX_HEAD:
            self._record("bad-request", "", 0, "head-too-large")
            intake.sendall(client, httphead.response(431, "Request Header Fields Too Large"),
                           deadline)
            return False
        request = httphead.parse_request_head(head)

        if request is not None and request.method == "CONNECT":
            target = httphead.split_authority(request.target, default_port=None)
            if target is not None:
                host, port = target
                with self._open("connect", client, host, port, deadline=deadline,
                                held=held) as origin:
                    intake.sendall(client, b"HTTP/1.1 200 Connection established\r\n\r\n",
                                   deadline)
                    relay(client, origin, self._vetter(client, rest, host, port, origin))
                    return True
        elif request is not None:
            url = httphead.split_absolute_url(request.target)
            if url is not None:
                length = httphead.body_length(request)
                if length is None and decide(self.policy, url.host, url.port).allowed:
                    self._record("bad-request", url.host, url.port, "body-framing")
                    text = ("sbox: over plain HTTP the egress proxy forwards request bodies with "
                            "a Content-Length only; use https://\n")
                    intake.sendall(client, httphead.response(411, "Length Required", text),
                                   deadline)
                    return False
                length = length or 0  # (None only for a host that _open refuses)
                with self._open("http", client, url.host, url.port, deadline=deadline,
                                held=held) as origin:
                    early = rest[:length]  # what came after the head: the body, or part of it
                    once = Once(httphead.origin_form(request, url) + early, length - len(early))
                    relay(client, origin, lambda: once)
                    return True

        self._record("bad-request", "", 0, "malformed" if request is None else "unsupported")
        body = "sbox: the egress proxy takes CONNECT host:port or GET http://host/... requests\n"
        intake.sendall(client, httphead.response(400, "Bad Request", body), deadline)
        return False

    def _open(self, kind: str, client: socket.socket, host: str, port: int, *,
              deadline: float, held: list[socket.socket], answer: bool = True) -> socket.socket:
        """Connect to the pinned addresses of an allowed (host, port); else answer (if `answer`:
        a forward's client gets no HTTP, only the close) and refuse."""
        decision = decide(self.policy, host, port)
        if not decision.allowed:
            self._record(kind, host, port, decision.reason, decision.hint)
            hint = f"; {decision.hint}" if decision.hint else ""
            body = f"sbox: egress to {host}:{port} refused ({decision.reason}){hint}\n"
            if answer:
                intake.sendall(client, httphead.response(403, "Forbidden", body), deadline)
            raise _Refused
        for address in decision.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            origin = socket.socket(family, socket.SOCK_STREAM)
            self._track(origin, held)
            try:
                origin.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                origin.settimeout(self.connect_timeout)
                origin.connect((address, port))
                return origin
            except OSError:
                origin.close()
            except BaseException:
                origin.close()
                raise
        body = f"sbox: could not connect to {host}:{port}\n"
        if answer:
            intake.sendall(client, httphead.response(502, "Bad Gateway", body), deadline)
        raise _Refused

    def _vetter(self, client: socket.socket, data: bytes, host: str, port: int,
                origin: socket.socket) -> functools.partial[bytes | None]:
        plain = may_carry_plain(self.policy, host, port, origin.getpeername()[0])
        return functools.partial(self._vet_sni, client, data, host, port, plain)

    def _vet_sni(self, client: socket.socket, data: bytes, host: str, port: int,
                 plain: bool) -> bytes | None:
        """The client's first bytes once we know they are TLS for `host` (or, if `plain` allows,
        not TLS at all), else None. `data` is what came after the CONNECT head. Runs in the
        relay's thread: it may block."""
        while True:
            verdict = parse_client_hello_sni(data)
            if verdict is not Peek.INCOMPLETE or len(data) > 4 * MAX_HELLO:
                break
            chunk = client.recv(MAX_HELLO)
            if not chunk:
                break
            data += chunk
        if not data:
            return data  # closed without sending anything: the relay passes the half-close on

        reason, extra = "", {}
        if verdict is Peek.NOT_TLS and not plain:
            reason = "plain-http" if httphead.looks_like_request(data) else "not-tls"
            line = data.split(b"\r\n", 1)[0][:200].decode("latin-1")
            extra = {"first": "".join(c if c.isprintable() else "?" for c in line)}
        elif verdict is Peek.INCOMPLETE:
            reason = "tls-incomplete"
        elif verdict is Peek.MALFORMED:
            reason = "tls-malformed"
        elif verdict is None and parse_ip_literal(normalize_host(host)) is None:
            reason = "sni-missing"  # clients send no SNI for IP addresses: fine for those
        elif isinstance(verdict, str) and normalize_host(verdict) != normalize_host(host):
            reason, extra = "sni-mismatch", {"sni": verdict[:253]}
        if reason:
            self._record("sni", host, port, reason, **extra)
            return None
        return data


def _now() -> str:
    """The time, ISO 8601 UTC with milliseconds (as datetime writes it, without importing it)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+00:00"


def _log(message: str) -> None:
    import logging  # only now: it costs milliseconds to import

    logging.getLogger(__name__).exception(message)


def _linger(client: socket.socket) -> None:
    """Before closing a TCP client that was answered without reading all it sent: end our side,
    then discard what it still sends, for a while. Closing at once would meet its late bytes
    with a reset, which can destroy the answer before it is read."""
    deadline = time.monotonic() + LINGER
    left = MAX_HEAD
    try:
        client.shutdown(socket.SHUT_WR)
        while left > 0 and (chunk := intake.recv(client, 65536, deadline)):
            left -= len(chunk)
    except OSError:
        pass  # gone, or slow, or stop(): close now
