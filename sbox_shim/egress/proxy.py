"""The egress proxy: the only way out of a sandbox whose network is allowlisted.

It runs on the host, in a thread of the sbox process, and listens on a unix socket that is
mounted into the sandbox (where `bridge.py` exposes it on 127.0.0.1). It speaks just enough
HTTP/1.1 for package managers: `CONNECT host:port` tunnels and absolute-form plain-HTTP
requests. Every request goes through `policy.decide()`; allowed ones are connected to the
addresses pinned at plan time (names are never resolved again, so DNS rebinding cannot
redirect them), and a tunnel's TLS ClientHello must name the host that was CONNECTed to.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import os
import threading
from types import TracebackType
from typing import Any

from sbox_shim.egress import httphead
from sbox_shim.egress.policy import decide
from sbox_shim.egress.policy import EgressPolicy
from sbox_shim.egress.policy import normalize_host
from sbox_shim.egress.policy import parse_ip_literal
from sbox_shim.egress.sni import MAX_HELLO
from sbox_shim.egress.sni import parse_client_hello_sni
from sbox_shim.egress.sni import Peek
from sbox_shim.egress.relay import Origin
from sbox_shim.egress.relay import pump
from sbox_shim.egress.relay import Sink

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 60.0
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
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Listen on the unix socket, then serve from a daemon thread."""
        if self._loop is not None:
            raise RuntimeError("EgressProxy already started")
        loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_unix_server(self._handle, self.socket_path, limit=MAX_HEAD),
            )
            os.chmod(self.socket_path, 0o777)  # the sandbox may run as another uid
        except BaseException:
            loop.close()
            raise
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
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = self._server = None
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
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass

    def _record(self, kind: str, host: str, port: int, reason: str, hint: str = "",
                **extra: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        denial: Denial = {"time": now, "kind": kind, "host": host, "port": port,
                          "reason": reason, "hint": hint, **extra}
        with self._lock:
            if len(self._denials) < MAX_DENIALS:
                self._denials.append(denial)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (_Refused, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # refused and told, or the client went away
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs tasks that end cancelled, in some versions)
        except Exception:
            logger.exception("egress proxy: unexpected error")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            self._record("bad-request", "", 0, "head-too-large")
            writer.write(httphead.response(431, "Request Header Fields Too Large"))
            return await writer.drain()
        request = httphead.parse_request_head(head)

        if request is not None and request.method == "CONNECT":
            target = httphead.split_authority(request.target, default_port=None)
            if target is not None:
                host, port = target
                origin = await self._open("connect", writer, host, port)
                established = b"HTTP/1.1 200 Connection established\r\n\r\n"
                return await self._splice(
                    reader, writer, origin, to_client=established, vet_sni=host, port=port,
                )
        elif request is not None:
            url = httphead.split_absolute_url(request.target)
            if url is not None:
                origin = await self._open("http", writer, url.host, url.port)
                head = httphead.origin_form(request, url)
                return await self._splice(
                    reader, writer, origin, to_origin=head, vet_sni=None, port=url.port,
                )

        self._record("bad-request", "", 0, "malformed" if request is None else "unsupported")
        body = "sbox: the egress proxy takes CONNECT host:port or GET http://host/... requests\n"
        writer.write(httphead.response(400, "Bad Request", body))
        await writer.drain()

    async def _open(self, kind: str, writer: asyncio.StreamWriter, host: str, port: int) -> Origin:
        """Connect to the pinned addresses of an allowed (host, port); else answer and refuse."""
        decision = decide(self.policy, host, port)
        if not decision.allowed:
            self._record(kind, host, port, decision.reason, decision.hint)
            hint = f"; {decision.hint}" if decision.hint else ""
            body = f"sbox: egress to {host}:{port} refused ({decision.reason}){hint}\n"
            writer.write(httphead.response(403, "Forbidden", body))
            await writer.drain()
            raise _Refused
        loop = asyncio.get_running_loop()
        for address in decision.addresses:
            try:
                _, origin = await asyncio.wait_for(
                    loop.create_connection(lambda: Origin(writer), address, port),
                    self.connect_timeout,
                )
                return origin
            except (OSError, asyncio.TimeoutError):
                continue
        body = f"sbox: could not connect to {host}:{port}\n"
        writer.write(httphead.response(502, "Bad Gateway", body))
        await writer.drain()
        raise _Refused

    async def _splice(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, origin: Origin, *,
            to_client: bytes = b"", to_origin: bytes = b"", vet_sni: str | None, port: int,
    ) -> None:
        """Copy both ways, each until its end (half-close), or until either side fails."""
        try:
            writer.write(to_client)
            origin.write(to_origin)
            origin.start()
            if vet_sni is None:
                up = asyncio.ensure_future(pump(reader, origin))
            else:
                up = asyncio.ensure_future(self._vet_then_pump(reader, origin, vet_sni, port))
            try:
                await asyncio.gather(up, origin.done)
            finally:
                up.cancel()
                await asyncio.gather(up, return_exceptions=True)
        finally:
            origin.close()

    async def _vet_then_pump(
            self, reader: asyncio.StreamReader, origin: Sink, host: str, port: int,
    ) -> None:
        """Hold the client's first bytes until we know they are not TLS for another name."""
        data = b""
        while True:
            chunk = await reader.read(MAX_HELLO)
            data += chunk
            verdict = parse_client_hello_sni(data)
            if verdict is not Peek.INCOMPLETE or not chunk or len(data) > 4 * MAX_HELLO:
                break
        if not data:
            return await pump(reader, origin)  # closed without sending anything: half-close

        reason, extra = "", {}
        if verdict is Peek.INCOMPLETE:
            reason = "tls-incomplete"
        elif verdict is Peek.MALFORMED:
            reason = "tls-malformed"
        elif verdict is None and parse_ip_literal(normalize_host(host)) is None:
            reason = "sni-missing"  # clients send no SNI for IP addresses: fine for those
        elif isinstance(verdict, str) and normalize_host(verdict) != normalize_host(host):
            reason, extra = "sni-mismatch", {"sni": verdict[:253]}
        if reason:
            self._record("sni", host, port, reason, **extra)
            raise _Refused
        origin.write(data)
        await pump(reader, origin)

