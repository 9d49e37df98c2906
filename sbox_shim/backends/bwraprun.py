"""Running bwrap: the process side of the bubblewrap backend.

bwrap's own processes: the monitor we start (outside), pid 1 of the sandbox (bwrap's reaper) and
the command, pid 2. `--die-with-parent` chains them: when we die the monitor dies, when the monitor
exits pid 1 dies, and with it the whole pid namespace, daemonised children included.

The monitor ends when pid 1 reports the command's exit, which a stopped pid 1 never does:
bwrapend.py watches the command itself and ends the sandbox GRACE seconds after its exit.

bwrap does not forward signals, so we do: to the command itself, found through the pid namespace.
`--json-status-fd` tells setup failures (no `exit-code` line) from the command's own exit status.

sbox's warm path (compiled.py) runs a cached plan through this module alone, so it imports only
what the interpreter has loaded already or builds in: no subprocess, signal, json or typing, each
of which costs milliseconds on every command. What is needed only once bwrap runs (bwrapend.py,
procs.py) is imported then, while bwrap sets the sandbox up.
"""
from __future__ import annotations

import posix

from sbox_shim.backends.bwrapio import HOST_DNS as HOST_DNS  # re-exported: what bwrap is given, and says
from sbox_shim.backends.bwrapio import REDACTED as REDACTED
from sbox_shim.backends.bwrapio import Status as Status
from sbox_shim.backends.bwrapio import command_line as command_line
from sbox_shim.backends.bwrapio import data_fds as data_fds
from sbox_shim.backends.bwrapio import file_data as file_data
from sbox_shim.backends.bwrapio import memfd as memfd

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with types
    from typing import Any, Callable, Sequence
else:
    import _signal  # built in; `signal` would import enum, functools and collections

RELAYED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH)
DEFAULT_IN_CHILD = (_signal.SIGPIPE, _signal.SIGXFSZ)  # Python ignores these; the command must not


def spawn(command: Sequence[str], keep: Sequence[int], nproc: int | None = None,
          cgroup: Sequence[str] = ()) -> int:
    """Start bwrap in a session of its own with an empty environment, passing only `keep` beyond
    stdio: a terminal's ^C reaches sbox alone, and sbox relays it. Returns the pid. From the main
    thread only (a sandbox started ahead too, bwrapahead.py): `--die-with-parent` follows the
    thread that started bwrap, and one spawn at a time closes every other inheritable descriptor,
    so no sandbox's descriptors reach another's bwrap. `cgroup`: the `cgroup.procs` files bwrap
    joins before it execs (cgroups.py); if it cannot, it exits 1 and nothing runs."""
    for fd in keep:
        posix.set_inheritable(fd, True)
    leaked = [fd for fd in _open_fds() if fd > 2 and fd not in keep and _inheritable(fd)]
    if nproc is None and not cgroup:
        return posix.posix_spawn(command[0], list(command), {}, setsid=True, setsigdef=DEFAULT_IN_CHILD,
                              file_actions=[(posix.POSIX_SPAWN_CLOSE, fd) for fd in leaked])
    return _fork_with(command, leaked, nproc, cgroup)


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


def _fork_with(command: Sequence[str], leaked: Sequence[int], nproc: int | None, cgroup: Sequence[str]) -> int:
    """RLIMIT_NPROC has to be set between fork and exec (the hard limit cannot be raised again),
    and a cgroup joined there holds every process the sandbox will have."""
    import resource

    pid = posix.fork()
    if pid == 0:  # the child: system calls only, then exec
        try:
            posix.setsid()
            for fd in leaked:
                posix.close(fd)
            for signum in DEFAULT_IN_CHILD:
                _signal.signal(signum, _signal.SIG_DFL)
            for procs in cgroup:
                try:
                    fd = posix.open(procs, posix.O_WRONLY | posix.O_CLOEXEC)
                    posix.write(fd, str(posix.getpid()).encode())
                    posix.close(fd)
                except OSError as exc:
                    posix.write(2, f"sbox: cannot put the sandbox in its cgroup ({procs}: {exc.strerror})\n".encode())
                    posix._exit(1)
            if nproc is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            posix.execve(command[0], list(command), {})
        finally:
            posix._exit(127)
    return pid


class Held:
    """bwrap started with a block fd: the sandbox is being set up and the command does not run
    until `finish` lets it go (or `abandon` kills it). Signals are relayed from the start."""

    def __init__(self, pid: int, status: Status, block_w: int, previous: dict[int, object],
                 received: list[int]) -> None:
        self.pid, self.status, self.block_w, self.previous = pid, status, block_w, previous
        self.received = received  # the signals relayed so far
        self.relay: Callable[[int, object], None] | None = None  # the handler, `start`'s
        self.group: Any = None  # cgroups.Group: removed once bwrap has ended (`ended`)

    def ended(self) -> None:
        """bwrap has been waited for: remove its cgroup, if it has one."""
        group, self.group = self.group, None
        if group is not None:
            group.remove()

    def abandon(self) -> None:
        """Kill the sandbox before its command ran; nothing of it runs. A signal that came
        meanwhile (a ^C) is sbox's again: sent to itself once its own handlers are back."""
        for target in (-self.pid, self.pid):  # the group, and bwrap itself: forked (an RLIMIT_NPROC, a
            try:                                # cgroup), it may not have made its session yet
                posix.kill(target, _signal.SIGKILL)
            except OSError:
                pass
        try:
            posix.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.block_w >= 0:  # not let go early (`release`)
            posix.close(self.block_w)
        self.status.close()
        self.ended()
        _restore(self.previous)
        for signum in dict.fromkeys(self.received):
            if signum != _signal.SIGWINCH:
                posix.kill(posix.getpid(), signum)


def start(path: str, options: Sequence[str], argv: Sequence[str], pass_fds: Sequence[int] = (),
          nproc: int | None = None, relay: bool = True, keep: Sequence[int] = (), group: Any = None) -> Held:
    """Start bwrap held before the command (`--block-fd`), relaying signals; `pass_fds` (the data
    files the options name) are closed here once bwrap has them. The caller may check more while
    bwrap sets the sandbox up, then `finish` or `abandon` it. Raises OSError when bwrap cannot be
    started at all. `relay` False: no signal is relayed until `finish_released` (a sandbox
    started ahead while another step runs and has sbox's signals). `keep`: more descriptors for
    the command, left open here. `group`: the sandbox's cgroup (cgroups.Group), which bwrap
    joins before it execs and which goes once bwrap has ended."""
    block_r, block_w = posix.pipe()
    command, fds, status = command_line(path, options, argv, block_r)
    started: list[int] = []
    pending: list[int] = []
    received: list[int] = []
    handler = _relay(status, started, pending, received)
    previous = _install(handler) if relay else {}
    try:
        started.append(spawn(command, [*fds, *pass_fds, *keep], nproc, group.procs if group is not None else ()))
    except BaseException:
        if group is not None:
            group.remove(wait=0)
        _restore(previous)
        status.close()
        posix.close(block_w)
        raise
    finally:
        for fd in [*fds, *pass_fds]:
            posix.close(fd)
    for signum in pending:
        posix.kill(started[0], signum)
    held = Held(started[0], status, block_w, previous, received)
    held.relay, held.group = handler, group
    return held


def _relay(status: Status, started: list[int], pending: list[int],
           received: list[int]) -> Callable[[int, object], None]:
    """The signal handler that relays to the sandbox's command (to bwrap while it sets up)."""

    def relay(signum: int, _frame: object) -> None:
        received.append(signum)
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

    return relay


def release(held: Held, verify: Sequence[tuple[str, int, int]]) -> bool:
    """Check the held sandbox's binds (`verify`, as `run` says) and let its command start now,
    before its step's turn: a command that waits for its turn by itself (npm's scripts driver
    reading the packages to build, `--later`). False: the sandbox has been killed, or bwrap had
    ended; nothing ran (the step's turn `abandon`s it). May run in a thread."""
    why = _checked(held.pid, held.status, verify, held.block_w)
    held.block_w = -1  # closed by the check, either way
    return why == ""


def finish_released(held: Held, timeout: float | None = None, warn: Callable[[str], object] | None = None,
                    ready: Callable[[int], str] | None = None,
                    go: Callable[[], object] | None = None) -> tuple[int, Status | None]:
    """The step's turn for a sandbox `release`d ahead: relay signals from now on, make it `ready`
    (as `run` says: its network; else it is killed, 125), `go` (tell the waiting command its
    turn has come), then wait for it as `finish` does."""
    try:
        return _finish_released(held, timeout, warn, ready, go)
    finally:
        held.ended()


def _finish_released(held: Held, timeout: float | None, warn: Callable[[str], object] | None,
                     ready: Callable[[int], str] | None, go: Callable[[], object] | None) -> tuple[int, Status | None]:
    if held.relay is not None:
        held.previous = _install(held.relay)
    if ready is not None:
        why = "sbox could not prepare the sandbox's network"
        try:
            why = ready(held.status.child_pid) if held.status.child_pid is not None else why
        finally:
            if why:
                from sbox_shim.backends.bwrapend import stop

                stop(held.pid, held.status)
                held.status.close()
                _restore(held.previous)
        if why:
            return _nothing_ran(why, warn)
    if go is not None:
        go()
    return _waited(held, timeout, warn)


def _nothing_ran(why: str, warn: Callable[[str], object] | None) -> tuple[int, Status | None]:
    if warn:
        warn(f"sbox: {why}; the sandbox was killed, nothing ran\n")
    return 125, None


def run(path: str, options: Sequence[str], argv: Sequence[str], pass_fds: Sequence[int] = (),
        timeout: float | None = None, nproc: int | None = None,
        warn: Callable[[str], object] | None = None,
        verify: Sequence[tuple[str, int, int]] = (),
        ready: Callable[[int], str] | None = None) -> tuple[int, Status | None]:
    """Run bwrap in the foreground, relaying signals to the command; return (exit code, status).

    `pass_fds` (the data files the options name) are closed here once bwrap has them. The status
    is None when sbox ended the sandbox itself (a timeout, exit 124) or bwrap was killed.
    Raises OSError when bwrap cannot be started at all. `verify` holds (target, device, inode) of
    the binds under the project: checked where they were mounted before the command may run
    (mountcheck.py); exit 125 and nothing run when one is not what sbox opened. `ready`, called
    with the pid of the sandbox's pid 1 once it is set up and before the command runs, may prepare
    more (the egress proxy's listeners: egress/netns.py); it returns "" or why nothing may run.
    """
    return finish(start(path, options, argv, pass_fds, nproc), timeout, warn, verify, ready)


def finish(held: Held, timeout: float | None = None, warn: Callable[[str], object] | None = None,
           verify: Sequence[tuple[str, int, int]] = (),
           ready: Callable[[int], str] | None = None,
           going: Callable[[], object] | None = None) -> tuple[int, Status | None]:
    """Check the held sandbox (`verify`, `ready`: as `run` says), let its command go and wait for
    it: (exit code, status), as `run` returns. `going` is called once the command may run (the
    next step's sandbox is started then: bwrapahead.py)."""
    try:
        return _finish(held, timeout, warn, verify, ready, going)
    finally:
        held.ended()


def _finish(held: Held, timeout: float | None, warn: Callable[[str], object] | None,
            verify: Sequence[tuple[str, int, int]], ready: Callable[[int], str] | None,
            going: Callable[[], object] | None) -> tuple[int, Status | None]:
    pid, status, previous = held.pid, held.status, held.previous
    why = _checked(pid, status, verify, held.block_w, ready)
    if why is None:
        return _ended(held, warn)
    if why:
        _restore(previous)
        return _nothing_ran(why, warn)
    if going is not None:
        going()
    return _waited(held, timeout, warn)


def _waited(held: Held, timeout: float | None, warn: Callable[[str], object] | None) -> tuple[int, Status | None]:
    """Wait for the sandbox whose command runs: (exit code, status), as `finish` returns."""
    from sbox_shim.backends.bwrapend import GRACE, stop, watch

    pid, status, previous = held.pid, held.status, held.previous
    try:
        code, torn = watch(pid, status, timeout)
        if code is None:
            stop(pid, status)
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


def _ended(held: Held, warn: Callable[[str], object] | None) -> tuple[int, Status | None]:
    """bwrap ended before its sandbox could be checked (its own failure, or a signal relayed to it
    while it set up), or the sandbox could not be looked at (then it is killed): how it ended,
    with nothing run. The block fd stays open until bwrap is gone, so nothing reads its end."""
    from sbox_shim.backends.bwrapend import watch

    try:
        code, _ = watch(held.pid, held.status, None)
    finally:
        posix.close(held.block_w)
        _restore(held.previous)
    held.status.finish()
    held.status.set_up = False
    if code == -_signal.SIGKILL:
        if warn:
            warn("sbox: sbox could not check the sandbox's mounts; the sandbox was killed, nothing ran\n")
        return 125, None
    if code is None or code < 0:
        return 128 - (code or -_signal.SIGKILL), None
    return code, held.status


def _checked(pid: int, status: Status, verify: Sequence[tuple[str, int, int]], block_w: int,
             ready: Callable[[int], str] | None = None) -> str | None:
    """Check the sandbox's binds while bwrap waits, then make it `ready`; let it go on ("") or
    kill it (why). A failure of sbox itself kills it too: closing the pipe unwritten would let
    the command run unchecked. None: bwrap has ended, or its sandbox cannot be looked at (it is
    killed); the block fd is left open for `_ended`."""
    why: str | None = "sbox could not check the sandbox's mounts"
    try:
        if verify or ready is not None:
            from sbox_shim.backends import mountcheck

            why = mountcheck.verify(status, verify)
        else:
            why = ""  # nothing to check: the command may go as soon as bwrap has set it up
        if why == "" and ready is not None and status.child_pid is not None:
            why = "sbox could not prepare the sandbox's network"
            why = ready(status.child_pid)
        if why is None:
            return None
        if verify or ready is not None:
            status.set_up = True  # bwrap reached its block fd: a failure now is the command's
        if not why:
            try:
                posix.write(block_w, b"x")
            except BrokenPipeError:  # bwrap has ended meanwhile: it is waited for as usual
                pass
            return ""
        from sbox_shim.backends.bwrapend import stop

        stop(pid, status)
        status.close()
        return why
    finally:
        if why is None or why:
            try:
                posix.kill(-pid, _signal.SIGKILL)
            except OSError:
                pass
        if why is not None:
            posix.close(block_w)


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
