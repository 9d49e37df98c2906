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

The event loop accepts, reads request heads and decides, on raw non-blocking sockets (no stream
buffers: every byte read is in hand). An allowed tunnel then leaves the loop: `relay.relay` moves
its bytes in the kernel, in threads of its own.
"""
from __future__ import annotations

import asyncio
import datetime
import errno
import functools
import logging
import os
import socket
import threading
from types import TracebackType
from typing import Any

from sbox_shim.egress import httphead
from sbox_shim.egress import intake
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

logger = logging.getLogger(__name__)

MAX_HEAD = intake.MAX_HEAD
HEAD_TIMEOUT = 60.0
LINGER = 2.0  # seconds for a refused client to finish sending (see _linger)
MAX_DENIALS = 10_000  # a looping script must not grow the host process without bound

# One refused attempt: {"time": ISO 8601 UTC, "kind": "connect" | "http" | "sni" | "bad-request",
#                       "host": str, "port": int, "reason": str, "hint": str[, "sni": str]}
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False  # under _lock: what fails then is the shutdown, not a denial

    def start(self) -> None:
        """Listen on the unix socket, then serve from a daemon thread."""
        if self._loop is not None:
            raise RuntimeError("EgressProxy already started")
        listener = intake.listen(self.socket_path)
        self._stopping = False
        loop = asyncio.new_event_loop()
        self._accepting = loop.create_task(self._accept(listener))
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="sbox-egress-proxy", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every tunnel, join the thread, remove the socket."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with self._lock:
            self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = self._accepting = None
            try:
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

    async def _shutdown(self) -> None:
        tasks = [task for task in (self._accepting, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with listener:
            while True:
                try:
                    client, _ = await loop.sock_accept(listener)
                except ConnectionAbortedError:
                    continue
                except OSError as e:
                    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        logger.exception("egress proxy: cannot accept connections")
                        return
                    await asyncio.sleep(0.1)  # out of descriptors: let some connections finish
                    continue
                task = loop.create_task(self._handle(client))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _record(self, kind: str, host: str, port: int, reason: str, hint: str = "",
                **extra: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        denial: Denial = {"time": now, "kind": kind, "host": host, "port": port,
                          "reason": reason, "hint": hint, **extra}
        with self._lock:
            if len(self._denials) < MAX_DENIALS and not self._stopping:
                self._denials.append(denial)

    async def _handle(self, conn: socket.socket) -> None:
        client = conn
        try:
            first = await asyncio.wait_for(intake.receive(conn), HEAD_TIMEOUT)
            if isinstance(first, bytes):
                return await self._serve(conn, first) if first else None
            conn.close()  # a handoff: serve the connection it brought instead
            client = first.client
            if first.target is None:
                return await self._serve(client, b"")
            with await self._open("connect", client, *first.target, answer=False) as origin:
                vet = self._vetter(client, b"", *first.target, origin)
                return await relay(client, origin, vet)
        except (_Refused, intake.Declined, OSError, asyncio.TimeoutError):
            pass  # refused and told, or the client went away
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs tasks that end cancelled, in some versions)
        except Exception:
            logger.exception("egress proxy: unexpected error")
        finally:
            conn.close()
            if client is not conn and not client.getblocking() and not self._stopping:
                await _linger(client)  # answered, never relayed (relay() makes it blocking)
            client.close()

    async def _serve(self, client: socket.socket, data: bytes) -> None:
        received = await asyncio.wait_for(intake.read_head(client, data), HEAD_TIMEOUT)
        if received is None:
            return  # closed before the end of its request head
        head, rest = received
        if len(head) > MAX_HEAD:
            self._record("bad-request", "", 0, "head-too-large")
            return await intake.sendall(
                client, httphead.response(431, "Request Header Fields Too Large"),
            )
        request = httphead.parse_request_head(head)

        if request is not None and request.method == "CONNECT":
            target = httphead.split_authority(request.target, default_port=None)
            if target is not None:
                host, port = target
                with await self._open("connect", client, host, port) as origin:
                    await intake.sendall(client, b"HTTP/1.1 200 Connection established\r\n\r\n")
                    vet = self._vetter(client, rest, host, port, origin)
                    return await relay(client, origin, vet)
        elif request is not None:
            url = httphead.split_absolute_url(request.target)
            if url is not None:
                length = httphead.body_length(request)
                if length is None and decide(self.policy, url.host, url.port).allowed:
                    self._record("bad-request", url.host, url.port, "body-framing")
                    text = ("sbox: over plain HTTP the egress proxy forwards request bodies with "
                            "a Content-Length only; use https://\n")
                    return await intake.sendall(
                        client, httphead.response(411, "Length Required", text))
                length = length or 0  # (None only for a host that _open refuses)
                with await self._open("http", client, url.host, url.port) as origin:
                    early = rest[:length]  # what came after the head: the body, or part of it
                    once = Once(httphead.origin_form(request, url) + early, length - len(early))
                    return await relay(client, origin, lambda: once)

        self._record("bad-request", "", 0, "malformed" if request is None else "unsupported")
        body = "sbox: the egress proxy takes CONNECT host:port or GET http://host/... requests\n"
        await intake.sendall(client, httphead.response(400, "Bad Request", body))

    async def _open(self, kind: str, client: socket.socket, host: str, port: int,
                    answer: bool = True) -> socket.socket:
        """Connect to the pinned addresses of an allowed (host, port); else answer (if `answer`:
        a forward's client gets no HTTP, only the close) and refuse."""
        loop = asyncio.get_running_loop()
        decision = decide(self.policy, host, port)
        if not decision.allowed:
            self._record(kind, host, port, decision.reason, decision.hint)
            hint = f"; {decision.hint}" if decision.hint else ""
            body = f"sbox: egress to {host}:{port} refused ({decision.reason}){hint}\n"
            if answer:
                await intake.sendall(client, httphead.response(403, "Forbidden", body))
            raise _Refused
        for address in decision.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            origin = socket.socket(family, socket.SOCK_STREAM)
            try:
                origin.setblocking(False)
                origin.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await asyncio.wait_for(loop.sock_connect(origin, (address, port)),
                                       self.connect_timeout)
                return origin
            except (OSError, asyncio.TimeoutError):
                origin.close()
            except BaseException:
                origin.close()
                raise
        body = f"sbox: could not connect to {host}:{port}\n"
        if answer:
            await intake.sendall(client, httphead.response(502, "Bad Gateway", body))
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



async def _linger(client: socket.socket) -> None:
    """Before closing a TCP client that was answered without reading all it sent: end our side,
    then discard what it still sends, for a while. Closing at once would meet its late bytes
    with a reset, which can destroy the answer before it is read."""

    async def drain() -> None:
        left = MAX_HEAD
        while left > 0 and (chunk := await intake.recv(client, 65536)):
            left -= len(chunk)

    try:
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(drain(), LINGER)
    except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
        pass  # gone, or slow, or stop(): close now
