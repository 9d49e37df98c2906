"""Running bwrap: the process side of the bubblewrap backend.

bwrap's own processes: the monitor we start (outside), pid 1 of the sandbox (bwrap's reaper) and
the command, pid 2. `--die-with-parent` chains them: when we die the monitor dies, when the monitor
exits pid 1 dies, and with it the whole pid namespace, daemonised children included.

The monitor ends when pid 1 reports the command's exit, which a stopped pid 1 (ptrace, SIGSTOP)
never does. So we watch the command ourselves (a pidfd): once it has exited, whether or not that
was reported, the sandbox has GRACE seconds to end; then we kill the monitor and pid 1, and with
pid 1 everything in the namespace, stopped or not.

bwrap does not forward signals, so we do: to the command itself, found through the pid namespace.
`--json-status-fd` tells setup failures (no `exit-code` line) from the command's own exit status.

sbox's warm path (compiled.py) runs a cached plan through this module alone, so it imports only
what the interpreter has loaded already or builds in: no subprocess, signal, json or typing, each
of which costs milliseconds on every command.
"""
from __future__ import annotations

import posix

from sbox_shim.backends import procs

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with types
    from typing import Callable, Sequence
else:
    import _signal  # built in; `signal` would import enum, functools and collections

RELAYED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH)
DEFAULT_IN_CHILD = (_signal.SIGPIPE, _signal.SIGXFSZ)  # Python ignores these; the command must not
KILL_GRACE = 5.0  # after a timeout's SIGTERM, before SIGKILL
GRACE = 2.0  # after the command's exit, for the sandbox to end on its own
FIND_EVERY = 0.05  # how often to look for the command's pid until it is found
HOST_DNS = ("/etc/resolv.conf", "/etc/hosts")


def file_data(files: Sequence[tuple[str, str, str]], host_dns: bool) -> list[tuple[str, bytes]]:
    """The bytes of each file sbox puts in, as (target, content, source): generated content, or
    the host's file `source` (content ""), read now. With the host's network (`network: on`) names resolve as on the host: its
    resolv.conf and hosts are read now too (often through a link into /run), never bound."""
    out = []
    for target, content, source in files:
        data = content.encode()
        if host_dns and target in HOST_DNS:
            source = target
        if source:
            try:
                with open(source, "rb") as f:
                    data = f.read()
            except OSError:
                pass
        out.append((target, data))
    return out


def memfd(name: str, data: bytes) -> int:
    """An anonymous file holding `data`, positioned at its start (close-on-exec until passed on)."""
    fd = posix.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]
    posix.lseek(fd, 0, 0)
    return fd


def data_fds(files: Sequence[tuple[str, str, str]], host_dns: bool) -> list[int]:
    """`file_data` as memfds, in that order: the fds bwrap's --file/--ro-bind-data options name."""
    fds: list[int] = []
    try:
        for target, data in file_data(files, host_dns):
            fds.append(memfd("sbox" + target.replace("/", "-"), data))
    except BaseException:
        for fd in fds:
            posix.close(fd)
        raise
    return fds


class Status:
    """bwrap's `--json-status-fd`: `{"child-pid": N, ...}` once cloned, `{"exit-code": N}` only if
    the command was exec'd. Read without blocking whenever we need it (a signal, the end).

    bwrap writes one flat object per line with integer values; the two keys are read directly.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.child_pid: int | None = None
        self.exit_code: int | None = None
        self._buf = b""
        posix.set_blocking(fd, False)

    def poll(self, wait: float = 0.0) -> None:
        while self.fd >= 0:
            if wait and not _readable(self.fd, wait):
                return
            try:
                chunk = posix.read(self.fd, 65536)
            except BlockingIOError:
                return
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            if not chunk:  # end of file: bwrap has exited
                lines.append(self._buf)
                self._buf = b""
                self.close()
            for line in lines:
                self._parse(line)

    def _parse(self, line: bytes) -> None:
        pid, code = _integer(line, b'"child-pid"'), _integer(line, b'"exit-code"')
        if pid is not None:
            self.child_pid = pid
        if code is not None:
            self.exit_code = code

    def finish(self) -> None:
        """After bwrap has exited: read what it wrote (its last line comes before its exit)."""
        self.poll()
        self.close()

    def command_pid(self) -> int | None:
        """The command's pid as the host sees it: the child of bwrap's pid 1 that is pid 2 inside."""
        self.poll()
        if self.child_pid is None:
            return None
        for pid in procs.children(self.child_pid):
            if procs.ns_pid(pid) == 2:
                return pid
        return None

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1


def _readable(fd: int, wait: float) -> bool:
    import select  # only when waiting: loading it costs more than the warm path's checks

    return bool(select.select([fd], [], [], wait)[0])


def _integer(line: bytes, key: bytes) -> int | None:
    at = line.find(key)
    if at < 0:
        return None
    rest = line[at + len(key):].lstrip()
    if not rest.startswith(b":"):
        return None
    digits = rest[1:].lstrip().split(b",")[0].split(b"}")[0].strip()
    return int(digits) if digits.isdigit() else None


def command_line(path: str, options: Sequence[str], argv: Sequence[str]) -> tuple[list[str], list[int], Status]:
    """bwrap's command line, the fds to pass it (close them once it has started), its status.

    The options go through a memfd and `--args`: environment values stay out of /proc/PID/cmdline.
    """
    args_fd = memfd("sbox-bwrap-args", b"".join(o.encode() + b"\0" for o in options))
    status_r, status_w = posix.pipe()
    command = [path, "--args", str(args_fd), "--json-status-fd", str(status_w), "--", *argv]
    return command, [args_fd, status_w], Status(status_r)


def spawn(command: Sequence[str], keep: Sequence[int], nproc: int | None = None) -> int:
    """Start bwrap in a session of its own with an empty environment, passing only `keep` beyond
    stdio: a terminal's ^C reaches sbox alone, and sbox relays it. Returns the pid."""
    for fd in keep:
        posix.set_inheritable(fd, True)
    leaked = [fd for fd in _open_fds() if fd > 2 and fd not in keep and _inheritable(fd)]
    if nproc is None:
        return posix.posix_spawn(command[0], list(command), {}, setsid=True, setsigdef=DEFAULT_IN_CHILD,
                              file_actions=[(posix.POSIX_SPAWN_CLOSE, fd) for fd in leaked])
    return _fork_with_nproc(command, leaked, nproc)


def _inheritable(fd: int) -> bool:
    try:
        return posix.get_inheritable(fd)
    except OSError:  # not open (the listing's own fd)
        return False


def _open_fds() -> list[int]:
    try:
        return [int(name) for name in posix.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


def _fork_with_nproc(command: Sequence[str], leaked: Sequence[int], nproc: int) -> int:
    """RLIMIT_NPROC has to be set between fork and exec: the hard limit cannot be raised again."""
    import resource

    pid = posix.fork()
    if pid == 0:  # the child: system calls only, then exec
        try:
            posix.setsid()
            for fd in leaked:
                posix.close(fd)
            for signum in DEFAULT_IN_CHILD:
                _signal.signal(signum, _signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            posix.execve(command[0], list(command), {})
        finally:
            posix._exit(127)
    return pid


def run(path: str, options: Sequence[str], argv: Sequence[str], pass_fds: Sequence[int] = (),
        timeout: float | None = None, nproc: int | None = None,
        warn: Callable[[str], object] | None = None) -> tuple[int, Status | None]:
    """Run bwrap in the foreground, relaying signals to the command; return (exit code, status).

    `pass_fds` (the data files the options name) are closed here once bwrap has them. The status
    is None when sbox ended the sandbox itself (a timeout, exit 124) or bwrap was killed.
    Raises OSError when bwrap cannot be started at all.
    """
    command, fds, status = command_line(path, options, argv)
    started: list[int] = []
    pending: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        if not started:
            pending.append(signum)  # before bwrap even started: it will not be set up at all
            return
        target = status.command_pid()
        try:
            if target is not None:
                posix.kill(target, signum)
            elif signum != _signal.SIGWINCH:
                posix.kill(started[0], signum)  # still setting up: the sandbox goes, nothing has run
        except ProcessLookupError:
            pass

    previous = _install(relay)
    try:
        started.append(spawn(command, [*fds, *pass_fds], nproc))
    except BaseException:
        _restore(previous)
        status.close()
        raise
    finally:
        for fd in [*fds, *pass_fds]:
            posix.close(fd)
    pid = started[0]
    for signum in pending:
        posix.kill(pid, signum)
    try:
        code, torn = _watch(pid, status, timeout)
        if code is None:
            _stop(pid, status)
            if warn:
                warn(f"sbox: timed out after {timeout:g}s; the sandbox was killed\n")
            status.close()
            return 124, None
    finally:
        _restore(previous)
    if torn:
        if warn:
            warn(f"sbox: the sandbox did not end within {GRACE:g}s of the command's exit; it was killed\n")
        status.close()
        return (status.exit_code if status.exit_code is not None else 128 + _signal.SIGKILL), status
    status.finish()
    if code < 0:
        return 128 - code, None
    return (status.exit_code if status.exit_code is not None else code), status


def _watch(pid: int, status: Status, timeout: float | None) -> tuple[int | None, bool]:
    """Wait for bwrap: (its exit code, negative if killed by that signal, or None once `timeout`
    has passed; whether sbox tore the sandbox down because it outlived the command by GRACE)."""
    import select
    import time

    monitor = posix.pidfd_open(pid)
    command = sandbox = -1  # pidfds of the command and of pid 1, once known
    deadline = None if timeout is None else time.monotonic() + timeout
    ended: float | None = None  # when the command was seen to have exited
    try:
        while True:
            if sandbox < 0 and status.child_pid is not None:
                sandbox = procs.pidfd(status.child_pid)
            found = status.command_pid() if command < 0 and ended is None else None
            if found is not None:
                command = procs.pidfd(found)
            if ended is None and (status.exit_code is not None or command >= 0 and select.select([command], [], [], 0)[0]):
                ended = time.monotonic()
                if status.exit_code is None and found is not None:
                    status.exit_code = procs.exit_code(found)
            limits = [t for t in (deadline, None if ended is None else ended + GRACE) if t is not None]
            wait = max(0.0, min(limits) - time.monotonic()) if limits else None
            if command < 0 and ended is None:
                wait = FIND_EVERY if wait is None else min(wait, FIND_EVERY)
            fds = [fd for fd in (monitor, status.fd, -1 if ended is not None else command) if fd >= 0]
            if monitor in select.select(fds, [], [], wait)[0]:
                return posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1]), False
            status.poll()
            now = time.monotonic()
            if ended is not None and now >= ended + GRACE:
                _kill(pid, sandbox)
                return posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1]), True
            if deadline is not None and now >= deadline:
                return None, False
    finally:
        for fd in (monitor, command, sandbox):
            if fd >= 0:
                posix.close(fd)


def _kill(pid: int, sandbox: int) -> None:
    """SIGKILL bwrap's monitor (its whole process group), then the sandbox's pid 1 and with it
    every process in the pid namespace; a stopped process dies of SIGKILL all the same."""
    try:
        posix.killpg(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    if sandbox >= 0:
        try:
            _signal.pidfd_send_signal(sandbox, _signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(pid: int, timeout: float | None) -> int | None:
    """bwrap's exit code (negative: killed by that signal), or None once `timeout` has passed."""
    if timeout is None:
        return posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1])
    import time

    pidfd = posix.pidfd_open(pid)
    try:
        deadline = time.monotonic() + timeout
        while not _readable(pidfd, max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                return None
        return posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1])
    finally:
        posix.close(pidfd)


def _stop(pid: int, status: Status) -> None:
    """SIGTERM to the command, then SIGKILL to bwrap (which takes the whole pid namespace along)."""
    target = status.command_pid()
    if target is not None:
        try:
            posix.kill(target, _signal.SIGTERM)
            if _wait(pid, KILL_GRACE) is not None:
                return
        except ProcessLookupError:
            pass
    try:
        posix.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    posix.waitpid(pid, 0)


def _install(handler: Callable[[int, object], None]) -> dict[int, object]:
    previous: dict[int, object] = {}
    for signum in RELAYED:
        try:
            previous[signum] = _signal.signal(signum, handler)
        except ValueError:  # not the main thread: signals are the main thread's to handle
            break
    return previous


def _restore(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        _signal.signal(signum, handler)  # type: ignore[arg-type]
