"""A writable tree's directories, kept between runs so that a walk lists only what changed.

Listing every entry of node_modules (20,000 files: about 25 ms, 85 ms with an lstat each) before
and after each step was most of a warm run. A directory's ctime changes whenever an entry is
created, removed or renamed in it, and no process can set a ctime back. So each walk keeps, in
sbox's state directory (kept.py's private files, which no sandbox can write), every directory's
(device, inode, ctime) and the NESTED entries (.git, .envrc, HEAD) it holds; the next walk looks
at each kept directory top-down and lists only those that changed, plus each one whose ctime is
within SLACK_NS of the walk that kept it (file times come from a coarse clock: a change in the
same tick would leave the same ctime), and every directory below a new one. Links are never
followed; `.git` directories are not entered (each is a read-only bind in the sandbox).

The walk goes through directory descriptors, each directory opened in its parent without
following a link, and keeps for each path the identity of the directory it opened there. A walk
by path kept, for a directory another sandbox had just swapped an ancestor of for a link, the
identity seen before the swap with the listing of what the link led to: every later walk then
took the real directory, and a plant in it, as unchanged.

What a walk does not see is a change to an existing entry of an unchanged directory: its content
(the guard hashes the host-executed names apart, and lstats every known NESTED entry itself) or
its mode (a setuid or setgid bit, which the seccomp filter refuses to every sandbox). So the
project's own `__pycache__` directories are listed at every walk (`relisted`): a bytecode file
rewritten in place runs on the host instead of its source. A walk that
could not list a directory keeps nothing: the next one lists the whole tree again.

Lean (posix only): the plan cache's warm path checks a record's `.git` entries with it.
"""
from __future__ import annotations

import posix
import time

from sbox_shim import kept, lean

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

FORMAT = 3
NESTED = (".git", ".envrc", "HEAD")  # guard.NESTED: what git or direnv act on at any depth
PROJECTS = ("sbox.yaml", ".sbox.yaml")  # config.CONFIG_NAMES: a project of its own (guard.before)
KEPT = NESTED + PROJECTS + ("pyproject.toml",)  # the names a walk keeps the paths of ([tool.sbox] opts in too)
SLACK_NS = 50_000_000  # as guard.SLACK_NS: file times lag time.time_ns() by up to a tick
MAX_DEPTH = 512  # as guard.MAX_DEPTH: directories a walk holds open at once
PATH_FLAGS = posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
DIR = 0o040000


class Scan:
    """One walk: `listed` holds, when asked for (`stats`), every entry of each directory listed
    this time and each known KEPT entry of the others, as (path, name, lstat result); `nested`
    every NESTED entry in the tree, `too_deep` the directories deeper than MAX_DEPTH (not
    entered), `complete` whether every directory was listed or confirmed unchanged."""

    __slots__ = ("listed", "nested", "too_deep", "complete", "lists", "record")

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None  # the index this walk leaves kept, if complete
        self.lists = 0  # directories listed
        self.listed: list[tuple[str, str, Any]] = []
        self.nested: list[str] = []
        self.too_deep: list[str] = []
        self.complete = True

    def gits(self) -> tuple[str, ...]:
        """Every `.git` below the top, as gitwalk.git_entries finds them."""
        return tuple(sorted(p for p in self.nested if p.endswith("/.git")))


def path_of(top: str, state_dir: str) -> str | None:
    """Where the index of `top` is kept; None when the state directory lies in that tree."""
    base = lean.join(state_dir, "trees")
    if lean.inside(base, top):
        return None
    return lean.join(base, kept.digest(f"sbox-tree-{FORMAT}\0{top}".encode("utf-8", "surrogateescape")))


# The index `known` read before a step, for the walk after it (`scan`): read once per step, not
# twice. Should another sbox have kept a newer one meanwhile, the walk against this older one
# lists more directories, never fewer (a kept ctime it trusts is older still).
_READ: dict[str, object] = {}


def known(top: str, state_dir: str) -> list[str]:
    """The KEPT entries the last walk of `top` found; with no walk kept yet (a project's first
    writable step), those of a walk made now, and kept. Either way the index the step's own walk
    after it compares with is this one (`_READ`), never one another sbox keeps meanwhile: a walk
    made for a later step (its plan's check for `.git` entries) lists a directory this step
    changed and judges what is in it by that step's start, and the index it keeps says the
    directory is as seen (red team 8: a FIFO this step made was never judged by its start)."""
    where = path_of(top, state_dir)
    if not where:
        return []
    old = kept.read_private(where)
    if not (isinstance(old, dict) and old.get("format") == FORMAT and old.get("top") == top):
        found = scan(top, state_dir)
        old = found.record or {"format": FORMAT, "top": top, "time": 0, "dirs": {}, "nested": []}
    _READ[where] = old
    return [str(p) for p in old.get("nested", ())]


def scan(top: str, state_dir: str | None, stats: bool = False) -> Scan:
    """Walk `top` against its kept index (none: a full walk) and keep the new one; with `stats`,
    note what the walk lists (Scan.listed)."""
    where = path_of(top, state_dir) if state_dir else None
    old = (_READ.pop(where) if where in _READ else kept.read_private(where)) if where else None
    if not (isinstance(old, dict) and old.get("format") == FORMAT and old.get("top") == top):
        old = {"time": 0, "dirs": {}, "nested": []}
    started = time.time_ns()
    result, dirs = _walk(top, old, stats)
    if result.complete:
        result.record = {"format": FORMAT, "top": top, "time": started, "dirs": dirs, "nested": result.nested}
    if result.lists or dirs != old["dirs"] or not result.complete:  # else the kept index still holds
        _keep(where, result)
    elif where:
        result.record = old  # what is kept
    return result


def forget(top: str, state_dir: str) -> None:
    """Drop the kept index of `top`: the next walk lists every directory (after a check that
    failed, whose walk had kept one)."""
    where = path_of(top, state_dir)
    _READ.pop(where or "", None)
    if where:
        kept.remove(where)


def _keep(where: str | None, result: Scan) -> None:
    if where and result.record is not None:
        try:
            kept.write_private(where, result.record)
        except (OSError, ValueError):
            pass
    elif where:
        kept.remove(where)


def _walk(top: str, old: dict[str, Any], stats: bool) -> tuple[Scan, dict[str, tuple[int, int, int]]]:
    """Depth-first through directory descriptors, each opened in its parent without following a
    link: the identity kept for a path is that of the very directory listed (or confirmed
    unchanged) there. A directory another sandbox swaps for a link, or moves, while the walk
    passes is missed this once (the walk is then incomplete: nothing is kept), never recorded
    with what another directory held."""
    kept_dirs: dict[str, tuple[int, int, int]] = old["dirs"]
    settled = int(old["time"]) - SLACK_NS  # a kept ctime before this cannot hide a later change
    below: dict[str, list[str]] = {}  # kept directory -> the names of its kept subdirectories
    for p in kept_dirs:
        if p != top:
            below.setdefault(lean.dirname(p), []).append(p[p.rfind("/") + 1:])
    nested_in: dict[str, list[str]] = {}
    for p in old["nested"]:
        nested_in.setdefault(lean.dirname(p), []).append(p[p.rfind("/") + 1:])
    out = Scan()
    dirs: dict[str, tuple[int, int, int]] = {}
    try:
        st = posix.lstat(top)
    except OSError:
        out.complete = False
        return out, dirs
    if st.st_mode & 0o170000 != DIR:
        return out, dirs
    fd = _open_top(top)
    if fd < 0:
        out.complete = False
        return out, dirs
    stack = [(top, fd, iter(_enter(fd, top, out, dirs, kept_dirs, settled, below, nested_in, stats)))]
    try:
        while stack:
            path, fd, pending = stack[-1]
            name = next(pending, None)
            if name is None:
                posix.close(stack.pop()[1])
                continue
            child = path + "/" + name
            if len(stack) >= MAX_DEPTH:
                out.too_deep.append(child)
                out.complete = False
                continue
            ident = kept_dirs.get(child)
            if ident is not None and ident[2] < settled and child not in below and child not in nested_in \
                    and not (stats and relisted(child)):
                try:  # a kept leaf: its lstat in the parent's descriptor tells whether it changed
                    cst = posix.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    cst = None
                if cst is not None and (cst.st_dev, cst.st_ino, cst.st_ctime_ns) == ident:
                    dirs[child] = ident
                    continue
            try:
                inner = posix.open(name, PATH_FLAGS, dir_fd=fd)
            except OSError:  # swapped for a link, moved or removed since it was seen: not as kept
                out.complete = False
                continue
            stack.append((child, inner, iter(_enter(inner, child, out, dirs, kept_dirs, settled, below,
                                                    nested_in, stats))))
    finally:
        for _, fd, _ in stack:
            posix.close(fd)
    out.nested.sort()
    return out, dirs


def _enter(fd: int, path: str, out: Scan, dirs: dict[str, tuple[int, int, int]],
           kept_dirs: dict[str, tuple[int, int, int]], settled: int, below: dict[str, list[str]],
           nested_in: dict[str, list[str]], stats: bool) -> list[str]:
    """Note the directory open as `fd` (at `path`) and return the names of its subdirectories
    to walk: those kept, if it is unchanged since it was kept; else those it lists."""
    st = posix.fstat(fd)
    ident = (st.st_dev, st.st_ino, st.st_ctime_ns)
    dirs[path] = ident
    unchanged = kept_dirs.get(path) == ident and ident[2] < settled
    if unchanged and not (stats and relisted(path)):
        for name in nested_in.get(path, ()):  # the same names as when kept
            out.nested.append(path + "/" + name)
            if stats:
                _note(out, fd, path, name)
        return below.get(path, [])
    entries = lean.listed_at(fd, owner=True)  # an O_PATH descriptor: an unchanged directory needs no more
    if entries is None:
        out.complete = False
        return []
    out.lists += not unchanged  # a relisted directory as kept leaves the index as it is
    subdirs = []
    for name, is_dir in entries:
        if name in KEPT:
            out.nested.append(path + "/" + name)
        if stats:
            _note(out, fd, path, name)
        if is_dir and name != ".git":
            subdirs.append(name)
    return subdirs


INSTALLED = ("/site-packages/", "/dist-packages/", "/node_modules/")  # installed packages' own files


def relisted(path: str) -> bool:
    """A directory the guard's walk (`stats`) lists every time, changed or not: a `__pycache__` of
    the project's own Python, where a bytecode file rewritten in place (which leaves the
    directory's ctime as it was) runs instead of its source on the host (red team 15). Not one of
    installed packages. A walk for `.git` entries alone (the plan cache's) need not: an entry made
    in it changes its ctime."""
    return path.endswith("/__pycache__") and not any(p in path for p in INSTALLED)


def _note(out: Scan, fd: int, path: str, name: str) -> None:
    """`name` in the directory `fd` holds (at `path`) in Scan.listed, with its lstat, if it is there."""
    try:
        out.listed.append((path + "/" + name, name, posix.stat(name, dir_fd=fd, follow_symlinks=False)))
    except OSError:
        pass


def _open_top(top: str) -> int:
    """An O_PATH descriptor of `top`, not through a last link; -1 if it cannot be opened."""
    try:
        return posix.open(top, PATH_FLAGS)
    except OSError:
        return -1
