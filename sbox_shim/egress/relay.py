"""Moving bytes through an open tunnel: in the kernel, one thread per direction.

The proxy decides in a connection's thread (policy, connect); once a tunnel is allowed, it is two
connected sockets. Each direction then runs in a thread of its own (the connection's, and one
more) with `os.splice` through a pipe (see `bridge.pipe`): no byte crosses into Python. Each direction ends on its own (half-close: EOF is passed on with
shutdown(SHUT_WR)); an error in either tears both down.

The client's first bytes are special: the caller's `first()` reads and vets them (the SNI check)
in the client-to-origin thread, before that direction sends anything, while what the origin sends
already flows to the client (an origin may speak first). Threads are kept for reuse (`spawn`):
starting one costs more than a small request.

A plain-HTTP request gets `Once` instead: its head and body go to the origin, and nothing the
client sends after them, so that one connection carries one checked request (a second one, kept
alive or pipelined, would reach the same address whatever its Host). Once the origin has
answered and closed (the proxy asks it to: `Connection: close`), the client is closed too.

The data path is the bridge's, imported: bridge.py must stay standalone (it alone is mounted into
the sandbox), and this way both ends of the egress path share one implementation.
"""
from __future__ import annotations

import socket
import time

from sbox_shim.egress.bridge import abort
from sbox_shim.egress.bridge import pipe
from sbox_shim.egress.bridge import spawn

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Union

LINGER = 2.0  # seconds to discard what a client still sends after its one request (see _linger)
MAX_DISCARD = 64 * 1024


class Once:
    """One request: send `data`, then copy exactly `more` bytes of the client (the rest of its
    body), then read nothing more from it."""
    __slots__ = ("data", "more")

    def __init__(self, data: bytes, more: int) -> None:
        self.data = data
        self.more = more


# Called in the relay's thread, with the client socket blocking: the bytes to send the origin
# before anything else (then the rest of the client, or with Once just its one request), or None
# to refuse (both connections are then closed). It may read the client; it must not write to it.
if TYPE_CHECKING:
    First = Callable[[], Union[bytes, Once, None]]


def relay(client: socket.socket, origin: socket.socket, first: First) -> None:
    """Relay both ways until both directions have ended, or one failed, or `first` refused: the
    client to the origin in this thread, the origin to the client in another. The caller closes
    both sockets afterwards; `abort` from any thread ends the relay at once."""
    for sock in (client, origin):
        sock.setblocking(True)
    _up(client, origin, first)


def _up(client: socket.socket, origin: socket.socket, first: First) -> None:
    """Client to origin, in this thread, once `first` allows; origin to client, in another,
    from the start. Returns when both have ended."""
    try:
        down = spawn(lambda: pipe(origin, client))
    except RuntimeError:  # out of threads: refuse this one tunnel
        return abort(client, origin)
    try:
        to_origin = first()
    except OSError:  # the client is gone
        to_origin = None
    except Exception:
        import logging  # only now: it costs milliseconds to import

        logging.getLogger(__name__).exception("egress proxy: unexpected error")
        to_origin = None
    if to_origin is None:
        abort(client, origin)
    elif isinstance(to_origin, Once):
        try:
            _copy(client, origin, to_origin)
        except OSError:
            abort(client, origin)
        down.wait()
        return _linger(client)
    else:
        pipe(client, origin, to_origin)
    down.wait()


def _copy(client: socket.socket, origin: socket.socket, once: Once) -> None:
    """Send `once.data`, then the next `once.more` bytes of the client, and stop."""
    origin.sendall(once.data)
    left = once.more
    buf = bytearray(min(left, 256 * 1024))
    while left:
        n = client.recv_into(buf, min(left, len(buf)))
        if not n:
            raise ConnectionResetError("the client ended inside its request body")
        origin.sendall(memoryview(buf)[:n])
        left -= n


def _linger(client: socket.socket) -> None:
    """The answer has gone to the client and its sending side is shut: discard what it still
    sends (a next request), for a while, so that closing it sends no reset, which could destroy
    the answer before the client has read it."""
    deadline = time.monotonic() + LINGER
    left = MAX_DISCARD
    try:
        while left > 0 and (wait := deadline - time.monotonic()) > 0:
            client.settimeout(wait)
            chunk = client.recv(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
    except OSError:
        pass  # gone or slow: close now
