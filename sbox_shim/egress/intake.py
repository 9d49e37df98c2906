"""How connections reach the egress proxy: its unix listener, and what each connection sends first.

A connection on the unix socket is either a client of its own (an HTTP request head follows) or a
handoff from the bridge: one message whose ancillary data carries a TCP socket the bridge
accepted inside the sandbox, and whose bytes are a header (`bridge.HANDOFF_PROXY`, or
`bridge.HANDOFF_FORWARD` + HOST:PORT + CRLF CRLF). The proxy then serves that TCP socket directly.

Everything here comes from the sandbox, which may be hostile: anything may connect to the unix
socket and send any bytes and any descriptors. A descriptor is used only if it came with a valid
header in the first message, alone, and is a connected TCP socket (not a pipe, a file, a listener,
a unix socket...); anything else is closed unread and unwritten. Descriptors sent later in a
connection never reach us: a plain recv() makes the kernel discard them. A handed-off socket is
shared with the sandbox, which may clear O_NONBLOCK on it at any time: until a tunnel is allowed it
is only used through `recv` and `sendall` here, which wait (with poll) until a deadline at most
whatever its flags say.
"""
from __future__ import annotations

import array
import os
import select
import socket
import stat
import time

from sbox_shim.egress import httphead
from sbox_shim.egress.bridge import HANDOFF_END
from sbox_shim.egress.bridge import HANDOFF_FORWARD
from sbox_shim.egress.bridge import HANDOFF_PROXY
from sbox_shim.egress.bridge import TAKEN

MAX_HEAD = 64 * 1024
MAX_HEADER = 512  # a handoff header
MAX_FDS = 4  # room for a few descriptors, so that extra ones are seen (and closed), not lost
_PREFIX = b"SBOX-FD "


class Declined(Exception):
    """A handoff that was not taken: the descriptors are closed, the connection should be."""


class Handoff:
    __slots__ = ("client", "target")

    def __init__(self, client: socket.socket, target: tuple[str, int] | None) -> None:
        self.client = client  # a connected TCP socket
        self.target = target  # a forward's HOST:PORT; None for the proxy port


def listen(path: str) -> socket.socket:
    """A unix listener at `path` that any uid may connect to (the sandbox may run
    as another uid); a stale socket left there is replaced."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o777)
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener


def receive(conn: socket.socket, deadline: float) -> Handoff | bytes:
    """The first message on a new unix connection: a handoff (answered TAKEN), or the first bytes
    of a plain client (b"" if it closed at once). Declined if it is a handoff we do not take.
    TimeoutError once `deadline` (time.monotonic()) passes."""
    while True:
        wait(conn, deadline)
        try:
            data, ancdata, flags, _ = conn.recvmsg(
                MAX_HEAD, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
            break
        except (BlockingIOError, InterruptedError):
            continue
    fds = _descriptors(ancdata)
    if not fds:
        if data.startswith(_PREFIX):
            raise Declined  # its descriptor was lost on the way: the bridge falls back
        return data
    client = None
    try:
        target = _parse_header(data)
        if len(fds) != 1 or flags & socket.MSG_CTRUNC:
            raise Declined
        client = _adopt(fds.pop())
        sendall(conn, TAKEN, deadline)
        return Handoff(client, target)
    except BaseException:
        if client is not None:
            client.close()
        raise
    finally:
        for fd in fds:
            os.close(fd)


def read_head(client: socket.socket, data: bytes, deadline: float) -> tuple[bytes, bytes] | None:
    """(request head, what came after it), or None if the client closed before its end. A head
    longer than MAX_HEAD comes back longer than MAX_HEAD, cut short. `data`: what was read."""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end + 4], data[end + 4:]
        if len(data) > MAX_HEAD:
            return data, b""
        chunk = recv(client, 65536, deadline)
        if not chunk:
            return None
        data += chunk


def recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    """sock.recv(size), waiting until `deadline` at most (MSG_DONTWAIT, whatever O_NONBLOCK)."""
    while True:
        try:
            return sock.recv(size, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            wait(sock, deadline)


def sendall(sock: socket.socket, data: bytes, deadline: float) -> None:
    """sock.sendall(data), waiting until `deadline` at most (MSG_DONTWAIT, whatever O_NONBLOCK)."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT):]
        except (BlockingIOError, InterruptedError):
            wait(sock, deadline, write=True)


def wait(sock: socket.socket, deadline: float, write: bool = False) -> None:
    """Until `sock` is readable (or writable), or has an error or an end; TimeoutError at
    `deadline`. A socket shut down from another thread (the proxy's stop) wakes it at once."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT if write else select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if poller.poll(left * 1000 + 1):
            return


def _descriptors(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
    return fds


def _parse_header(data: bytes) -> tuple[str, int] | None:
    """The forward's target, None for the proxy port; Declined if `data` is no header."""
    if data == HANDOFF_PROXY:
        return None
    if len(data) <= MAX_HEADER and data.startswith(HANDOFF_FORWARD) and data.endswith(HANDOFF_END):
        text = data[len(HANDOFF_FORWARD):-len(HANDOFF_END)]
        if text.isascii():
            target = httphead.split_authority(text.decode(), default_port=None)
            if target is not None:
                return target
    raise Declined


def _adopt(fd: int) -> socket.socket:
    """The connected TCP socket that `fd` is, else Declined (and `fd` closed)."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise Declined
        sock = socket.socket(fileno=fd)
    except (OSError, Declined):
        os.close(fd)
        raise Declined from None
    try:
        if (sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.type != socket.SOCK_STREAM or sock.proto != socket.IPPROTO_TCP
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            raise Declined
        sock.getpeername()  # connected (else OSError: ENOTCONN)
    except (OSError, Declined):
        sock.close()
        raise Declined from None
    return sock
