"""npm's scripts phase started ahead on bwrap, while the download runs.

bwrap itself starts in a few milliseconds; what the scripts phase pays before its first script is
npm: Node's start and npm's modules and configuration, about 0.15 s of CPU that a direct `npm ci`
pays once and a two-phase install twice. So when the runner names that phase as the next step
(`plan`) and the hook guesses it will run, its sandbox is started once the download's command runs
(`kick`: the outputs the download makes exist then): held, its binds checked in a thread where
bwrap mounted them (as for any step), then let go with sbox's driver told to wait
(`--later=FD`, npmahead.py). The driver loads npm and reads the rest of its command line from
a pipe whose write end only sbox holds. No package's code runs before sbox writes it: the driver
and npm are the sandbox's own read-only files, and the project's packages are not loaded.

When the step's turn comes (`take`), the hook has decided it: it must be the step started, but
for the words its hook appended (`-- DIR...`), and every bind under the project must still lead to
what bwrap was given (the rollback's fresh `node_modules`, which `npm ci` empties and keeps).
Then the runner's checks run as for a step started then (the persistence guard's snapshot is
taken before the turn), and `bwrap.run` makes its network ready (the lookups' socket) and writes
`go` and the words. Anything else (another step, a moved bind, a sandbox that could not be
checked, a skipped phase, a run that stops) kills it unrun: the driver never read `go`, so nothing
of the packages ran. Only a step whose sources all exist now, whose network is off, with no files
to stage and no memory limit (bwrap cannot enforce one and says so at the step's turn) is started
ahead; its cache directories are made first, as the runner makes them before a step. And only
when the driver's programs (`env`, `node`, npm) can only be the host's (npmahead.only_host_programs):
a PATH that names a directory of the project would run what a package put there before `go`.
"""
from __future__ import annotations

import os
import signal
import threading

from sbox_shim.backends import npmahead
from sbox_shim.plan import Step

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from sbox_shim.backends.bwrap import Started


class Ahead:
    def __init__(self, step: Step, run_dir: str, index: int, state_dir: str | None) -> None:
        self.step, self.run_dir, self.index, self.state_dir = step, run_dir, index, state_dir
        self.started: Started | None = None
        self.released = False
        self.words_w = -1  # the pipe the driver reads the rest of its command line from
        self.tried = False  # `kick` has looked at it
        self.thread = threading.Thread(target=self._release, name="sbox-ahead", daemon=True)

    def start(self) -> None:
        """Start the sandbox held (in the main thread: bwrap's --die-with-parent follows the thread
        that started it), then check and let it go in a thread while the runner goes on."""
        from sbox_shim.backends import bwrap
        from sbox_shim.errors import SboxError

        words_r, self.words_w = os.pipe()
        try:
            argv = npmahead.waiting(self.step.argv, words_r)
            self.started = bwrap.start(self.step.replace(argv=argv), self.run_dir, self.index, self.state_dir,
                                       relay=False, keep=[words_r])
        except (SboxError, OSError):
            return
        finally:
            os.close(words_r)
        self.thread.start()

    def _release(self) -> None:
        from sbox_shim.backends import bwraprun

        assert self.started is not None
        try:
            self.released = bwraprun.release(self.started.held, self.started.verify)
        except OSError:
            self.released = False

    def go(self, words: tuple[str, ...]) -> None:
        """The driver's turn: `go` and the words its hook appended, then end of file."""
        data = npmahead.turn(words)
        fd, self.words_w = self.words_w, -1
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:  # the driver has gone: its exit status says how
            pass
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Kill the sandbox unrun (the driver never read `go`)."""
        if self.thread.ident is not None:
            self.thread.join()
        if self.started is not None:
            if not self.started.taken:
                _gone(self.started)
            self.started = None
        if self.words_w >= 0:
            os.close(self.words_w)
            self.words_w = -1


def _gone(started: Started) -> None:
    """Kill a sandbox not taken, and wait until its pid 1 (and with it every process of its pid
    namespace, the driver too) has gone: a sandbox let go runs its driver, which bwrap's monitor
    dying ends only as the kernel gets to it."""
    import select

    from sbox_shim.backends import procs

    child = started.held.status.child_pid
    sandbox = procs.pidfd(child) if child is not None else -1
    started.abandon()
    if sandbox < 0:
        return
    try:
        try:
            signal.pidfd_send_signal(sandbox, signal.SIGKILL)
        except OSError:  # dying already (bwrap's monitor went first), or gone
            pass
        select.select([sandbox], [], [], 5.0)
    finally:
        os.close(sandbox)


_PLANNED: dict[int, Ahead] = {}


def eligible(step: Step) -> bool:
    """npm's scripts phase as npmahead.py starts it, with nothing to make first and nothing bwrap
    cannot do."""
    from sbox_shim.backends.pinned import inside

    return (npmahead.preloadable(step) and not step.limits.memory and not step.image
            and all(inside(path, step.project) and os.path.isdir(path) for path in step.create)
            and all(os.path.exists(m.source) for m in step.mounts if m.kind == "bind"))


def plan(step: Step, run_dir: str, index: int, state_dir: str | None = None) -> None:
    """The runner's word that step `index` comes next (and will likely run): it starts once the
    current step's command runs (`kick`), when the outputs that step makes exist."""
    if index not in _PLANNED and step.mode == "sandbox":
        _PLANNED[index] = Ahead(step, run_dir, index, state_dir)


def kick() -> None:
    """The current step's command runs: start what was planned, if it can be started ahead."""
    for ahead in _PLANNED.values():
        if ahead.thread.ident is not None or ahead.tried:
            continue
        ahead.tried = True
        if not eligible(ahead.step):
            continue
        for mount in ahead.step.mounts:  # as the runner makes them before the step
            if mount.kind == "cache":
                try:
                    os.makedirs(mount.source, mode=0o700, exist_ok=True)
                except OSError:
                    break  # the step's turn says why
        else:
            ahead.start()


def take(step: Step, index: int) -> Ahead | None:
    """Step `index`'s sandbox, if started ahead for this very step (but for the words its hook
    appended), let go and with every bind under the project still what bwrap was given."""
    ahead = _PLANNED.pop(index, None)
    if ahead is None:
        return None
    if ahead.thread.ident is not None:
        ahead.thread.join()
    started = ahead.started
    if (started is None or not ahead.released or npmahead.appended(ahead.step, step) is None
            or not started.still_pinned()):
        ahead.discard()
        return None
    return ahead


def appended(ahead: Ahead, step: Step) -> tuple[str, ...]:
    words = npmahead.appended(ahead.step, step)
    assert words is not None  # `take` checked it
    return words


def discard_all() -> None:
    """Kill every sandbox started ahead and not used (the run stopped before its step)."""
    while _PLANNED:
        _, ahead = _PLANNED.popitem()
        ahead.discard()
