"""Moving bytes through an open tunnel, both ways, with backpressure and half-close.

The client side is an asyncio stream pair. The origin side is an `Origin` protocol: what the
origin sends is written straight to the client's writer, without a StreamReader in between
(downloads are the hot direction: this saves a copy and a task switch per chunk), and the
origin is paused while the client drains.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

CHUNK = 256 * 1024
HIGH_WATER = 1024 * 1024  # client-side buffer above which the origin is paused


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...


async def pump(reader: asyncio.StreamReader, sink: Sink) -> None:
    """Copy until the reader ends, then pass the end on (half-close)."""
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()


class Origin(asyncio.Protocol):
    """The connection to the origin server. Nothing it sends reaches the client before
    `start()`, which is called once the client has been answered. `done` resolves when the
    origin has sent everything (EOF), or fails when either connection is lost."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._draining: asyncio.Task[None] | None = None
        self._started = False
        self._early: list[bytes] = []  # what arrived before start(), with b"" for an EOF

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def start(self) -> None:
        self._started = True
        early, self._early = self._early, []
        for data in early:
            if data:
                self.data_received(data)
            else:
                self.eof_received()
        if self._draining is None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
        if self._transport is not None:
            self._transport.close()
        self._finish(None)
        if not self.done.cancelled():
            self.done.exception()  # retrieved: a lost connection is not worth a log line

    # Sink: what the client sends, towards the origin.
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        await self._writable.wait()
        if self.transport.is_closing():
            raise ConnectionResetError("the origin closed the connection")

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.transport.write_eof()

    # asyncio.Protocol: what the origin sends, towards the client.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Not paused here: before Python 3.11 the transport starts reading right after this
        # call, paused or not. Anything early is held back in data_received instead.

    def data_received(self, data: bytes) -> None:
        if not self._started:
            self._early.append(data)
            self.transport.pause_reading()
            return
        if self.client.transport.is_closing():
            self.transport.close()
            return
        self.client.write(data)
        if self._draining is None and self.client.transport.get_write_buffer_size() > HIGH_WATER:
            self.transport.pause_reading()
            self._draining = asyncio.ensure_future(self._drain_client())

    async def _drain_client(self) -> None:
        try:
            await self.client.drain()
        except OSError as e:  # the client is gone
            self._finish(e)
            self.transport.close()
        else:
            self.transport.resume_reading()
        finally:
            self._draining = None

    def eof_received(self) -> bool:
        if not self._started:
            self._early.append(b"")
            return True
        if self.client.can_write_eof() and not self.client.transport.is_closing():
            self.client.write_eof()
        self._finish(None)
        return True  # keep our side open: the client may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()  # wake a writer blocked in drain(); it sees the closed transport
        self._finish(exc or ConnectionResetError("the origin closed the connection"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _finish(self, exc: BaseException | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
