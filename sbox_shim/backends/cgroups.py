"""`limits.memory` and `limits.pids` for the bubblewrap backend, through a cgroup of the sandbox's own.

bubblewrap makes no cgroup. Where sbox may make one (as root, or in a cgroup v2 subtree delegated
to the user, as systemd's user@UID.service is), a sandbox with either limit gets its own: made
beside sbox's own cgroup (cgroup v2: in its parent, whose children may hold controllers; v1: in
it), its limits written, and bwrap put in it between fork and exec (bwraprun.spawn), so that
every process of the sandbox is counted from bwrap's first instruction, as Docker does for a
container. Memory: the limit, plus as much again of swap (Docker's default for `--memory`), so
that swap does not lift it. A group is removed once its sandbox has ended; one an sbox killed
with `kill -9` left is removed by the next sbox that makes one in the same place.

Where none can be made, `make` says why; bwrap.py then warns that the limit is not enforced, as
before (and `limits.pids` falls back to RLIMIT_NPROC, which the kernel does not apply to root).
"""
from __future__ import annotations

import errno
import os
import time

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

PREFIX = "sbox-"


class Unavailable(Exception):
    """No cgroup with the needed controllers can be made here; the message says why."""


class Group:
    """The sandbox's cgroup: one directory (v2), or one per hierarchy (v1)."""

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs = list(dirs)

    @property
    def procs(self) -> list[str]:
        """The files bwrap writes its pid to, before it execs."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def remove(self, wait: float = 2.0) -> None:
        """Remove the group once its last process has gone (the pid namespace's end is not
        instant); one that stays populated is left for the next sbox to remove."""
        end = time.monotonic() + wait
        for d in self.dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > end:
                        break
                    time.sleep(0.01)
        self.dirs = []


def _mounts() -> list[tuple[str, str, str, frozenset[str]]]:
    """(type, root, mount point, options) of each cgroup mount, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                point = fields[4].replace("\\040", " ")
                out.append((rest[0], fields[3], point, frozenset(rest[2].split(","))))
    return out


def _own() -> dict[str, str]:
    """sbox's own cgroup per hierarchy, from /proc/self/cgroup: "" for v2, else each controller."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


def _below(point: str, root: str, path: str) -> str | None:
    """Where `path` (a cgroup, as /proc/self/cgroup names it) is under a mount of `root`."""
    if path == root or root == "/":
        return os.path.normpath(point + (path if root == "/" else ""))
    if path.startswith(root.rstrip("/") + "/"):
        return os.path.normpath(point + path[len(root.rstrip("/")):])
    return None


def _needs(memory: int | None, pids: int | None) -> list[str]:
    return [c for c, wanted in (("memory", memory), ("pids", pids)) if wanted]


def _v2_base(needs: list[str]) -> str | None:
    own = _own().get("")
    for kind, root, point, _ in _mounts():
        if kind != "cgroup2" or own is None:
            continue
        here = _below(point, root, own)
        if here is None:
            continue
        # the hierarchy's root may hold processes and children with controllers; any other
        # cgroup with processes (sbox's own) may not, so the group goes beside it
        base = here if here == point and root == "/" else os.path.dirname(here)
        if (base + "/").startswith(point.rstrip("/") + "/") and _has(base, "cgroup.subtree_control", needs):
            return base
    return None


def _has(directory: str, name: str, needs: list[str]) -> bool:
    try:
        with open(os.path.join(directory, name), encoding="ascii") as f:
            return set(needs) <= set(f.read().split())
    except OSError:
        return False


def _v1_bases(needs: list[str]) -> list[str] | None:
    own, bases = _own(), []
    for controller in needs:
        found = None
        for kind, root, point, options in _mounts():
            if kind == "cgroup" and controller in options and controller in own:
                found = _below(point, root, own[controller])
                break
        if found is None:
            return None
        bases.append(found)
    return bases


def _clear_stale(base: str) -> None:
    """Remove the groups of sbox processes that are gone (an empty group only: rmdir says so)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid = name[len(PREFIX):].partition("-")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass


def _write(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w", encoding="ascii") as f:
        f.write(value)


def _limit(directory: str, memory: int | None, pids: int | None, v2: bool) -> None:
    files = set(os.listdir(directory))
    if memory and v2:
        _write(directory, "memory.max", str(memory))
        if "memory.swap.max" in files:
            _write(directory, "memory.swap.max", str(memory))
    elif memory and "memory.limit_in_bytes" in files:
        _write(directory, "memory.limit_in_bytes", str(memory))
        if "memory.memsw.limit_in_bytes" in files:
            _write(directory, "memory.memsw.limit_in_bytes", str(2 * memory))
    if pids and "pids.max" in files:
        _write(directory, "pids.max", str(pids))


def _bases(needs: list[str]) -> tuple[list[str], bool]:
    """Where the sandbox's cgroups go, and whether that is cgroup v2. Raises Unavailable."""
    try:
        base2 = _v2_base(needs)
        bases = [base2] if base2 else _v1_bases(needs)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot read this machine's cgroups ({exc})") from None
    if not bases:
        raise Unavailable(f"no cgroup hierarchy here passes {' and '.join(needs)} on to a cgroup sbox could make")
    return list(dict.fromkeys(bases)), base2 is not None


def unusable(memory: int | None, pids: int | None) -> str:
    """Why no cgroup could be made for these limits ("": one can, as far as reading tells), for
    `sbox plan`: nothing is made."""
    try:
        bases, _ = _bases(_needs(memory, pids))
    except Unavailable as exc:
        return str(exc)
    closed = [b for b in bases if not os.access(b, os.W_OK)]
    return f"sbox may not make a cgroup in {closed[0]}" if closed else ""


def make(memory: int | None, pids: int | None) -> Group:
    """A new cgroup holding these limits, for one sandbox. Raises Unavailable."""
    needs = _needs(memory, pids)
    bases, v2 = _bases(needs)
    name = f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    group = Group([])
    try:
        for base in bases:
            _clear_stale(base)
            directory = os.path.join(base, name)
            os.mkdir(directory, 0o755)
            group.dirs.append(directory)
            if v2 and not _has(directory, "cgroup.controllers", needs):
                raise OSError(errno.EPERM, f"{base} does not pass {' and '.join(needs)} on to its children")
            _limit(directory, memory, pids, v2)
            if not os.access(os.path.join(directory, "cgroup.procs"), os.W_OK):
                raise OSError(errno.EACCES, f"{directory}/cgroup.procs is not writable")
    except OSError as exc:
        group.remove(wait=0)
        raise Unavailable(f"sbox cannot make a cgroup here ({exc.strerror or exc})") from None
    return group
