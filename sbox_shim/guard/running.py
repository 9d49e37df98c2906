"""One baseline for the persistence guard across writable steps that overlap, and the check of a
step whose sbox died before its own.

The guard compares what a step leaves with a snapshot taken at the step's start. When two steps
that can write the same tree overlap (one project, or a project and another nested in it, each
with its own sbox.yaml), the later one's snapshot would already hold what the earlier one
planted: the earlier step's guard moves the plant away at its end, the later one writes the same
bytes back (or finds them there), and its own guard sees nothing new. So each guarded step keeps
its baseline in sbox's state directory (kept.py's private files, which no sandbox can write) for
as long as it runs, under a name made of sbox's pid and that process's start time. A step that
starts while others run whose trees overlap its own takes, for each path it watches, the baseline
of the earliest of them that watched it (its paths moved to this step's root): what the host held
before any of them started. It keeps that merged baseline in turn, so a third step that starts
after the first has ended still inherits it.

A baseline whose sbox is gone (`kill -9`, or a signal that ended it before its guard ran) is the
check that never happened: the next step whose tree overlaps it claims it (renamed, so one step
does it) and compares the tree with it first (`orphans`), quarantining what the dead step left,
before taking its own snapshot.

Lean (posix, marshal through kept.py): the plan cache's warm path guards its steps with it.
"""
from __future__ import annotations

import posix

from sbox_shim import kept, lean
from sbox_shim.guard import Before, Entry

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Sequence

FORMAT = 2
CLAIMED = ".claimed-"


class Orphan:
    """A dead step's baseline, claimed: what its guard would have compared with."""

    __slots__ = ("path", "pid", "snapshot", "mounts", "command")

    def __init__(self, path: str, pid: str, snapshot: Before, mounts: list[tuple[str, str, bool, str]],
                 command: list[str]) -> None:
        self.path, self.pid, self.snapshot, self.mounts, self.command = path, pid, snapshot, mounts, command


def directory(state_dir: str) -> str:
    return lean.join(state_dir, "running")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process,
    never a later one given the same pid."""
    from sbox_shim.backends.procs import stat_fields

    fields = stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def _alive(name: str) -> bool:
    pid, _, started = name.partition("-")
    return pid.isdigit() and bool(started) and _start_time(int(pid)) == started


def _data(snapshot: Before, mounts: Sequence[Any], command: Sequence[str]) -> tuple[Any, ...]:
    entries = {rel: (e.kind, e.mode, e.ident, e.sha256, e.content, e.target) for rel, e in snapshot.entries.items()}
    return (FORMAT, snapshot.root, snapshot.started_ns, entries, snapshot.names, snapshot.package,
            [m if isinstance(m, tuple) else (str(m.source), str(m.target), bool(m.readonly), str(m.kind)) for m in mounts],
            [str(w) for w in command])


def _load(path: str) -> tuple[Before, list[tuple[str, str, bool, str]], list[str]] | None:
    data = kept.read_private(path)
    try:
        assert isinstance(data, tuple) and len(data) == 8 and data[0] == FORMAT
        _, root, started, entries, names, package, mounts, command = data
        snapshot = Before(str(root), int(started), {str(rel): Entry(*e) for rel, e in entries.items()},
                          tuple(names), package)
        return snapshot, [(str(a), str(b), bool(c), str(d)) for a, b, c, d in mounts], [str(w) for w in command]
    except (AssertionError, AttributeError, TypeError, ValueError):
        return None


def _overlap(a: str, b: str) -> bool:
    return lean.inside(a, b) or lean.inside(b, a)


def _moved(other: Before, root: str) -> Before | None:
    """`other` (another step's baseline) with its paths relative to `root`: what of it lies in
    `root`'s tree. None when the trees do not overlap."""
    if other.root == root:
        return other
    if lean.inside(root, other.root):  # this step's tree is below the other's
        prefix = root[len(other.root.rstrip("/")) + 1:] + "/"
        entries = {rel[len(prefix):]: e for rel, e in other.entries.items() if rel.startswith(prefix)}
        names = tuple(n[len(prefix):] for n in other.names if n.startswith(prefix))
    elif lean.inside(other.root, root):  # the other's tree is below this one's
        prefix = other.root[len(root.rstrip("/")) + 1:] + "/"
        entries = {prefix + rel: e for rel, e in other.entries.items()}
        names = tuple(prefix + n for n in other.names)
    else:
        return None
    return Before(root, other.started_ns, entries, names, None)


def _covers(names: tuple[str, ...], rel: str) -> bool:
    return any(rel == n or rel.startswith(n + "/") for n in names)


def merged(own: Before, earlier: list[Before]) -> Before:
    """`own` with, for each path the earlier steps (oldest first, their paths moved to `own`'s
    root) watched, the oldest one's entry (or its absence); what only `own` watches stays as
    `own` has it. The start time stays `own`'s: what the special-file scan looks for (a socket, a
    setuid file, a nested `.git`) is judged by its change time, and whatever this step's sandbox
    makes comes after it."""
    if not earlier:
        return own
    chain = [*earlier, own]
    entries: dict[str, Entry] = {}
    for rel in dict.fromkeys(r for s in chain for r in s.entries):
        owner = next(s for s in chain if rel in s.entries or _covers(s.names, rel))
        if rel in owner.entries:  # else the oldest step watching it did not have it: a later one made it
            entries[rel] = owner.entries[rel]
    names = tuple(dict.fromkeys(n for s in chain for n in s.names))
    package = next((s.package for s in earlier if s.package is not None), own.package)
    return Before(own.root, own.started_ns, entries, names, package)


def _names(state_dir: str) -> list[str]:
    try:
        return posix.listdir(directory(state_dir))
    except OSError:
        return []


def made_meanwhile(state_dir: str, root: str, rel: str) -> bool:
    """Is `rel` (a watched path of `root`, a file) not what the host had when a step still running
    on an overlapping tree started, or one that died before its check: absent from that step's
    baseline, or another file now? What such a step's sandbox made is its doing until its guard
    has looked (red team 16: a dev server's step wrote the project's `.git` naming a stale
    worktree's git directory, and a step planned meanwhile was given that repository)."""
    try:
        st = posix.lstat(lean.join(root, rel))
    except OSError:
        return False
    now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    base = directory(state_dir)
    for name in _names(state_dir):
        if name.endswith(".tmp"):
            continue
        loaded = _load(lean.join(base, name))
        moved = _moved(loaded[0], root) if loaded is not None else None
        if moved is None or not _covers(moved.names, rel):
            continue
        old = moved.entries.get(rel)
        if old is None or tuple(old.ident[:5]) != now:
            return True
    return False


def orphans(state_dir: str, root: str) -> list[Orphan]:
    """The baselines of dead steps whose trees overlap `root`'s, each claimed by this process
    (renamed: another step that finds it too leaves it); `done` removes one once checked."""
    base, mine = directory(state_dir), posix.getpid()
    found = []
    for name in _names(state_dir):
        if name.endswith(".tmp") or CLAIMED in name or _alive(name):
            continue
        path = lean.join(base, name)
        loaded = _load(path)
        if loaded is None:
            kept.remove(path)
            continue
        if not _overlap(loaded[0].root, root):
            continue  # another project's: checked by the next step there
        claimed = f"{path}{CLAIMED}{mine}"
        try:
            posix.rename(path, claimed)
        except OSError:
            continue  # claimed by another step meanwhile
        found.append(Orphan(claimed, name.partition("-")[0], *loaded))
    return found


def done(orphan: Orphan) -> None:
    kept.remove(orphan.path)


def unclaim(orphan: Orphan) -> None:
    """Leave a dead step's baseline for the next step (its check could not be made now)."""
    try:
        posix.rename(orphan.path, orphan.path[:orphan.path.rindex(CLAIMED)])
    except OSError:
        pass


def join(snapshot: Before, state_dir: str, mounts: Sequence[Any] = (),
         command: Sequence[str] = ()) -> tuple[Before, str | None]:
    """Take the baseline of the steps running on trees that overlap this one's and keep this
    step's for those that start later. Returns the baseline to compare with, and the file to
    `leave` (None: it could not be kept; this step is guarded by its own snapshot alone)."""
    base, pid = directory(state_dir), posix.getpid()
    mine = f"{pid}-{_start_time(pid)}"
    earlier: list[tuple[str, Before]] = []
    for name in _names(state_dir):
        if name.endswith(".tmp") or CLAIMED in name or name == mine or not _alive(name):
            continue
        path = lean.join(base, name)
        loaded = _load(path)
        found = _moved(loaded[0], snapshot.root) if loaded is not None else None
        if found is not None:
            try:
                order = posix.stat(path).st_mtime_ns
            except OSError:
                continue
            earlier.append((f"{order:020d}{name}", found))
    baseline = merged(snapshot, [s for _, s in sorted(earlier, key=lambda x: x[0])])
    path = lean.join(base, mine)
    try:
        kept.write_private(path, _data(baseline, mounts, command), prune_old=False)
    except (OSError, ValueError):
        return baseline, None
    return baseline, path


def leave(path: str | None) -> None:
    if path is not None:
        kept.remove(path)
