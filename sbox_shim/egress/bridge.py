"""The egress bridge: runs inside an allowlisted sandbox, in front of the user's command.

The sandbox's network namespace holds only loopback. This script binds ports on it and relays
them to sbox's egress proxy through the unix socket mounted into the sandbox:

- `--listen ADDR:PORT`: the HTTP proxy that HTTP_PROXY/HTTPS_PROXY point at; each connection is
  piped byte for byte to a new connection to the proxy.
- `--forward LOCAL=HOST:PORT`: a plain TCP port; each connection becomes `CONNECT HOST:PORT`
  through the proxy, for tools that never use a proxy for loopback addresses.

Then it runs the command, relays SIGINT/SIGTERM/SIGHUP/SIGQUIT to it and exits with its status
(128+N if a signal N killed it). Standalone on purpose: it runs as `python3 -I bridge.py` inside
the sandbox, where sbox itself is not importable. Linux only (sigwaitinfo).
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import signal
import socket
import stat
import sys
import threading
import time
from typing import Callable
from typing import NoReturn
from typing import Sequence

EXIT_BRIDGE = 125
CHUNK = 256 * 1024
MAX_HEAD = 64 * 1024
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
SI_KERNEL = 0x80  # si_code of a signal the terminal sent to its whole foreground group

Address = tuple[str, int]
Opener = Callable[[], tuple[socket.socket, bytes]]


class BridgeError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BridgeError(message)


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


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then half-close dst; on a reset, tear both down."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(client: socket.socket, opener: Opener) -> None:
    try:
        upstream, early = opener()
    except OSError:
        client.close()
        return
    try:
        if early:
            client.sendall(early)
        down = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        down.start()
        pipe(client, upstream)
        down.join()
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def serve(listener: socket.socket, opener: Opener) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.1)  # out of descriptors: let some connections finish
                continue
            return
        threading.Thread(target=relay, args=(client, opener), daemon=True).start()


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
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
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
    parser = _Parser(prog="bridge.py")
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
        servers: list[tuple[socket.socket, Opener]] = []
        for text in args.listen:
            servers.append((listen(parse_address(text)), functools.partial(dial, socket_path)))
        for text in args.forward:
            local, sep, remote = text.partition("=")
            if not sep:
                raise BridgeError(f"--forward {text!r} is not LOCAL=HOST:PORT")
            target = authority(parse_address(remote))
            connect = functools.partial(dial_connect, socket_path, target)
            servers.append((listen(parse_address(local)), connect))
    except (BridgeError, OSError) as e:
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else str(e)
        print(f"sbox: bridge: {message}", file=sys.stderr)
        return EXIT_BRIDGE

    for listener, opener in servers:
        threading.Thread(target=serve, args=(listener, opener), daemon=True).start()
    return run(command, watched)


if __name__ == "__main__":
    raise SystemExit(main())
