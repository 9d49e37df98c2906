"""Attach our stdio to a Docker container: stdin, TTY, demuxed output, signals, exit code."""
from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def attach_and_run(client: Any, container: Any, tty: bool, timeout: float | None) -> int:
    sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw: socket.socket = getattr(sock, "_sock", sock)
    stop = threading.Event()
    out = threading.Thread(target=_pump_out, args=(raw, tty), daemon=True)
    inp = threading.Thread(target=_pump_in, args=(raw, stop), daemon=True)
    with _relay_signals(container, tty), _raw_terminal(tty):
        _start(container)
        out.start()
        inp.start()
        try:
            status = container.wait(timeout=timeout) if timeout else container.wait()
            code = int(status.get("StatusCode", 125))
        except Exception:  # timed out: requests raises its own ReadTimeout / ConnectionError
            _kill(container, "SIGKILL")
            code = 124
        out.join(timeout=10)
        stop.set()
    try:
        raw.close()
    except OSError:
        pass
    return code


def _start(container: Any) -> None:
    from sbox_shim.errors import CommandNotFound, SandboxError

    try:
        container.start()
    except Exception as exc:
        text = getattr(exc, "explanation", None) or str(exc)
        if "executable file not found" in str(text):
            raise CommandNotFound(f"{container.attrs['Config']['Cmd'][-1]}: command not found in the sandbox") from None
        raise SandboxError(f"docker could not start the sandbox: {str(text).splitlines()[0][:200]}") from None


def _pump_out(raw: socket.socket, tty: bool) -> None:
    targets = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    try:
        if tty:
            while chunk := raw.recv(65536):
                targets[1].write(chunk)
                targets[1].flush()
            return
        while header := _read_exact(raw, 8):
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = _read_exact(raw, size)
            target = targets.get(stream, targets[2])
            target.write(payload)
            target.flush()
    except (OSError, ValueError):
        return


def _read_exact(raw: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = raw.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _pump_in(raw: socket.socket, stop: threading.Event) -> None:
    """Copy our stdin into the container; on EOF half-close so the command sees EOF too."""
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        fd = -1
    try:
        while fd >= 0 and not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _kill(container: Any, sig: str, attempts: int = 3) -> None:
    """Send `sig` to the container, trying again if the daemon call fails: a relayed SIGTERM that
    is silently lost leaves the command running. A container that is already gone is no failure."""
    import time

    for attempt in range(attempts):
        try:
            container.kill(signal=sig)
            return
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (404, 409):  # gone, or not running any more
                return
            if attempt == attempts - 1:
                sys.stderr.write(f"sbox: could not send {sig} to the sandbox: {str(exc).splitlines()[0][:200]}\n")
                return
            time.sleep(0.2)


@contextmanager
def _relay_signals(container: Any, tty: bool) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def relay(signum: int, _frame: object) -> None:
        threading.Thread(target=_kill, args=(container, signal.Signals(signum).name), daemon=True).start()

    def resize(_signum: int, _frame: object) -> None:
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
            container.resize(height=rows, width=cols)
        except Exception:
            pass

    previous = {s: signal.signal(s, relay) for s in RELAYED}
    if tty:
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _raw_terminal(tty: bool) -> Iterator[None]:
    if not tty:
        yield
        return
    import termios
    import tty as ttymod

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ttymod.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
