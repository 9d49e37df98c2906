"""Canary listeners: record every connection (TCP) or datagram (UDP) that reaches them.

A sandboxed test asserts ``listener.hits == 0``; the host-side tests assert the opposite,
which proves the hostile fixtures would have been caught.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from types import TracebackType
from typing import TypeVar

_L = TypeVar("_L", bound="_Listener")


class _Listener:
    kind = socket.SOCK_STREAM

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, self.kind)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.hits = 0
        self.chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    @property
    def received(self) -> bytes:
        """Every byte received, in arrival order (connections/datagrams concatenated)."""
        with self._lock:
            return b"".join(self.chunks)

    def wait_for(self, hits: int = 1, data: bytes = b"", timeout: float = 5.0) -> bool:
        """Wait for ``hits`` hits and ``data`` among the bytes received; False on timeout."""
        deadline = time.monotonic() + timeout
        while not (self.hits >= hits and data in self.received):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class CanaryListener(_Listener):
    """TCP server: ``.hits`` counts accepted connections, ``.received`` holds their bytes."""

    def _start(self) -> None:
        self._sock.listen(16)
        self._spawn(self._accept_loop)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.1)
                if not ready:
                    continue
                conn, _ = self._sock.accept()
            except (OSError, ValueError):
                return
            with self._lock:
                self.hits += 1
            self._spawn(self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self.chunks.append(data)


class UdpCanaryListener(_Listener):
    """UDP socket: ``.hits`` counts datagrams, ``.datagrams`` keeps each one."""

    kind = socket.SOCK_DGRAM

    def _start(self) -> None:
        self._spawn(self._recv_loop)

    @property
    def datagrams(self) -> list[bytes]:
        with self._lock:
            return list(self.chunks)

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.1)
                if not ready:
                    continue
                data, _ = self._sock.recvfrom(65536)
            except (OSError, ValueError):
                return
            with self._lock:
                self.hits += 1
                self.chunks.append(data)
