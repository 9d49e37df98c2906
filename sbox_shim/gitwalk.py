"""The `.git` entries of a tree, for the plan: found through directory descriptors, and looked
for again where the tree changed while it was walked (tree.inspect; the cold path only: a
repeated command checks its record's entries with guard/index.py's kept walk instead)."""
from __future__ import annotations

import posix

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

from sbox_shim.lean import LIST_FLAGS, entries, open_along, open_in

SETTLE_PASSES = 3  # looks again at what changed while git_entries walked, before it gives up
MARGIN = 128  # descriptors kept free below the open-files limit: the walk goes as deep as the rest
_PATH = posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
Holds = tuple[frozenset[tuple[str, int, int]], bool]  # a directory's subdirectories (name, device, inode), and a `.git` in it


class TooDeep(Exception):
    """The tree goes deeper than the walk can hold directories open: what is below is not seen."""


def git_entries(top: str) -> tuple[str, ...] | None:
    """Every `.git` file, directory or link below `top` (itself included), sorted. Links are
    not followed and nothing is skipped: a `.git` deep in node_modules is as host-executed as any
    (git reads its config and hooks on `git status` in that directory), at any depth the
    open-files limit allows (its hard limit, for the walk): a repository another sandbox moves
    below a chain of directories deeper than that would not be seen, so TooDeep is raised then,
    and the plan stops (red team 8 hid one 600 levels down when the walk stopped at 512, and the
    step read its token). Walked through directory
    descriptors, each opened in its parent: another sandbox swapping a directory for a link while
    sbox plans never has it list (or protect) what lies outside the project. Depth-first, so
    only one directory per level is open at a time. A `.git` directory is a leaf: a repository
    inside one (`x/.git/stash/lib`, moved there by a sandbox that made `x/.git`) is not looked
    for, which red team 9 used before every sandbox pinned the repositories it started with
    (layout.pins): no sandbox can move one now, and entering them all (a repository's own
    `objects/` holds up to 256 directories) cost 5 ms a plan.

    A directory another sandbox moves while the walk passes, into one the walk has listed
    already, would be missed (red team 8: a nested repository's config then shown unredacted, and
    its `.git` writable). So each directory's inode and ctime are noted when it is listed, and
    looked at again once the walk is done: one that changed is listed again and what appeared in
    it walked, until a pass finds nothing changed but the top itself, holding the same directories
    (a rename of the top changes its ctime alone). A `.git` once found stays in the result (moved
    since, its bind fails where the plan says, and nothing runs). None if the tree is still
    changing after SETTLE_PASSES such passes."""
    top = top.rstrip("/") or "/"
    try:
        fd = posix.open(top, LIST_FLAGS)
    except OSError:
        return ()
    with _open_files():
        seen: dict[str, tuple[int, int]] = {}
        found: set[str] = set()
        held: Holds | None = _gits_below(top, fd, seen, found, top.count("/"))
        for _ in range(SETTLE_PASSES):
            changed = _changed(top, seen)
            if not changed or (changed == [top] and held is not None and _holds(top) == held):
                return tuple(sorted(found))
            for path in changed:
                if path in seen:  # else below one listed again in this pass
                    again = _relist(top, path, seen, found)
                    held = again if path == top else held
        return None


_DEPTH = [1024 - MARGIN]  # levels the current walk may go down (set by _open_files)


def _deep_enough(level: int) -> bool:
    """May the walk open a directory `level` + 1 levels below its top? TooDeep if not."""
    if level + 1 >= _DEPTH[0]:
        raise TooDeep(f"directories nest deeper than {_DEPTH[0]} levels")
    return True


class _open_files:
    """The open-files limit raised to its hard limit (at most 2**20) for the walk, then put back:
    a walk holds one descriptor per level."""

    def __enter__(self) -> None:
        import resource

        self.soft, self.hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(self.hard if self.hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        if want > self.soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, self.hard))
            except (ValueError, OSError):
                want = self.soft
        _DEPTH[0] = max(want - MARGIN, 64)

    def __exit__(self, *_: object) -> None:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.soft, self.hard))
        except (ValueError, OSError):
            pass


def _holds(top: str) -> Holds | None:
    """What the top holds now: its directories (by name, device and inode) and whether it has a
    `.git`. Its own ctime changes when it is renamed (another sandbox swapping it with a link
    beside it: the walk went through a descriptor, its name is nothing to it), so that alone is
    not taken for a change of what it holds; a directory in it renamed is (red team 8)."""
    try:
        fd = posix.open(top, LIST_FLAGS)
    except OSError:
        return None
    try:
        return _held(fd, entries(fd))
    finally:
        posix.close(fd)


def _gits_below(path: str, fd: int, seen: dict[str, tuple[int, int]], found: set[str], floor: int,
                skip: set[str] | None = None) -> Holds | None:
    """Walk the directory open as `fd` (at `path`; closed when done) for `.git` entries, noting
    each directory listed, at most `depth` levels below the top (whose path has `floor`
    slashes); `skip`: names in it not to enter (walked already). Returns what `path` held as it
    was listed (_holds); None if a directory listed in it could not be opened then. A directory
    listed that cannot be opened (renamed, or swapped for a link, meanwhile) has the one holding
    it noted with no ctime: it is listed again (red team 8 renamed `vendor` in that gap, and the
    walk went on without what it holds)."""
    st = posix.fstat(fd)
    seen[path] = (st.st_ino, st.st_ctime_ns)
    listed = entries(fd)
    held: Holds | None = _held(fd, listed)
    stack = [(path, fd, iter(listed))]
    while stack:
        here, fd, pending = stack[-1]
        entry = next(pending, None)
        if entry is None:
            posix.close(stack.pop()[1])
            continue
        if entry.name == ".git":
            found.add(here + "/" + entry.name)
        elif entry.is_dir(follow_symlinks=False) and not (skip and here == path and entry.name in skip) \
                and _deep_enough(here.count("/") - floor):
            inner = open_in(fd, entry.name, owner=True)
            if inner < 0:
                seen[here] = (seen[here][0], -1)
                held = None if here == path else held
                continue
            st = posix.fstat(inner)
            seen[here + "/" + entry.name] = (st.st_ino, st.st_ctime_ns)
            stack.append((here + "/" + entry.name, inner, iter(entries(inner))))
    return held


def _held(fd: int, listed: list[Any]) -> Holds | None:
    subs = set()
    for e in listed:
        if e.name != ".git" and e.is_dir(follow_symlinks=False):
            try:
                st = posix.stat(e.name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                return None  # gone since it was listed: not the same
            subs.add((e.name, st.st_dev, st.st_ino))
    return frozenset(subs), any(e.name == ".git" for e in listed)


def _relist(top: str, path: str, seen: dict[str, tuple[int, int]], found: set[str]) -> Holds | None:
    """List `path` again: forget what is no longer in it (or all it held, if it is another
    directory now) and walk what is new."""
    try:
        handle = open_along(top, path[len(top) + 1:] if path != top else "")
        try:
            fd = posix.open(".", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC, dir_fd=handle)
        finally:
            posix.close(handle)
    except OSError:  # gone, or a link now: its parent changed too, and is listed again
        fd = -1
    same = fd >= 0 and posix.fstat(fd).st_ino == seen[path][0]
    names = {e.name for e in entries(fd)} if same else set()
    for p in [p for p in seen if p.startswith(path + "/")]:  # a `.git` found stays: one moved fails to mount
        if p[len(path) + 1:].split("/", 1)[0] not in names:
            seen.pop(p, None)
    if fd < 0:
        seen.pop(path, None)
        return None
    below = {p[len(path) + 1:] for p in seen if p.startswith(path + "/") and "/" not in p[len(path) + 1:]}
    return _gits_below(path, fd, seen, found, top.count("/"), skip=below)


def _changed(top: str, seen: dict[str, tuple[int, int]]) -> list[str]:
    """The directories of `seen` whose inode or ctime is not as noted (or that are gone, or a
    link now): each opened in its parent without following a link, a subtree at a time (the
    parents' descriptors held open on the way down), so no path is too long to look at."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    try:
        for path in sorted(seen, key=lambda p: p.split("/")):  # each subtree after its top, in one run
            while stack and not path.startswith(stack[-1][0] + "/"):
                posix.close(stack.pop()[1])
            parent = stack[-1][1] if stack else None
            if path != top and (parent is None or stack[-1][0] != path[:path.rfind("/")]):
                out.append(path)  # its parent is not as noted: looked at when that one is listed again
                continue
            try:
                fd = posix.open(top if path == top else path[path.rfind("/") + 1:], _PATH, dir_fd=parent)
            except OSError:
                out.append(path)
                continue
            st = posix.fstat(fd)
            if (st.st_ino, st.st_ctime_ns) != seen[path]:
                out.append(path)
            stack.append((path, fd))
    finally:
        for _, fd in stack:
            posix.close(fd)
    return out
