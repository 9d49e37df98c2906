"""Ending bwrap: waiting for it, a timeout, and the teardown the command cannot stop.

The monitor ends when pid 1 reports the command's exit, which a stopped pid 1 (ptrace, SIGSTOP)
never does. So we watch the command ourselves (a pidfd): once it has exited, whether or not that
was reported, the sandbox has GRACE seconds to end; then we kill the monitor and pid 1, and with
pid 1 everything in the namespace, stopped or not.

On sbox's warm path, like bwraprun.py: posix and built-in modules only.
"""
from __future__ import annotations

import posix

from sbox_shim.backends import procs

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import signal as _signal

    from sbox_shim.backends.bwrapio import Status
else:
    import _signal

KILL_GRACE = 5.0  # after a timeout's SIGTERM, before SIGKILL
GRACE = 2.0  # after the command's exit, for the sandbox to end on its own
FIND_EVERY = 0.05  # how often to look for the command's pid until it is found


def watch(pid: int, status: Status, timeout: float | None) -> tuple[int | None, bool]:
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
        while not readable(pidfd, max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                return None
        return posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1])
    finally:
        posix.close(pidfd)


def stop(pid: int, status: Status) -> None:
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


def readable(fd: int, wait: float) -> bool:
    import select  # only when waiting: loading it costs more than the warm path's checks

    return bool(select.select([fd], [], [], wait)[0])
