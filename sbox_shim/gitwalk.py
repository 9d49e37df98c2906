"""The `.git` entries of a tree, for the plan: found through directory descriptors, and looked
for again where the tree changed while it was walked (tree.inspect; the cold path only: a
repeated command checks its record's entries with guard/index.py's kept walk instead)."""
from __future__ import annotations

import posix

from sbox_shim.lean import LIST_FLAGS, entries, open_along, open_in

SETTLE_PASSES = 3  # looks again at what changed while git_entries walked, before it gives up
MAX_DEPTH = 512  # directories deep the walk goes (as guard.MAX_DEPTH): descriptors open at once
_PATH = posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC


def git_entries(top: str) -> tuple[str, ...] | None:
    """Every `.git` file, directory or link below `top` (itself included), sorted. Links are
    not followed and nothing is skipped: a `.git` deep in node_modules is as host-executed as any
    (git reads its config and hooks on `git status` in that directory), down to MAX_DEPTH levels
    (a tree a step builds deeper has its top moved by the guard). Walked through directory
    descriptors, each opened in its parent: another sandbox swapping a directory for a link while
    sbox plans never has it list (or protect) what lies outside the project. Depth-first, so
    only one directory per level is open at a time.

    A directory another sandbox moves while the walk passes, into one the walk has listed
    already, would be missed (red team 8: a nested repository's config then shown unredacted, and
    its `.git` writable). So each directory's inode and ctime are noted when it is listed, and
    looked at again once the walk is done: one that changed is listed again and what appeared in
    it walked, until a pass finds nothing changed. None if the tree is still changing after
    SETTLE_PASSES such passes."""
    top = top.rstrip("/") or "/"
    try:
        fd = posix.open(top, LIST_FLAGS)
    except OSError:
        return ()
    seen: dict[str, tuple[int, int]] = {}
    found: set[str] = set()
    _gits_below(top, fd, seen, found, top.count("/"))
    for _ in range(SETTLE_PASSES):
        changed = _changed(top, seen)
        if not changed:
            return tuple(sorted(found))
        for path in changed:
            if path not in seen:
                continue  # below one listed again in this pass
            _relist(top, path, seen, found)
    return None


def _gits_below(path: str, fd: int, seen: dict[str, tuple[int, int]], found: set[str], floor: int,
                skip: set[str] | None = None) -> None:
    """Walk the directory open as `fd` (at `path`; closed when done) for `.git` entries, noting
    each directory listed, at most MAX_DEPTH levels below the top (whose path has `floor`
    slashes); `skip`: names in it not to enter (walked already)."""
    st = posix.fstat(fd)
    seen[path] = (st.st_ino, st.st_ctime_ns)
    stack = [(path, fd, iter(entries(fd)))]
    while stack:
        here, fd, pending = stack[-1]
        entry = next(pending, None)
        if entry is None:
            posix.close(stack.pop()[1])
            continue
        if entry.name == ".git":
            found.add(here + "/" + entry.name)
        elif entry.is_dir(follow_symlinks=False) and not (skip and here == path and entry.name in skip) \
                and here.count("/") - floor < MAX_DEPTH and (inner := open_in(fd, entry.name)) >= 0:
            st = posix.fstat(inner)
            seen[here + "/" + entry.name] = (st.st_ino, st.st_ctime_ns)
            stack.append((here + "/" + entry.name, inner, iter(entries(inner))))


def _relist(top: str, path: str, seen: dict[str, tuple[int, int]], found: set[str]) -> None:
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
    for p in [p for p in seen if p.startswith(path + "/")] + [p for p in found if p.startswith(path + "/")]:
        if p[len(path) + 1:].split("/", 1)[0] not in names:
            seen.pop(p, None)
            found.discard(p)
    if fd < 0:
        seen.pop(path, None)
        return
    below = {p[len(path) + 1:] for p in seen if p.startswith(path + "/") and "/" not in p[len(path) + 1:]}
    _gits_below(path, fd, seen, found, top.count("/"), skip=below)


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
