"""A later step's container, created and started while the step before it runs.

A two-phase install pays a container start (~0.2 s of the daemon's time) per phase. The runner
names the next step (`plan`); once the current step's own container runs, that step's container is
created, attached and started in a thread (`kick`). Its command waits behind a gate: a shell that
reads one line from a FIFO and runs the command only if the line is the word sbox put in its
argument list (a random one per container, which no other sandbox can read). The FIFO lies in a
private directory beside the run directory, mounted into no sandbox but this container (the run
directory itself is mounted read-only into network steps, and a FIFO opens for writing even on a
read-only mount). No command of the step runs before sbox says go.

When the step's turn comes (`take`), sbox opens every bind under the project afresh (as it does for
a container made then) and checks from the host, through /proc, that the waiting shell sees each
one mounted at its target and holding that very directory or file (mountcheck.mismatch): what the
earlier step did cannot have moved them unseen. Only then does it write the word. A container that
is not ready, not visible from here (a daemon in another pid namespace) or does not match is
removed and the step gets a container made then, as before. Never started ahead: a step with staged
files (run-dir files copied into the project; their content is written just before the step) or
with an output directory outside the project (not pinned, so not checked at the step's turn).

A step whose command a hook decides once the step before it has ended (npm's scripts phase: which
packages' scripts run) is started ahead when the hook guesses it will run (the lockfile names
install scripts). Its shell then reads the command's arguments after the word, one per line, until
sbox closes the gate: everything else about the step (mounts, environment, network) must be what
was started, and a command with a newline in a word gets a container made at its turn.

npm's scripts phase, when its driver's programs can only be the host's (npmahead.py), does not
wait in a shell: its container runs the driver at once, told to wait on the gate (`--later=GATE`),
so Node, npm's modules and npm's configuration load while the download runs. At the turn the
decided step must be the one started but for the words its hook appended (`-- DIR...`), and sbox
writes `go` and those words. The gate needs no word here: before `go` nothing but the driver and
npm, the host's read-only files, runs in the container, and no other sandbox can reach the FIFO.

An offline phase whose lookups sbox hears (egress/lookups.py) and that was not started ahead gets
such a container made in its turn (`now`): sbox makes the listening socket in its network namespace
between the check and the word (docker.run's `egress`).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from sbox_shim.backends import npmahead
from sbox_shim.plan import Mount, Step

GATE = "/.sbox-gate"
GATED = f'read -r go < {GATE} && [ "$go" = "$1" ] && shift && exec "$@"; exit 125'
# The command's arguments follow the word, one per line, until sbox closes the gate.
GATED_LATER = ('{ read -r go && [ "$go" = "$1" ] || exit 125; set --; '
               f'while IFS= read -r a; do set -- "$@" "$a"; done; [ $# -gt 0 ] && exec "$@"; }} < {GATE}; exit 125')
OPEN_WITHIN = 20.0  # seconds for the waiting shell to open the gate
START_WITHIN = 5.0  # seconds for a container made now to start its waiting shell


class Ahead:
    def __init__(self, step: Step, run_dir: str, index: int) -> None:
        self.step, self.run_dir, self.index = step, run_dir, index
        self.gates = f"{run_dir}-gate-{index}"  # swept like the run directory if sbox dies (runner.py)
        self.fifo = os.path.join(self.gates, "gate")
        self.word = os.urandom(16).hex()
        self.thread: threading.Thread | None = None
        self.box: Any = None
        self.sock: Any = None
        self.lifeline = -1
        self.init = 0  # the container's init, once `ready` has found it
        self.made = False
        self.tty = sys.stdin.isatty() and sys.stdout.isatty()
        self.later = bool(step.hook)  # its command is decided when its turn comes: sent through the gate
        self.argv: tuple[str, ...] = step.argv
        self.preload = self.later and npmahead.preloadable(step)  # the driver loads npm, then waits
        self.words: tuple[str, ...] = ()  # what the hook appended, for the driver (preload)
        self.waiter = 0  # the process waiting at the gate, once `ready` has found it

    def prepare(self, api: Any) -> None:
        from sbox_shim.backends import docker, dockerimage

        step = self.step
        try:
            links = tuple((m.target, m.source) for m in step.mounts if m.kind == "symlink")
            name = f"sbox-{os.getpid()}-{os.urandom(4).hex()}"
            for mount in step.mounts:  # as the runner makes them before the step
                if mount.kind == "cache":
                    os.makedirs(mount.source, mode=0o700, exist_ok=True)
            # Docker resolves each bind's source itself, following links: a bind under the project
            # that goes through one now (a racing sandbox swapped it) gets no container, rather than
            # one that holds the link's target until the step's turn finds it out (identities).
            docker.identities(step)
            self.lifeline = docker.watch(api, name)
            os.mkdir(self.gates, 0o700)  # never one that exists (a link another user put there)
            self.made = True
            os.mkfifo(self.fifo, 0o600)
            files = docker.materialize(step, self.run_dir, self.index) + [Mount(self.fifo, GATE)]
            config = docker.container_config(step, files, name, step.image or dockerimage.base_image_tag(links),
                                             self.tty, gate=self.word, gate_later=self.later,
                                             preload=self.preload)
            self.box = docker._create(api, config, step, links)
            self.sock = self.box.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self.box.start()
            if not self.ready(START_WITHIN):  # checked now too, not only at its turn: a swap between
                self.discard()  # that look and the daemon's own ends the container within milliseconds
        except Exception:  # the step gets a container made in its turn
            self.discard()

    def ready(self, within: float = 0.0) -> bool:
        """The waiting shell sees each pinned bind of the step as sbox opens it now; `within`:
        seconds to wait for the shell to be there (a container just started)."""
        from sbox_shim.backends import docker, mountcheck, procs

        expected = [(target, int(dev), int(ino)) for target, _, ident in docker.identities(self.step)
                    for dev, _, ino in [ident.partition(":")]]
        try:
            init = self.box.init_pid()
            with open(f"/proc/{init}/cgroup", encoding="utf-8") as f:
                if not init or self.box.id not in f.read():
                    return False  # not this container's init: the daemon's pids are not ours to see
        except Exception:
            return False
        shells = procs.children(init)
        until = time.monotonic() + within
        while not shells and time.monotonic() < until and os.path.exists(f"/proc/{init}"):
            time.sleep(0.002)
            shells = procs.children(init)
        if len(shells) != 1:
            return False
        if mountcheck.mismatch(shells[0], mountcheck._mountinfo(shells[0]), expected) != "":
            return False
        self.init, self.waiter = init, shells[0]
        return True

    def go(self) -> None:
        """Let the command run: the word into the gate once the shell has it open (or `go` and
        the appended words, once the driver, still loading npm maybe, has)."""
        deadline = time.monotonic() + OPEN_WITHIN
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError:  # ENXIO: no reader yet
                if time.monotonic() > deadline or self.waiter and not os.path.exists(f"/proc/{self.waiter}"):
                    return  # the container's wait reports how it ended
                time.sleep(0.002)
        if self.preload:
            data = npmahead.turn(self.words)
        else:
            lines = [self.word, *self.argv] if self.later else [self.word]
            data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        try:
            os.set_blocking(fd, True)
            while data:
                data = data[os.write(fd, data):]
        except OSError:  # the shell has gone: the container's wait reports how it ended
            pass
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Remove the container (if any), end its watcher, drop the gate."""
        from sbox_shim.backends import docker
        from sbox_shim.backends.dockerwatch import DONE

        if self.box is not None:
            docker._remove(self.box)
            self.box = None
        if self.lifeline >= 0:
            try:
                os.write(self.lifeline, DONE)
            except OSError:
                pass
            os.close(self.lifeline)
            self.lifeline = -1
        if self.made:
            self.made = False
            for remove, path in ((os.unlink, self.fifo), (os.rmdir, self.gates)):
                try:
                    remove(path)
                except OSError:
                    pass


_PLANNED: dict[int, Ahead] = {}
_BEHIND: list[threading.Thread] = []  # removals of ended containers, running alongside later steps


def pending() -> bool:
    """A later step is planned: the run goes on after this one."""
    return bool(_PLANNED)


def behind(removal: threading.Thread) -> None:
    removal.start()
    _BEHIND.append(removal)


def _eligible(step: Step) -> bool:
    from sbox_shim.backends.pinned import inside

    return (step.mode == "sandbox" and not step.staged and not step.optional
            and all(inside(path, step.project) for path in step.create))


def plan(step: Step, run_dir: str, index: int, state_dir: str | None = None) -> None:
    """The runner's word that step `index` comes next: start its container once this one runs
    (for a step with a hook, the command waits at the gate to be told as well). `state_dir` is
    bwrap's to use (docker keeps nothing there for a container)."""
    if _eligible(step) and index not in _PLANNED:
        _PLANNED[index] = Ahead(step, run_dir, index)


def now(api: Any, step: Step, run_dir: str, index: int) -> Ahead | None:
    """Step `index`'s container made now the way one is ahead, its command waiting behind the
    gate (so that sbox may prepare its network first: docker.run's `egress`); None where a
    container could not be started ahead, or this one could not be made."""
    if not _eligible(step):
        return None
    made = Ahead(step, run_dir, index)
    made.later = made.preload = False  # its command is known: in the container's arguments, not through the gate
    made.prepare(api)
    if made.box is None:
        made.discard()
        return None
    return made


def kick(api: Any) -> None:
    for ahead in _PLANNED.values():
        if ahead.thread is None:
            ahead.thread = threading.Thread(target=ahead.prepare, args=(api,), daemon=True)
            ahead.thread.start()


def take(step: Step, index: int) -> Ahead | None:
    """Step `index`'s container if it was started ahead, for this very step, and is ready."""
    ahead = _PLANNED.pop(index, None)
    if ahead is None or ahead.thread is None:
        return None
    ahead.thread.join()
    words = npmahead.appended(ahead.step, step) if ahead.preload else None
    if ahead.box is None or not (words is not None or ahead.step is step or _decided(ahead, step)):
        ahead.discard()
        return None
    ahead.argv, ahead.words = step.argv, words or ()
    return ahead


def _decided(ahead: Ahead, step: Step) -> bool:
    """`step` is the one started ahead with only the command its hook decided, and that command
    goes through the gate line by line."""
    return (ahead.later and not ahead.preload and step.replace(argv=ahead.step.argv) == ahead.step and bool(step.argv)
            and not any("\n" in word or "\0" in word for word in step.argv))


def discard_all() -> None:
    """Remove every container started ahead and not used (the run stopped before its step); wait
    for the removals still under way."""
    while _BEHIND:
        _BEHIND.pop().join()
    while _PLANNED:
        _, ahead = _PLANNED.popitem()
        if ahead.thread is not None:
            ahead.thread.join()
        ahead.discard()
