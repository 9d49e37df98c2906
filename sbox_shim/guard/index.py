"""A writable tree's directories, kept between runs so that a walk lists only what changed.

Listing every entry of node_modules (20,000 files: about 25 ms, 85 ms with an lstat each) before
and after each step was most of a warm run. A directory's ctime changes whenever an entry is
created, removed or renamed in it, and no process can set a ctime back. So each walk keeps, in
sbox's state directory (kept.py's private files, which no sandbox can write), every directory's
(device, inode, ctime) and the NESTED entries (.git, .envrc, HEAD) it holds; the next walk lstats
each kept directory top-down and lists only those that changed, plus each one whose ctime is
within SLACK_NS of the walk that kept it (file times come from a coarse clock: a change in the
same tick would leave the same ctime), and every directory below a new one. Links are never
followed; `.git` directories are not entered (each is a read-only bind in the sandbox).

What a walk does not see is a change to an existing entry of an unchanged directory: its content
(the guard hashes the host-executed names apart, and lstats every known NESTED entry itself) or
its mode (a setuid or setgid bit, which the seccomp filter refuses to every sandbox). A walk that
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
DIR = 0o040000


class Scan:
    """One walk: `listed` holds the entries of every directory listed this time (os.DirEntry:
    lstat them with `.stat(follow_symlinks=False)`), `nested` every NESTED entry in the tree,
    `too_deep` the directories too deep to open by path, `complete` whether every directory was
    listed or confirmed unchanged."""

    __slots__ = ("listed", "nested", "too_deep", "complete", "lists")

    def __init__(self) -> None:
        self.lists = 0  # directories listed
        self.listed: list[Any] = []
        self.nested: list[str] = []
        self.too_deep: list[str] = []
        self.complete = True

    def gits(self) -> tuple[str, ...]:
        """Every `.git` below the top, as lean.git_entries finds them."""
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
    writable step), those of a walk made now, and kept."""
    where = path_of(top, state_dir)
    old = kept.read_private(where) if where else None
    if where and isinstance(old, dict) and old.get("format") == FORMAT and old.get("top") == top:
        _READ[where] = old
        return [str(p) for p in old.get("nested", ())]
    return list(scan(top, state_dir).nested) if where else []


def scan(top: str, state_dir: str | None) -> Scan:
    """Walk `top` against its kept index (none: a full walk) and keep the new one."""
    where = path_of(top, state_dir) if state_dir else None
    old = (_READ.pop(where) if where in _READ else kept.read_private(where)) if where else None
    if not (isinstance(old, dict) and old.get("format") == FORMAT and old.get("top") == top):
        old = {"time": 0, "dirs": {}, "nested": []}
    started = time.time_ns()
    result, dirs = _walk(top, old)
    if result.lists or dirs != old["dirs"] or not result.complete:  # else the kept index still holds
        _keep(where, top, started, dirs, result)
    return result


def _keep(where: str | None, top: str, started: int, dirs: dict[str, tuple[int, int, int]], result: Scan) -> None:
    if where and result.complete:
        try:
            kept.write_private(where, {"format": FORMAT, "top": top, "time": started, "dirs": dirs,
                                       "nested": result.nested})
        except (OSError, ValueError):
            pass
    elif where:
        kept.remove(where)


def _walk(top: str, old: dict[str, Any]) -> tuple[Scan, dict[str, tuple[int, int, int]]]:
    kept_dirs: dict[str, tuple[int, int, int]] = old["dirs"]
    settled = int(old["time"]) - SLACK_NS  # a kept ctime before this cannot hide a later change
    children: dict[str, list[str]] = {}
    for p in kept_dirs:
        if p != top:
            children.setdefault(lean.dirname(p), []).append(p)
    nested_in: dict[str, list[str]] = {}
    for p in old["nested"]:
        nested_in.setdefault(lean.dirname(p), []).append(p)
    out = Scan()
    dirs: dict[str, tuple[int, int, int]] = {}
    try:
        st = posix.lstat(top)
    except OSError as exc:
        out.complete = False
        if exc.errno == 36:  # ENAMETOOLONG
            out.too_deep.append(top)
        return out, dirs
    if st.st_mode & 0o170000 != DIR:
        return out, dirs
    stack = [(top, (st.st_dev, st.st_ino, st.st_ctime_ns))]
    while stack:
        directory, ident = stack.pop()
        dirs[directory] = ident
        if kept_dirs.get(directory) == ident and ident[2] < settled:
            out.nested += nested_in.get(directory, ())  # the same names as when kept
            for child in children.get(directory, ()):
                try:
                    cst = posix.lstat(child)
                except OSError as exc:
                    if exc.errno == 36:
                        out.too_deep.append(child)
                    out.complete = False  # an unchanged directory lost an entry: not as kept
                    continue
                if cst.st_mode & 0o170000 == DIR:
                    stack.append((child, (cst.st_dev, cst.st_ino, cst.st_ctime_ns)))
            continue
        try:
            entries = lean.listing(directory)
        except OSError as exc:
            if exc.errno == 36:
                out.too_deep.append(directory)
            out.complete = False
            continue
        out.lists += 1
        with entries:
            for entry in entries:
                out.listed.append(entry)
                if entry.name in KEPT:
                    out.nested.append(entry.path)
                if entry.name == ".git" or not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    if exc.errno == 36:
                        out.too_deep.append(entry.path)
                    out.complete = False
                    continue
                stack.append((entry.path, (est.st_dev, est.st_ino, est.st_ctime_ns)))
    out.nested.sort()
    return out, dirs
