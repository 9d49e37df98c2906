"""The bubblewrap backend: Linux namespaces, no daemon, the host toolchain mounted read-only.

This module sets the sandbox up (is bwrap usable, which options, which files); bwraprun.py runs it.
"""
from __future__ import annotations

import os
import sys

from sbox_shim.backends import bwraprun
from sbox_shim.backends import pinned as pinned_sources
from sbox_shim.backends import seccomp
from sbox_shim.backends.bwrapargs import MASKED_PROC, bwrap_options, namespace_args
from sbox_shim.errors import CommandNotFound, SandboxError, SboxError
from sbox_shim.plan import DEFAULT_PIDS, SANDBOX_DIR, Step

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Sequence

    from sbox_shim.backends import bwrapahead, cgroups

NAME = "bwrap"
KNOWN_PATHS = ("/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap")
REQUIRED_OPTIONS = ("--json-status-fd", "--args", "--perms", "--size", "--cap-drop", "--die-with-parent",
                    "--ro-bind-data", "--seccomp")


def bwrap_path() -> str | None:
    """A system bwrap first: a PATH entry is not trusted to pick the sandbox."""
    for path in KNOWN_PATHS:
        if os.access(path, os.X_OK):
            return path
    import shutil

    return shutil.which("bwrap")


_OPTIONS: dict[tuple[str, str | None], frozenset[str]] = {}  # options_of's answers in this process


def forget_options() -> None:
    _OPTIONS.clear()


def options_of(path: str, state_dir: str | None = None) -> frozenset[str]:
    """The options this bwrap knows, from its --help (bubblewrap has grown them over the years).

    With `state_dir`, kept there per bwrap binary (path and identity), so a run does not start
    `bwrap --help` first. (Kept in the process by hand: functools' import costs milliseconds on
    the plan cache's warm path.)"""
    if (path, state_dir) not in _OPTIONS:
        _OPTIONS[path, state_dir] = _options_of(path, state_dir)
    return _OPTIONS[path, state_dir]


def _options_of(path: str, state_dir: str | None) -> frozenset[str]:
    from sbox_shim import compiled, kept as private

    kept = state_dir and os.path.join(state_dir, "bwrap",
                                      private.digest(repr((path, compiled.fact("stat", path))).encode()))
    found = private.read_private(kept) if kept else None
    if isinstance(found, list) and all(isinstance(o, str) for o in found):
        return frozenset(found)
    import subprocess

    try:
        text = subprocess.run([path, "--help"], env={}, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    options = frozenset(word for word in text.split() if word.startswith("--"))
    if options and kept:
        try:
            private.write_private(kept, sorted(options))
        except OSError:
            pass
    return options


def unavailable() -> str | None:
    import subprocess

    path = bwrap_path()
    if path is None:
        return "bwrap (bubblewrap) is not installed; apt-get/dnf/pacman install bubblewrap"
    missing = [o for o in REQUIRED_OPTIONS if o not in options_of(path)]
    if missing:
        return f"{path} is too old (no {', '.join(missing)}); a newer bubblewrap is needed"
    probe = [path, *namespace_args(os.getuid(), os.getgid(), False, "--disable-userns" in options_of(path)),
             "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
             "--", "true"]
    try:
        result = subprocess.run(probe, env={}, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap probe failed: {exc}"
    if result.returncode != 0:
        return f"bwrap cannot create a sandbox here (user namespaces?): {_message(result.stderr, result.returncode)}"
    return None


def _message(stderr: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {code}"


def run(step: Step, run_dir: str, index: int = 0, state_dir: str | None = None,
        egress: Callable[[int], str] | None = None, meanwhile: Callable[[], object] | None = None,
        started: Started | None = None, going: Callable[[], object] | None = None) -> int:
    """Run the step in a sandbox; `state_dir`, where sbox may keep what it learns of bwrap.

    `egress` (an allowlisted step, when sbox can listen in the sandbox's network namespace:
    egress/netns.py): the step runs without the bridge that wraps it, and `egress` is called with
    the sandbox's pid before the command runs, to make the proxy's listeners in there.
    `meanwhile` is called once bwrap has started, while it sets the sandbox up and before the
    command may run (the egress proxy's start); if it raises, the sandbox is killed unrun.
    `started`: this very step's sandbox, started held already (`start`, with `egress` said).
    `going` is called as the command is let go (the egress proxy's start on its unix socket)."""
    if started is None:
        ahead = sys.modules.get("sbox_shim.backends.bwrapahead")  # loaded if the runner planned one
        taken = ahead.take(step, index) if ahead is not None else None
        if taken is not None:  # npm's scripts driver, waiting for its turn
            return _run_ahead(taken, step, egress, going)
        started = start(step, run_dir, index, state_dir, egress=egress is not None)
    held, step = started.take(), started.step
    if meanwhile is not None:
        try:
            meanwhile()
        except BaseException:
            held.abandon()
            raise
    try:
        code, status = bwraprun.finish(held, step.limits.timeout, warn=sys.stderr.write, verify=started.verify,
                                       ready=egress, going=_then(going, _kick))
    except OSError as exc:
        raise SandboxError(f"cannot start bwrap: {exc}") from None
    if status is not None and status.exit_code is None and code == 1:
        if status.set_up is False:  # it ended before its mounts were made: bwrap's own message says why
            raise SandboxError("bwrap could not set the sandbox up; nothing ran")
        _diagnose(started.path, step, started.disable_userns, started.bpf)
    return code


def ahead(step: Step, run_dir: str, index: int, state_dir: str | None = None) -> None:
    """The runner's word that step `index` comes next: npm's scripts phase starts once this
    step's command runs (bwrapahead.py); any other step at its turn, as bwrap starts in
    milliseconds."""
    from sbox_shim.backends import bwrapahead

    bwrapahead.plan(step, run_dir, index, state_dir)


def _then(first: Callable[[], object] | None, second: Callable[[], object]) -> Callable[[], object]:
    """`first` (if any), then `second`."""
    if first is None:
        return second

    def both() -> None:
        first()
        second()

    return both


def _kick() -> None:
    """This step's command runs: start the next step's sandbox if one was planned ahead."""
    ahead = sys.modules.get("sbox_shim.backends.bwrapahead")
    if ahead is not None:
        ahead.kick()


def discard() -> None:
    """Kill what was started ahead and not used (the run stopped before its step)."""
    ahead = sys.modules.get("sbox_shim.backends.bwrapahead")
    if ahead is not None:
        ahead.discard_all()


def _run_ahead(ahead: bwrapahead.Ahead, step: Step, egress: Callable[[int], str] | None,
               going: Callable[[], object] | None = None) -> int:
    """The turn of a sandbox started ahead: its network made ready, then the driver's words."""
    from sbox_shim.backends import bwrapahead

    assert ahead.started is not None
    held = ahead.started.take()
    words = bwrapahead.appended(ahead, step)
    try:
        code, _ = bwraprun.finish_released(held, step.limits.timeout, warn=sys.stderr.write, ready=egress,
                                           go=_then(going, lambda: ahead.go(words)))
    finally:
        ahead.discard()
    return code


class Started:
    """A step's sandbox started held before its command (bwraprun.Held), with what `run` needs."""

    def __init__(self, step: Step, path: str, disable_userns: bool, bpf: bytes, held: bwraprun.Held,
                 verify: list[tuple[str, int, int]]) -> None:
        self.step, self.path, self.disable_userns, self.bpf = step, path, disable_userns, bpf
        self.held, self.verify = held, verify  # verify: (target, device, inode) of each pinned source
        self.taken = False  # by `run`, which lets it go or kills it

    def take(self) -> bwraprun.Held:
        if self.taken:
            raise RuntimeError("a started sandbox is run once")
        self.taken = True
        return self.held

    def still_pinned(self) -> bool:
        """Does each pinned source's path still lead to the file bwrap was given? (Something may
        have replaced one since: npm's hook moves node_modules away before `npm ci`.)"""
        try:
            fds = pin(self.step)
        except SandboxError:
            return False
        try:
            return [(st.st_dev, st.st_ino) for st in map(os.fstat, fds)] == [(d, i) for _, d, i in self.verify]
        finally:
            for fd in fds:
                os.close(fd)

    def abandon(self) -> None:
        """Kill the sandbox unrun, unless `run` has taken it."""
        if not self.taken:
            self.taken = True
            self.held.abandon()


def start(step: Step, run_dir: str, index: int = 0, state_dir: str | None = None, egress: bool = False,
          relay: bool = True, keep: Sequence[int] = ()) -> Started:
    """The step's sandbox, started and held before its command (`run` lets it go); `egress`: as
    `run`'s. Raises SandboxError when it cannot be. `relay`: as bwraprun.start's; `keep`: more
    descriptors for the command (left open here)."""
    path = _path_for(step)
    if egress:
        step = unbridged(step)
    disable_userns = "--disable-userns" in options_of(path, state_dir)
    bpf = seccomp.kept_filter(state_dir)  # before any fd is open: it raises when it cannot be built
    pins = pin(step)
    fds = data_fds(step)
    filter_fd = seccomp.memfd(bpf)
    pinned = {target: fd for (_, target), fd in zip(step.pinned(), pins)}
    options = bwrap_options(step, fds, disable_userns=disable_userns, seccomp=filter_fd, masked=masked_proc(),
                            pinned=pinned)
    verify = [(target, st.st_dev, st.st_ino) for (_, target), fd in zip(step.pinned(), pins) for st in [os.fstat(fd)]]
    group = _cgroup(step)
    try:
        held = bwraprun.start(path, options, step.argv, [*(fd for _, fd in fds), filter_fd, *pins],
                              None if group is not None else nproc(step.limits.pids), relay=relay, keep=keep,
                              group=group)
    except OSError as exc:
        raise SandboxError(f"cannot start bwrap: {exc}") from None
    return Started(step, path, disable_userns, bpf, held, verify)


def unbridged(step: Step) -> Step:
    """The step without the egress bridge: its command alone, without the bridge's mounts."""
    bridge = (f"{SANDBOX_DIR}/bridge.py", f"{SANDBOX_DIR}/run")  # build.BRIDGE and build.RUN_DIR
    mounts = tuple(m for m in step.mounts if m.target not in bridge)
    return step.replace(argv=step.command, mounts=mounts)


def pin(step: Step) -> list[int]:
    """An O_PATH fd on the source of each bind under the project (Step.pinned), opened without
    following a link below the project root: bwrap binds these, never the paths again."""
    try:
        return pinned_sources.open_all(step.project, [source for source, _ in step.pinned()])
    except OSError as exc:
        raise SandboxError(f"{exc.filename or step.project}: {exc.strerror}; nothing ran") from None


def masked_proc() -> list[str]:
    """The MASKED_PROC files this kernel has: bwrap cannot bind over one that is absent."""
    return [p for p in MASKED_PROC if os.path.lexists(p)]


def _path_for(step: Step) -> str:
    if step.image:
        raise SandboxError(f"profile {step.profile!r} sets image: {step.image}, which only the docker backend can run")
    path = bwrap_path()
    if path is None:
        raise SandboxError("bwrap (bubblewrap) is not installed; install it or use backend: docker")
    return path


def data_files(step: Step) -> list[tuple[str, str, str]]:
    """What bwrap copies in, as (target, content, source): the generated files, then the host's
    (read at run time; content bwraprun.REDACTED: without its credentials, redact.py)."""
    return ([(f.target, f.content, "") for f in step.files]
            + [(m.target, bwraprun.REDACTED if m.kind == "redact" else "", m.source)
               for m in step.mounts if m.kind in ("copy", "redact")])


def data_fds(step: Step) -> list[tuple[str, int]]:
    """`data_files` as memfds, in that order."""
    files = data_files(step)
    return list(zip([target for target, _, _ in files], bwraprun.data_fds(files, step.network.policy == "open", step.project)))


def _cgroup(step: Step) -> cgroups.Group | None:
    """The sandbox's own cgroup for `limits.memory` and a `limits.pids` the user set (cgroups.py);
    where none can be made, the memory limit is not enforced and `limits.pids` is an RLIMIT_NPROC
    (not for root), and sbox says so. The default `pids` alone is an RLIMIT_NPROC (not for root),
    as the plan cache's warm path runs it: no cgroup to make and remove on every command."""
    memory, pids = step.limits.memory, step.limits.pids
    if not (memory or (pids and pids != DEFAULT_PIDS)):  # the default brake alone: RLIMIT_NPROC, as on the warm path
        return None
    from sbox_shim.backends import cgroups

    try:
        return cgroups.make(memory, pids)
    except cgroups.Unavailable as exc:
        unenforced = [k for k, v in (("limits.memory", memory), ("limits.pids", pids and os.getuid() == 0)) if v]
        if unenforced:
            sys.stderr.write(f"sbox: warning: {' and '.join(unenforced)} not enforced by the bwrap backend: "
                             f"{exc}; use backend: docker to enforce it\n")
        return None


def nproc(pids: int | None) -> int | None:
    """RLIMIT_NPROC, which user namespaces count per namespace (Linux >= 5.14). The kernel exempts
    host root from it, so for root it would only pretend: skipped."""
    return pids if pids and os.getuid() != 0 else None


def _diagnose(path: str, step: Step, disable_userns: bool, bpf: bytes) -> None:
    """bwrap exited 1 before exec'ing the command: was it the sandbox or the command? Set the same
    sandbox up again around `command -v NAME`, which runs nothing, and find out."""
    import subprocess

    name = step.argv[0]
    pins = pin(step)
    fds = data_fds(step)
    filter_fd = seccomp.memfd(bpf)
    pinned = {target: fd for (_, target), fd in zip(step.pinned(), pins)}
    options = bwrap_options(step, fds, disable_userns=disable_userns, seccomp=filter_fd, masked=masked_proc(),
                            pinned=pinned)
    probe = ["/bin/sh", "-c", 'command -v "$1" >/dev/null', "sh", name]
    command, passed, status = bwraprun.command_line(path, options, probe)
    passed += [fd for _, fd in fds] + [filter_fd] + pins
    try:
        result = subprocess.run(command, env={}, pass_fds=passed, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"bwrap could not create the sandbox ({exc}); nothing ran") from None
    finally:
        for fd in passed:
            os.close(fd)
    status.finish()
    if status.exit_code is None:
        raise SandboxError(f"bwrap could not create the sandbox: {_message(result.stderr, result.returncode)}; nothing ran")
    if status.exit_code != 0:
        raise CommandNotFound(f"{name}: command not found in the sandbox (is it under a directory that is not mounted?)")
    raise _NotExecutable(f"{name}: found in the sandbox but could not be executed")


class _NotExecutable(SboxError):
    """The command exists but cannot be executed: 126, as a shell says."""

    exit_code = 126
