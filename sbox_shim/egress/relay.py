"""Moving bytes through an open tunnel: in the kernel, off the event loop.

The proxy decides on the event loop (policy, connect); once a tunnel is allowed, it is two
connected sockets, and the event loop lets go of them. Each direction then runs in a thread of its
own with `os.splice` through a pipe (see `bridge.pipe`): no byte crosses into Python, no chunk
wakes the event loop. Each direction ends on its own (half-close: EOF is passed on with
shutdown(SHUT_WR)); an error in either tears both down.

The client's first bytes are special: the caller's `first()` reads and vets them (the SNI check)
in the client-to-origin thread, before that direction sends anything, while what the origin sends
already flows to the client (an origin may speak first). Threads are kept for reuse (`spawn`):
starting one costs more than a small request.

The data path is the bridge's, imported: bridge.py must stay standalone (it alone is mounted into
the sandbox), and this way both ends of the egress path share one implementation.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable
from typing import Optional

from sbox_shim.egress.bridge import abort
from sbox_shim.egress.bridge import pipe
from sbox_shim.egress.bridge import spawn

logger = logging.getLogger(__name__)

# Called in the relay's thread, with the client socket blocking: the bytes to send the origin
# before anything else, or None to refuse (both connections are then closed). It may read the
# client; it must not write to it.
First = Callable[[], Optional[bytes]]


async def relay(client: socket.socket, origin: socket.socket, first: First) -> None:
    """Relay both ways until both directions have ended, or one failed, or `first` refused.

    The event loop must no longer use either socket; the caller closes both afterwards. If this
    coroutine is cancelled, both sockets are shut down, and it ends (cancelled) only once the
    threads have let go of them, so that closing them then is safe.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def up() -> None:
        try:
            _up(client, origin, first)
        finally:
            try:
                loop.call_soon_threadsafe(finished)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    for sock in (client, origin):
        sock.setblocking(True)
    spawn(up)
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        abort(client, origin)  # both directions see an end or an error at once
        await done
        raise


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
        logger.exception("egress proxy: unexpected error")
        to_origin = None
    if to_origin is None:
        abort(client, origin)
    else:
        pipe(client, origin, to_origin)
    down.wait()
