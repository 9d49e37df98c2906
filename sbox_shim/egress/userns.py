"""A socket made in the network namespace of a sandbox sbox started as an ordinary user.

As root, sbox makes a socket in a sandbox's network namespace from a thread that enters it
(netns.made_in). An ordinary user cannot enter it from where it stands: entering a network
namespace takes CAP_SYS_ADMIN in the user namespace that owns it. But that user namespace is
bwrap's, made by a process of this very uid, and the same uid in a parent user namespace holds
every capability in a child one. (bwrap makes two: the outer one owns the network namespace, the
sandbox's processes live in one nested in it.) So a forked, single-threaded child of sbox enters
the owner first (where CAP_SYS_ADMIN and CAP_NET_BIND_SERVICE then hold), then the network
namespace, makes the sockets, passes them back over a socketpair (SCM_RIGHTS) and exits. sbox's
own process never changes namespace; the child opens no file and runs no code of the sandbox's.
`pid` is the sandbox's pid 1 as bwrap reports it (bwraprun's `ready`), while bwrap still waits on
its block fd: nothing of the command runs yet (and the checks below hold whatever the pid names).

What it enters is checked first, on descriptors that stay open: the user namespace is the one that
owns the sandbox's network namespace (NS_GET_USERNS), it is not sbox's own, it was made by sbox's
uid (NS_GET_OWNER_UID) and it is a descendant of sbox's own (NS_GET_PARENT, within MAX_DEPTH
levels); the network namespace is not sbox's own.
A docker container's namespaces (owned by the daemon's root) fail the check; then nothing is made.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import _socket
    from typing import Callable, Sequence

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1): the user namespace owning a namespace, as a new fd
NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2): a user namespace's parent (EPERM above our own)
NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4): the uid that made a user namespace
MAX_DEPTH = 32  # the kernel's own limit on nested user namespaces
MAX_SOCKETS = 16


def made_in(pid: int, makers: Sequence[Callable[[], _socket.socket]]) -> list[_socket.socket]:
    """The socket each of `makers` makes, made in the network namespace of process `pid` (a
    sandbox this process started) by a child that enters the user namespace owning it first.
    OSError if one cannot be made (then none is returned open)."""
    if not 0 < len(makers) <= MAX_SOCKETS:
        raise OSError("cannot make that many sockets in the sandbox")
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        user = _owner(net)
        try:
            _check(net, user)
            return _made_by_child(user, net, makers)
        finally:
            os.close(user)
    finally:
        os.close(net)


def _owner(ns: int) -> int:
    import fcntl

    return int(fcntl.ioctl(ns, NS_GET_USERNS))  # opened O_CLOEXEC by the kernel


def _same(fd: int, path: str) -> bool:
    theirs, ours = os.fstat(fd), os.stat(path)
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _check(net: int, user: int) -> None:
    """OSError unless `net` is not ours and `user` is a strict descendant of our user namespace,
    made by our uid."""
    import fcntl

    if _same(net, "/proc/thread-self/ns/net"):
        raise OSError("the sandbox shares sbox's own network namespace")
    if _same(user, "/proc/thread-self/ns/user"):
        raise OSError("the sandbox's network namespace belongs to sbox's own user namespace")
    owner = bytearray(4)
    fcntl.ioctl(user, NS_GET_OWNER_UID, owner)
    if int.from_bytes(owner, sys.byteorder) != os.geteuid():
        raise OSError("the sandbox's user namespace was made by another user")
    at = user
    try:
        for _ in range(MAX_DEPTH):
            parent = int(fcntl.ioctl(at, NS_GET_PARENT))  # EPERM once above our own: not a descendant
            if at != user:
                os.close(at)
            at = parent
            if _same(at, "/proc/thread-self/ns/user"):
                return
    finally:
        if at != user:
            os.close(at)
    raise OSError("the sandbox's user namespace is not one sbox's own holds")


def _made_by_child(user: int, net: int, makers: Sequence[Callable[[], _socket.socket]]) -> list[_socket.socket]:
    # _socket, not socket: its import (enums, selectors) would cost milliseconds before an
    # allowlisted step's command may start
    import _socket
    import array

    from sbox_shim.egress import netns

    netns.prepare()  # what setns takes is loaded here, not in the child
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover (the child: nothing returns from here)
            code = 1
            try:
                ours.close()
                netns._setns(user, CLONE_NEWUSER)
                netns._setns(net, CLONE_NEWNET)
                made = [make() for make in makers]
                theirs.sendmsg([b"made"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                            array.array("i", [s.fileno() for s in made]))])
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        _, status = os.waitpid(child, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise OSError("cannot make a socket in the sandbox's network namespace")
        fds = _received(ours, len(makers))
    finally:
        ours.close()
        theirs.close()
    return [_socket.socket(fileno=fd) for fd in fds]


def _received(sock: _socket.socket, count: int) -> list[int]:
    """The `count` descriptors the child sent: all of them, or OSError (and none left open)."""
    import _socket
    import array

    sock.setblocking(False)
    ints = array.array("i")
    size = _socket.CMSG_LEN(MAX_SOCKETS * ints.itemsize)
    try:
        _, ancillary, flags, _ = sock.recvmsg(16, size, _socket.MSG_CMSG_CLOEXEC)
    except BlockingIOError:
        raise OSError("cannot make a socket in the sandbox's network namespace") from None
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            ints.frombytes(data[:len(data) - len(data) % ints.itemsize])
    fds = list(ints)
    if len(fds) != count or flags & _socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise OSError("cannot make a socket in the sandbox's network namespace")
    return fds
