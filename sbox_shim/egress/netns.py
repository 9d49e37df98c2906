"""The sandbox's proxy ports, listened on from the host: no bridge inside the sandbox.

An allowlisted sandbox has a network namespace of its own that holds only loopback. Instead of
starting bridge.py inside it (a Python interpreter per step, and a hop for every connection), sbox
can make the listening sockets itself: a short-lived thread of the host process enters the
sandbox's network namespace (setns on /proc/PID/ns/net of bwrap's pid 1, while bwrap waits on its
--block-fd, before the command runs), creates and binds them there, and ends. A socket stays in
the namespace it was made in, so the proxy then accepts, on the host, the sandbox's connections to
its own 127.0.0.1:3128 (and to each forwarded registry port): each accepted socket is a plain TCP
connection, whose other end alone the sandbox holds. Nothing of the host is mounted in, no
descriptor is passed in or out, and no thread of sbox other than that one ever changes namespace.

Entering a namespace takes CAP_SYS_ADMIN in the user namespace that owns it (bwrap's, a child of
ours): root has it (`usable()`). An ordinary user has it once in that user namespace, which only a
single-threaded process may enter: a forked child of sbox does, makes the listeners and passes
them back (egress/userns.py), so `enterable()` holds for both. Where that child cannot enter (a
kernel or security module that refuses it), the step's sandbox is killed before its command ran,
sbox remembers it in its state directory (`refused_here`) and runs the step again with the bridge
inside, as every step on this machine from then on.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import _socket
    import socket
    from typing import Any, Callable, Sequence, TypeVar

    Made = TypeVar("Made", bound=_socket.socket)
# socket and threading are imported where used: `usable()` decides, before bwrap starts, whether
# a step runs this way, and should not cost their imports (milliseconds) there. Sockets made for
# a sandbox about to run are made with _thread and _socket, which cost next to nothing (`listen_raw`).

CLONE_NEWNET = 0x40000000
CAP_SYS_ADMIN = 21

Address = tuple[str, int]


def usable() -> bool:
    """Can this process enter the network namespace of a sandbox it starts? (root with
    CAP_SYS_ADMIN: a capability in our user namespace holds in the child ones bwrap makes)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


REFUSED = "userns-refused"  # in the state directory's egress/: a child could not enter bwrap's user namespace


def enterable(state_dir: str | None) -> bool:
    """Can sbox make listeners in the network namespace of a bwrap sandbox it starts? Root: from a
    thread (`usable`); an ordinary user: from a child that enters bwrap's user namespace first,
    unless that was refused here before (`refused_here`)."""
    if usable():
        return True
    return os.geteuid() != 0 and not (state_dir and os.path.exists(os.path.join(state_dir, "egress", REFUSED)))


def refused_here(state_dir: str, why: str) -> None:
    """Remember that a child of sbox could not enter a sandbox's user namespace on this machine."""
    directory = os.path.join(state_dir, "egress")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(os.path.join(directory, REFUSED), "w", encoding="utf-8") as f:
            f.write(why + "\n")
    except OSError:
        pass


def listen_in(pid: int, addresses: Sequence[Address]) -> list[socket.socket]:
    """A TCP listener on each address, made in the network namespace of process `pid`, which
    must not be ours. OSError if one cannot be made (then none is returned open)."""
    import socket  # noqa: F401 (loaded here, not by the thread that enters the namespace)

    return made_in(pid, [_listener(address) for address in addresses])


def made_in(pid: int, makers: Sequence[Callable[[], Made]]) -> list[Made]:
    """The socket each of `makers` makes, made in the network namespace of process `pid`, which
    must not be ours. OSError if one cannot be made (then none is returned open). The makers'
    modules are loaded by the caller, not by the thread that enters the namespace."""
    import _thread

    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    made: list[Made] = []
    failed: list[OSError] = []
    done = _thread.allocate_lock()
    done.acquire()

    def enter_and_make() -> None:  # a thread of its own, which ends in the sandbox's namespace
        try:
            theirs, ours = os.fstat(ns), os.stat("/proc/thread-self/ns/net")
            if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                raise OSError(f"process {pid} shares sbox's own network namespace")
            _setns(ns, CLONE_NEWNET)
            for make in makers:
                made.append(make())
        except OSError as e:
            failed.append(e)
        finally:
            done.release()

    try:  # a bare thread: threading's import (functools, collections) costs milliseconds
        _thread.start_new_thread(enter_and_make, ())
        done.acquire()
    finally:
        os.close(ns)
    if failed or len(made) != len(makers):
        for sock in made:
            sock.close()
        raise failed[0] if failed else OSError("cannot listen in the sandbox")
    return made


def _listener(address: Address) -> Callable[[], socket.socket]:
    """What makes a listener on `address` (functools.partial, without functools' import: it
    costs milliseconds before an allowlisted step's sandbox starts)."""
    return lambda: _listen(address)


def _listen(address: Address) -> socket.socket:
    import socket

    return _listening(socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM),
                      address)


def _listening(sock: Made, address: Address) -> Made:
    """`sock` bound to `address` and listening; closed if it cannot be."""
    try:
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def prepare() -> None:
    """Load what entering a namespace takes (libc's setns before Python 3.12), ahead of time: the
    warm path does it while bwrap sets the sandbox up."""
    if not hasattr(os, "setns"):
        _libc_setns()


_SETNS: list[Any] = []  # libc's setns, found once (prepare), used by each _setns


def _libc_setns() -> Any:
    """libc's setns(2) through _ctypes, ctypes' own C module: the ctypes package around it costs
    about 4 ms to import (struct, its endian classes, dozens of types made at import), where
    _ctypes costs about 0.5 and a call needs only one function type."""
    if not _SETNS:
        import _ctypes

        class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
            _type_ = "i"

        class SetNs(_ctypes.CFuncPtr):  # ctypes.CFUNCTYPE(c_int, c_int, c_int, use_errno=True)
            _argtypes_ = (Int, Int)
            _restype_ = Int
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

        _SETNS.append(SetNs(_ctypes.dlsym(_ctypes.dlopen(None), "setns")))  # type: ignore[arg-type]  # None: the program
    return _SETNS[0]


def _setns(fd: int, kind: int) -> None:
    setns: Callable[[int, int], None] | None = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        return setns(fd, kind)
    if _libc_setns()(fd, kind) != 0:
        import _ctypes

        error = _ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return None


def serve(proxy: Any, pid: int, port: int, forwards: Sequence[Address]) -> str:
    """Make the sandbox's proxy `port` (plan.PROXY_PORT) and its forwarded registry ports (the
    Network's `forwards`) on 127.0.0.1 in the namespace of `pid`, and have `proxy` (an
    EgressProxy) serve them: "" once done, else why the sandbox must not run."""
    try:
        made = listen(pid, port, forwards)
    except OSError as e:
        return refused(e)
    for listener, target in made:
        proxy.serve(listener, target)
    return ""


def listen(pid: int, port: int, forwards: Sequence[Address]) -> list[tuple[socket.socket, Address | None]]:
    """`serve`'s listeners, each with what its connections are served as (None: proxy clients;
    a forward's target). OSError if one cannot be made (then none is left open)."""
    targets: list[Address | None] = [None, *forwards]
    addresses = [("127.0.0.1", port), *(("127.0.0.1", p) for _, p in forwards)]
    return list(zip(listen_in(pid, addresses), targets))


def listen_raw(pid: int, port: int, forwards: Sequence[Address]) -> list[tuple[int, Address | None]]:
    """`listen`, the listeners as bare descriptors: made with _socket, whose import costs next to
    nothing where socket's costs milliseconds (its enums); `socket.socket(fileno=fd)` takes one."""
    import _socket  # noqa: F401 (loaded here, not by the thread that enters the namespace)

    targets: list[Address | None] = [None, *forwards]
    addresses = [("127.0.0.1", port), *(("127.0.0.1", p) for _, p in forwards)]
    makers = [_raw_listener(address) for address in addresses]
    made: Sequence[_socket.socket]
    if usable():
        made = made_in(pid, makers)
    else:  # an ordinary user: a child enters bwrap's user namespace first
        from sbox_shim.egress import userns

        made = userns.made_in(pid, makers)
    return [(sock.detach(), target) for sock, target in zip(made, targets)]


def _raw_listener(address: Address) -> Callable[[], _socket.socket]:
    def make() -> _socket.socket:
        import _socket

        return _listening(_socket.socket(_socket.AF_INET6 if ":" in address[0] else _socket.AF_INET,
                                         _socket.SOCK_STREAM), address)

    return make


def refused(error: OSError) -> str:
    return f"sbox could not listen in the sandbox's network namespace: {error.strerror or error}"
