"""The egress bridge: runs inside an allowlisted sandbox, in front of the user's command.

The sandbox's network namespace holds only loopback. This script binds ports on it and relays
them to sbox's egress proxy through the unix socket mounted into the sandbox:
- `--listen ADDR:PORT`: the HTTP proxy that HTTP_PROXY/HTTPS_PROXY point at;
- `--forward LOCAL=HOST:PORT`: a plain TCP port whose connections go to HOST:PORT through the
  proxy (as by `CONNECT`), for tools that never use a proxy for loopback addresses.
Each accepted connection goes to the proxy whole: its descriptor (SCM_RIGHTS), with a header
naming the port it came to; no byte of it crosses this process. If the proxy declines (a socket
that drops descriptors), it is piped instead: as is, or through a `CONNECT HOST:PORT`.
Then it runs the command, relays SIGINT/SIGTERM/SIGHUP/SIGQUIT to it and exits with its status
(128+N if a signal N killed it). Standalone on purpose: it runs as `python3 -I bridge.py` inside
the sandbox, where sbox itself is not importable. Linux only (sigwaitinfo).

Bytes move in the kernel (`os.splice` through a pipe; a user-space buffer before Python 3.10),
one thread per direction. The host-side proxy imports this data path too: pipe, abort, spawn.
"""
from __future__ import annotations

import array
import contextlib
import errno
import functools
import os
import queue
import signal
import socket
import stat
import sys
import threading
import time

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn, Sequence

EXIT_BRIDGE = 125
CHUNK = 256 * 1024  # the user-space buffer, where splice is missing
# At most this much per move, which is what a default pipe holds; a direction that has moved
# GROW bytes (a download) gets a pipe of BIG_PIPE, which halves the relay's CPU per byte on a
# loopback TCP-to-TCP download (fewer splices, fewer window updates and wake-ups) and raised its
# throughput by a quarter. Only then, and only BIG_PIPES at once: a user's pipes count against
# fs.pipe-user-pages-soft (16384 pages by default), past which the kernel gives every new pipe of
# that user, in any process of theirs, 2 pages.
MOVE = 64 * 1024
GROW = 1024 * 1024
BIG_PIPE = 1024 * 1024  # fs.pipe-max-size's default
BIG_PIPES = threading.BoundedSemaphore(16)  # 16 MiB of pipes: a quarter of the default limit
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python has from 3.10 on
NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # not a pair of files that can splice
MAX_IDLE = 64  # relay threads kept for the next connections
SPLICE = hasattr(os, "splice")
MAX_HEAD = 64 * 1024
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
SI_KERNEL = 0x80  # si_code of a signal the terminal sent to its whole foreground group
# A handoff: one sendmsg of a header and the descriptor; the proxy answers TAKEN and closes.
HANDOFF_PROXY = b"SBOX-FD PROXY\r\n\r\n"
HANDOFF_FORWARD = b"SBOX-FD FORWARD "  # + HOST:PORT + CRLF CRLF
HANDOFF_END = b"\r\n\r\n"
TAKEN = b"SBOX-FD TAKEN\r\n"
HANDOFF = threading.Event()  # set while handoffs are worth trying: until the proxy declines one
HANDOFF.set()

Address = tuple[str, int]
if TYPE_CHECKING:
    Opener = Callable[[], tuple[socket.socket, bytes]]
    Route = tuple[str, bytes, Opener]  # the proxy's socket, the handoff header, the fallback
    Job = tuple[Callable[[], None], threading.Event]
IDLE: queue.SimpleQueue[queue.SimpleQueue[Job]] = queue.SimpleQueue()  # idle relay threads' inboxes


class BridgeError(Exception):
    pass


def _parser() -> Any:
    """The command line's parser (argparse is imported here only: the host-side proxy imports
    this module for its data path, and has no use for it)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise BridgeError(message)

    return Parser(prog="bridge.py")


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise BridgeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def authority(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BridgeError(f"cannot listen on {authority(address)}: {e.strerror or e}") from None
    return sock


def dial(socket_path: str) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError:
        sock.close()
        raise
    return sock, b""


def dial_connect(socket_path: str, target: str) -> tuple[socket.socket, bytes]:
    """A tunnel to `target` through the proxy, and any bytes that came after its 200."""
    sock, _ = dial(socket_path)
    try:
        sock.settimeout(60)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk or len(head) > MAX_HEAD:
                raise OSError(errno.ECONNREFUSED, "the egress proxy closed the tunnel")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or status[1] != b"200":
            raise OSError(errno.ECONNREFUSED, f"the egress proxy refused {target}")
        sock.settimeout(None)
        return sock, rest
    except OSError:
        sock.close()
        raise


def hand_off(socket_path: str, client: socket.socket, header: bytes) -> bool | None:
    """Pass `client` itself to the proxy: True if it took it, False if it declined (nothing was
    read from `client`: pipe it instead), None if unknown or unreachable (drop it)."""
    try:
        sock, _ = dial(socket_path)
    except OSError:
        return None
    with sock:
        reply = b""
        try:
            sock.settimeout(60)
            fds = array.array("i", [client.fileno()])
            sock.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            while len(reply) <= len(TAKEN) and (chunk := sock.recv(64)):
                reply += chunk
        except socket.timeout:
            return None
        except OSError:
            pass
    return reply == TAKEN


def pipe(src: socket.socket, dst: socket.socket, early: bytes = b"") -> None:
    """Send `early`, copy src to dst until src ends, then half-close dst. On an error (a reset,
    or an abort() from elsewhere) tear both down, so that the other direction ends too."""
    try:
        if early:
            dst.sendall(early)
        if not (SPLICE and _splice(src.fileno(), dst.fileno())):
            buf = bytearray(CHUNK)
            while n := src.recv_into(buf):
                dst.sendall(memoryview(buf)[:n])
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        abort(src, dst)


def _splice(src: int, dst: int) -> bool:
    """Move src to dst in the kernel, via a pipe; False (nothing moved) if they cannot splice."""
    out, into = os.pipe()
    move = MOVE
    try:
        try:  # the first move tells whether these two can splice at all
            n = os.splice(src, into, MOVE)
        except OSError as e:
            if e.errno not in NO_SPLICE:
                raise
            return False
        moved = 0
        while n:
            left = n
            while left:
                left -= os.splice(out, dst, left)
            if moved < GROW <= moved + n:  # once
                move = _grow(into)
            moved += n
            n = os.splice(src, into, move)  # the pipe is empty here: this never waits on it
        return True
    finally:
        os.close(out)
        os.close(into)
        if move != MOVE:
            BIG_PIPES.release()


def _grow(pipe: int) -> int:
    """Make the (empty) pipe BIG_PIPE; how much a move may then take: MOVE if it stays small
    (BIG_PIPES are in use, or the kernel refused: past the user's soft limit, or above
    fs.pipe-max-size). Whoever gets more than MOVE releases BIG_PIPES once done."""
    import fcntl  # only now: a quarter of a millisecond, which small connections never need

    if not BIG_PIPES.acquire(blocking=False):
        return MOVE
    try:
        size: int = fcntl.fcntl(pipe, F_SETPIPE_SZ, BIG_PIPE)
    except OSError:
        size = 0
    if size <= MOVE:
        BIG_PIPES.release()
        return MOVE
    return size


def abort(*socks: socket.socket) -> None:
    """End a relay from any thread: both its directions see an end or an error at once."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def spawn(job: Callable[[], None]) -> threading.Event:
    """Run `job` in a thread of its own, an idle one if any (starting a thread can cost 0.1-1 ms,
    a handoff some 20 us); the event is set when it returns. RuntimeError if no thread starts."""
    done = threading.Event()
    try:
        IDLE.get_nowait().put((job, done))
    except queue.Empty:
        threading.Thread(target=_work, args=(job, done), name="sbox-relay", daemon=True).start()
    return done


def _work(job: Callable[[], None], done: threading.Event) -> None:
    inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
    while True:
        try:
            job()
        except Exception:
            sys.excepthook(*sys.exc_info())
        done.set()
        if IDLE.qsize() >= MAX_IDLE:
            return
        IDLE.put(inbox)
        job, done = inbox.get()


def relay(client: socket.socket, route: Route) -> None:
    """Hand one accepted client to the proxy; else relay it, each direction until its end."""
    socket_path, header, opener = route
    try:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a relay adds no delay
        if HANDOFF.is_set():
            taken = hand_off(socket_path, client, header)
            if taken is not False:
                return client.close()  # the proxy holds its own copy now (or may: drop it)
            HANDOFF.clear()  # declined: this proxy socket passes no descriptors
        upstream, early = opener()
    except OSError:
        return client.close()
    try:
        with contextlib.suppress(RuntimeError):  # no thread for the other direction: just close
            down = spawn(lambda: pipe(upstream, client, early))
            pipe(client, upstream)
            down.wait()
    finally:
        client.close()
        upstream.close()


def serve(listener: socket.socket, route: Route) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.1)  # out of descriptors: let some connections finish
                continue
            return
        try:
            spawn(functools.partial(relay, client, route))
        except RuntimeError:
            client.close()


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run(command: Sequence[str], watched: set[signal.Signals]) -> int:
    """Spawn the command, relay signals to it, reap, and return its exit code."""
    try:
        pid = os.posix_spawnp(
            command[0], list(command), os.environ,
            setsigmask=(), setsigdef=(*RELAYED, signal.SIGPIPE, signal.SIGXFSZ),
        )
    except FileNotFoundError:
        print(f"sbox: bridge: {command[0]}: command not found", file=sys.stderr)
        return 127
    except OSError as e:
        print(f"sbox: bridge: {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 126
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo != signal.SIGCHLD:
            if info.si_code != SI_KERNEL:  # the terminal already signalled the command too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, info.si_signo)
            continue
        while True:  # reap everything: inside a PID namespace we may be its init
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return EXIT_BRIDGE
            if done == 0:
                break
            if done == pid:
                return exit_code(status)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("sbox: bridge: usage: bridge.py --socket PATH [--listen ADDR:PORT] "
              "[--forward LOCAL=HOST:PORT] -- CMD [ARGS...]", file=sys.stderr)
        return EXIT_BRIDGE
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    parser = _parser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--forward", action="append", default=[])

    watched = {*RELAYED, signal.SIGCHLD}
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Blocked before any thread starts, so every thread inherits the mask and only
    # sigwaitinfo() in run() sees these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        args = parser.parse_args(options)
        socket_path: str = args.socket
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            raise BridgeError(f"{socket_path} is not a socket")
        servers: list[tuple[socket.socket, Route]] = []
        for text in args.listen:
            route: Route = (socket_path, HANDOFF_PROXY, functools.partial(dial, socket_path))
            servers.append((listen(parse_address(text)), route))
        for text in args.forward:
            local, sep, remote = text.partition("=")
            if not sep:
                raise BridgeError(f"--forward {text!r} is not LOCAL=HOST:PORT")
            target = authority(parse_address(remote))
            header = HANDOFF_FORWARD + target.encode() + HANDOFF_END
            connect = functools.partial(dial_connect, socket_path, target)
            servers.append((listen(parse_address(local)), (socket_path, header, connect)))
    except (BridgeError, OSError) as e:
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else str(e)
        print(f"sbox: bridge: {message}", file=sys.stderr)
        return EXIT_BRIDGE

    for listener, route in servers:
        threading.Thread(target=serve, args=(listener, route), daemon=True).start()
    return run(command, watched)


if __name__ == "__main__":
    raise SystemExit(main())
