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
from typing import Any, Callable, Iterator

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GRACE = 2.0  # after the command's exit, for the container to end on its own
LOOK_EVERY = 0.05  # how often to look at the command's process while it runs


ATTACH = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}


def attach_and_run(client: Any, container: Any, tty: bool, timeout: float | None, *, sock: Any = None,
                   go: Callable[[], None] | None = None, started: Callable[[], None] | None = None) -> int:
    """Run the container with our stdio. `sock` and `go`: a container attached and started ahead,
    waiting for `go()` to let its command run. `started`: called once the command runs."""
    if sock is None:
        sock = container.attach_socket(params=ATTACH)
    raw: socket.socket = getattr(sock, "_sock", sock)
    stop = threading.Event()
    out = threading.Thread(target=_pump_out, args=(raw, tty), daemon=True)
    inp = threading.Thread(target=_pump_in, args=(raw, stop), daemon=True)
    with _relay_signals(container, tty), _raw_terminal(tty):
        if go is None:
            _start(container)
        else:
            go()
        out.start()
        inp.start()
        if started is not None:
            started()
        code = _wait(container, timeout)
        out.join(timeout=10)
        stop.set()
    try:
        raw.close()
    except OSError:
        pass
    return code


def _wait(container: Any, timeout: float | None) -> int:
    """The command's exit code, or 124 once `timeout` has passed (the container killed).

    The container ends when its init does; a command can stop that init (ptrace) and exit, and the
    wait would never return. So where the daemon's processes are ours to see, the command itself is
    watched: once it has exited, the container has GRACE seconds to end, then it is killed."""
    import time

    done = threading.Event()
    result: list[int | None] = []

    def wait() -> None:
        try:
            result.append(int(container.wait().get("StatusCode", 125)))
        except Exception:  # the daemon went away
            result.append(None)
        finally:
            done.set()

    threading.Thread(target=wait, daemon=True).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    command = _Command(container)
    try:
        while not done.wait(_step(command, deadline, time.monotonic())):
            code = _check(container, command, deadline, time.monotonic(), done)
            if code is not None:
                return code
    finally:
        command.close()
    if result[0] is None:
        _kill(container, "SIGKILL")
        sys.stderr.write("sbox: lost the Docker daemon while the command ran; the sandbox was killed\n")
        return 125
    return result[0]


def _step(command: _Command, deadline: float | None, now: float) -> float | None:
    """How long to wait for the container before looking again."""
    ends = [t for t in (deadline, None if command.exited_at is None else command.exited_at + GRACE) if t is not None]
    wait = max(0.0, min(ends) - now) if ends else None
    if command.watching:
        wait = LOOK_EVERY if wait is None else min(wait, LOOK_EVERY)
    return wait


def _check(container: Any, command: _Command, deadline: float | None, now: float, done: threading.Event) -> int | None:
    """The exit code once sbox has ended the container itself (a timeout, a lingering sandbox)."""
    if command.exited_at is not None and now >= command.exited_at + GRACE:
        sys.stderr.write(f"sbox: the sandbox did not end within {GRACE:g}s of the command's exit; it was killed\n")
        _kill(container, "SIGKILL")
        done.wait(GRACE)
        return command.code if command.code is not None else 128 + signal.SIGKILL
    if deadline is not None and now >= deadline:
        _kill(container, "SIGKILL")
        return 124
    command.look()
    return None


class _Command:
    """The command's process as the host sees it: the child of the container's init. Found only
    when the daemon runs in this pid namespace (the init's cgroup names the container)."""

    def __init__(self, container: Any) -> None:
        from sbox_shim.backends import procs

        self.procs = procs
        self.pidfd = -1
        self.pid = 0
        self.code: int | None = None
        self.exited_at: float | None = None
        try:
            self.init = container.init_pid()
            with open(f"/proc/{self.init}/cgroup", encoding="utf-8") as f:
                if container.id not in f.read():
                    self.init = 0
        except (Exception, OSError):
            self.init = 0

    @property
    def watching(self) -> bool:
        """Still to be found, or found and running."""
        return bool(self.init) and self.exited_at is None

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def look(self) -> None:
        import time

        if not self.watching:
            return
        if self.pidfd < 0:
            found = self.procs.children(self.init)
            if found:
                self.pid, self.pidfd = found[0], self.procs.pidfd(found[0])
            if self.pidfd < 0:
                return
        if self.pidfd >= 0 and self.exited_at is None and select.select([self.pidfd], [], [], 0)[0]:
            self.exited_at = time.monotonic()
            self.code = self.procs.exit_code(self.pid)
            self.close()


def _start(container: Any) -> None:
    from sbox_shim.errors import CommandNotFound, SandboxError

    try:
        container.start()
    except Exception as exc:
        text = getattr(exc, "explanation", None) or str(exc)
        if "executable file not found" in str(text):
            raise CommandNotFound(f"{container.command[-1]}: command not found in the sandbox") from None
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
            status = getattr(exc, "status_code", None)  # the SDK's APIError, or the helper's RemoteError
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
