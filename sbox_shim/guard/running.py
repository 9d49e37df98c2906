"""One baseline per project for the persistence guard, across writable steps that overlap.

The guard compares what a step leaves with a snapshot taken at the step's start. When two steps
that can write one project overlap, the second one's snapshot would already hold what the first
planted: the first's guard moves the plant away at its end, the second writes the same bytes
back, and its own guard sees nothing new. So each guarded step keeps its baseline in sbox's state
directory (kept.py's private files, which no sandbox can write) for as long as it runs, under a
name made of sbox's pid and that process's start time. A step that starts while others run takes,
for each watched path, the baseline of the earliest running step that watched it: what the host
held before any of them started. It keeps that merged baseline in turn, so a third step that
starts after the first has ended still inherits it. A file left by a process that is gone (a
`kill -9`) is removed by the next step that finds it.

Lean (posix, marshal through kept.py): the plan cache's warm path guards its steps with it.
"""
from __future__ import annotations

import posix

from sbox_shim import kept, lean
from sbox_shim.guard import Before, Entry

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

FORMAT = 1


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat's 22nd field): with the
    pid, it names one process, never a later one given the same pid."""
    try:
        fd = posix.open(f"/proc/{pid}/stat", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = posix.read(fd, 4096)
    finally:
        posix.close(fd)
    fields = data[data.rfind(b")") + 2:].split()  # the command's name, in parentheses, may hold anything
    return fields[19].decode() if len(fields) > 19 else None


def directory(state_dir: str, root: str) -> str:
    return lean.join(state_dir, "running", kept.digest(f"sbox-running-{FORMAT}\0{root}".encode("utf-8", "surrogateescape")))


def _data(snapshot: Before) -> tuple[Any, ...]:
    entries = {rel: (e.kind, e.mode, e.ident, e.sha256, e.content, e.target) for rel, e in snapshot.entries.items()}
    return (FORMAT, snapshot.root, snapshot.started_ns, entries, snapshot.names, snapshot.package)


def _snapshot(data: object, root: str) -> Before | None:
    if not (isinstance(data, tuple) and len(data) == 6 and data[0] == FORMAT and data[1] == root):
        return None
    _, _, started, entries, names, package = data
    return Before(root, started, {rel: Entry(*e) for rel, e in entries.items()}, tuple(names), package)


def _covers(names: tuple[str, ...], rel: str) -> bool:
    return any(rel == n or rel.startswith(n + "/") for n in names)


def merged(own: Before, earlier: list[Before]) -> Before:
    """`own` with, for each path the earlier steps (oldest first) watched, the oldest one's entry
    (or its absence); what only `own` watches stays as `own` has it. The start time stays `own`'s:
    what the special-file scan looks for (a socket, a setuid file, a nested `.git`) is judged by
    its change time, and whatever this step's sandbox makes comes after it."""
    if not earlier:
        return own
    chain = [*earlier, own]
    entries: dict[str, Entry] = {}
    for rel in dict.fromkeys(r for s in chain for r in s.entries):
        owner = next(s for s in chain if rel in s.entries or _covers(s.names, rel))
        if rel in owner.entries:  # else the oldest step watching it did not have it: a later one made it
            entries[rel] = owner.entries[rel]
    names = tuple(dict.fromkeys(n for s in chain for n in s.names))
    return Before(own.root, own.started_ns, entries, names, earlier[0].package)


def join(snapshot: Before, state_dir: str) -> tuple[Before, str | None]:
    """Take the baseline of the steps running in this project and keep this one's for those that
    start later. Returns the baseline to compare with, and the file to `leave` (None: it could not
    be kept; this step is guarded by its own snapshot alone, as before)."""
    base = directory(state_dir, snapshot.root)
    pid = posix.getpid()
    mine = f"{pid}-{_start_time(pid)}"
    earlier: list[tuple[str, Before]] = []
    try:
        names = posix.listdir(base)
    except OSError:
        names = []
    for name in names:
        if name.endswith(".tmp") or name == mine:
            continue
        path = lean.join(base, name)
        other, _, started = name.partition("-")
        if not (other.isdigit() and started and _start_time(int(other)) == started):
            kept.remove(path)  # its sbox is gone
            continue
        found = _snapshot(kept.read_private(path), snapshot.root)
        if found is not None:
            try:
                order = posix.stat(path).st_mtime_ns
            except OSError:
                continue
            earlier.append((f"{order:020d}{name}", found))
    baseline = merged(snapshot, [s for _, s in sorted(earlier, key=lambda x: x[0])])
    path = lean.join(base, mine)
    try:
        kept.write_private(path, _data(baseline), prune_old=False)
    except (OSError, ValueError):
        return baseline, None
    return baseline, path


def leave(path: str | None) -> None:
    if path is not None:
        kept.remove(path)
