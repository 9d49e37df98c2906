"""The persistence guard's eyes: what a writable sandbox step left that the host would execute.

Before a step that can write the project, `before` notes the host-executed paths (the protected
names of layout.PROTECTED, `.husky/`, `.envrc`, `.pre-commit-config.yaml`, the root `Makefile`,
git's `core.hooksPath` directory) with the content of their small files, and the project's
`package.json` scripts. After it, `after` compares them per file, and walks the writable part of
the tree (no link followed, read-only mounts skipped) for setuid/setgid files, sockets and FIFOs
whose inode changed since the step began (ctime, which no process can set back). What is watched,
and where, is guard/watch.py's. Pure reading: guard/quarantine.py moves what this finds.
"""
from __future__ import annotations

import posix
import stat
import sys
import time

from sbox_shim import kept
from sbox_shim.guard.watch import _basename, _projects_watched, _relative, anchor, git_dirs_watched, packages_watched
from sbox_shim.guard.watch import HOST_EXECUTED, present
from sbox_shim.guard.watch import resolved, watched
from sbox_shim.guard.watch import hooks_path as hooks_path  # re-exported
from sbox_shim.guard.watch import writable_parts as writable_parts  # re-exported
from sbox_shim.guard.index import INSTALLED, PROJECTS
from sbox_shim.guard.tracked import tracker
from sbox_shim.lean import dirname, entries, inside, join, let_owner_along, let_owner_in, listed_at, normpath, open_along
from sbox_shim.lean import open_in

TYPE_CHECKING = False  # mypy reads this as True; at run time typing and plan are not loaded (warm path)
if TYPE_CHECKING:
    from typing import Callable, Iterator, Mapping, Sequence

    from sbox_shim.plan import Mount

NESTED = (".git", ".envrc", "HEAD")  # a HEAD makes its directory a git dir git finds (bare repository)
KEEP_BYTES = 1 << 20  # a changed file at most this big is rolled back from the snapshot
HASH_BYTES = 64 << 20  # a bigger one is known by its identity (a 2 TiB sparse file would take hours to hash)
MAX_DEPTH = 512  # directories a walk holds open at once (well below the usual 1024 descriptors)
LONGEST = 2048  # characters of a path the quarantine moves as it is; deeper, an ancestor is moved
COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # the clock the kernel stamps file times from
KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link", stat.S_IFSOCK: "socket",
         stat.S_IFIFO: "fifo", stat.S_IFCHR: "char-device", stat.S_IFBLK: "block-device"}


class _Record:
    """A small record without dataclasses (their import costs the warm path ~10 ms)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Entry(_Record):
    __slots__ = ("kind", "mode", "ident", "sha256", "content", "target")

    def __init__(self, kind: str, mode: int, ident: tuple[int, ...], sha256: str | None = None,
                 content: bytes | None = None, target: str | None = None) -> None:
        self.kind = kind
        self.mode = mode  # st_mode
        self.ident = ident  # device, inode, size, mtime, ctime, links: unchanged means untouched
        self.sha256 = sha256  # regular files
        self.content = content  # regular files up to KEEP_BYTES, to roll a change back
        self.target = target  # links


class Change(_Record):
    __slots__ = ("path", "what", "entry", "why")

    def __init__(self, path: str, what: str, entry: Entry, why: str) -> None:
        self.path = path  # relative to the project root
        self.what = what  # created | changed
        self.entry = entry
        self.why = why  # host-executed | setuid | socket | fifo | .git | .envrc


class Before(_Record):
    __slots__ = ("root", "started_ns", "entries", "names", "package")

    def __init__(self, root: str, started_ns: int, entries: Mapping[str, Entry], names: tuple[str, ...] = (),
                 package: bytes | None = None) -> None:
        self.root = root
        self.started_ns = started_ns
        self.entries = entries
        self.names = names  # the watched names, the hooks path as it was
        self.package = package  # package.json's bytes, parsed only when needed (json costs the warm path)

    @property
    def scripts(self) -> dict[str, str]:
        return _parse_scripts(self.package)


def readonly_targets(mounts: Sequence[Mount]) -> frozenset[str]:
    """What the step could not write: its read-only binds, and every tmpfs, under which the host's
    directory is out of its reach (skeleton.py's over a git directory, on docker writable in the
    container only)."""
    return frozenset(m.target.rstrip("/") for m in mounts
                     if m.readonly and m.kind in ("bind", "cache") or m.kind == "tmpfs")


def _entry(path: str, st: posix.stat_result, keep: bool) -> Entry:
    """_entry_at for a path (one sbox found by walking, not one it keeps content from)."""
    return _entry_at(None, path, st, keep)


def _entry_at(fd: int | None, name: str, st: posix.stat_result, keep: bool) -> Entry:
    """What `name` in the directory open as `fd` is, given its lstat `st`: kind, identity, and a
    regular file's digest (and with `keep`, its content). Read without following a link: what a
    sandbox swapped in since the lstat is another file of the same directory, never one elsewhere."""
    kind = KINDS.get(stat.S_IFMT(st.st_mode), "other")
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)
    if kind == "link":
        try:
            target: str | None = posix.readlink(name, dir_fd=fd)
        except OSError:  # no longer a link: compared as one whose target is unknown (a change)
            target = None
        return Entry(kind, st.st_mode, ident, target=target)
    if kind != "file" or st.st_size > HASH_BYTES:  # compared by `ident`: a write changes its ctime
        return Entry(kind, st.st_mode, ident)
    digest = kept.hasher()
    content = b""
    try:
        file = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return Entry(kind, st.st_mode, ident)
    try:
        while chunk := posix.read(file, 1 << 16):
            digest.update(chunk)
            if keep and len(content) <= KEEP_BYTES:
                content += chunk
    finally:
        posix.close(file)
    return Entry(kind, st.st_mode, ident, digest.hexdigest(), content if keep and len(content) <= KEEP_BYTES else None)


def _entry_under(root: str, rel: str, keep: bool = False) -> Entry | None:
    """_entry_at for root/rel, its directories opened one by one without following a link; None
    where one is a link or it is missing."""
    head, _, name = rel.rpartition("/")
    try:
        fd = open_along(root, head)
    except OSError:
        return None
    try:
        return _entry_at(fd, name, posix.stat(name, dir_fd=fd, follow_symlinks=False), keep)
    except OSError:
        return None
    finally:
        posix.close(fd)


def _tree(root: str, rel: str, skip: frozenset[str], keep: bool) -> Iterator[tuple[str, Entry]]:
    """Every entry at and under root/rel, parents first, read-only mounts not entered. Walked
    through descriptors, each directory opened in the one above it without following a link:
    another sandbox swapping a directory for a link while the walk goes (`out` -> `../home`)
    never sends it, or the content `keep` holds to roll a change back, out of the project.
    Iterative, at most MAX_DEPTH directories open: what lies deeper in a tree a step built is
    moved with the directory above it (created) or not seen."""
    head, _, name = rel.rpartition("/")
    try:
        top = open_along(root, head)
    except OSError:
        return
    stack = [(head, top, iter((name,)))]
    try:
        while stack:
            here, fd, names = stack[-1]
            name = next(names, "")
            if not name:
                posix.close(stack.pop()[1])
                continue
            rel = join(here, name) if here else name
            try:
                st = posix.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            yield rel, _entry_at(fd, name, st, keep)
            if stat.S_ISDIR(st.st_mode) and join(root, rel) not in skip and len(stack) <= MAX_DEPTH:
                inner = _open_listed(fd, name, owner=not keep)
                if inner is not None:
                    stack.append((rel, *inner))
    finally:
        for _, fd, _ in stack:
            posix.close(fd)


def _open_listed(fd: int, name: str, owner: bool) -> tuple[int, Iterator[str]] | None:
    """The directory `name` in `fd`, open (never through a link), and its names, sorted; None if
    it cannot be. With `owner` (after the step), one a sandbox made unreadable to its owner gets
    its owner's rights back to be looked in (lean.open_in)."""
    inner = open_in(fd, name, owner)
    return None if inner < 0 else (inner, iter(sorted(e.name for e in entries(inner))))


def _package(root: str) -> bytes | None:
    """package.json's bytes: a regular file of at most 1 MiB, never through a link."""
    from sbox_shim.regular import read_regular

    return read_regular(join(root, "package.json"))


def _parse_scripts(data: bytes | None) -> dict[str, str]:
    if not data:
        return {}
    import json

    from sbox_shim.trust.files import decode

    try:
        scripts = json.loads(decode(data)).get("scripts") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}


def started_ns() -> int:
    """Now, as a file written from now on has its change time at least: the kernel's coarse clock,
    which file times come from, a tick back (time.time_ns() runs up to a tick ahead of it). It
    was time.time_ns() less 50 ms: what the host wrote in those 50 ms before a step (a `git
    status` or `python3 app.py` just before a repeated step, which starts in 20 ms) counted as
    the step's, and its bytecode was moved, its `.git` with it (red teams 18 and 19)."""
    return time.clock_gettime_ns(COARSE) - int(time.clock_getres(COARSE) * 1e9)


def before(root: str, mounts: Sequence[Mount], state_dir: str | None = None) -> Before:
    """What the host-executed paths hold before a step (content kept to roll a change back), with
    what the last walk of the writable parts found (guard/index.py, in `state_dir`): each nested
    `.envrc`, so that one a step rewrites in place is put back as the host had it, and each
    project nested in this one (a directory with an sbox.yaml of its own), watched as the top is."""
    started = started_ns()
    skip = readonly_targets(mounts)
    known: list[str] = []
    if state_dir:
        from sbox_shim.guard import index

        known = [p for part in writable_parts(mounts, root) for p in index.known(part, state_dir)]
    ways: list[str] = []  # directories a configured path climbs out of (watch._climbing)
    listed = watched(root, ways) + packages_watched(root, mounts) + _projects_watched(root, known) + \
        git_dirs_watched(root, known)
    shown = present(root, listed)
    found = resolved(root, shown)  # paths in the project: present once their link is
    names = tuple(dict.fromkeys(listed + found))
    shown = list(dict.fromkeys(shown + found))
    entries = {rel: e for name in shown for rel, e in _tree(root, name, skip, keep=True)}
    entries.update(_on_the_way(root, shown, entries))
    for way in ways:  # what each is (kind and target only): one made a link is moved (`after`)
        if way not in entries and (entry := _entry_under(root, way)) is not None:
            entries[way] = entry
    for path in known:
        rel = _relative(path, root)
        if _basename(path) == ".envrc" and rel not in entries and inside(path, root):
            entry = _entry_under(root, rel, keep=True)
            if entry is not None and entry.kind == "file":
                entries[rel] = entry
    return Before(root, started, entries, names, _package(root))


def _on_the_way(root: str, names: Sequence[str], entries: Mapping[str, Entry]) -> dict[str, Entry]:
    """Each directory on the way to a watched name, up to the first link (kind and target only):
    one a step swaps for a link, or a link it re-points, sends the host elsewhere (`after`)."""
    out: dict[str, Entry] = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            rel = "/".join(parts[:i])
            if rel in entries or rel in out:
                continue
            entry = _entry_under(root, rel)
            if entry is None:
                break
            out[rel] = entry
            if entry.kind != "dir":
                break
    return out


def after(snapshot: Before, mounts: Sequence[Mount], state_dir: str | None = None,
          told: list[str] | None = None) -> list[Change]:
    """What the step created or changed among the host-executed paths, and the setuid/setgid
    files, sockets and FIFOs it made anywhere it could write. Parents sort before children."""
    root, skip = snapshot.root, readonly_targets(mounts)
    _FIRST.clear()
    _IMPORTABLE.clear()
    let_owner_in(root)  # `chmod 0 .` in the sandbox must not hide the top from the comparison
    ways: list[str] = []
    names = dict.fromkeys([*snapshot.names, *watched(root, ways)])
    changes: dict[str, Change] = {}
    for name in present(root, list(names)):
        _compare(root, name, skip, snapshot, changes)
    for way in ways:  # a directory a path git or make reads climbs out of, made a link
        _link_change(root, anchor(root, way), snapshot, changes, links_only=True)
    nested: list[str] = []
    top = root.rstrip("/") or "/"  # where Python runs scripts from: the top, each watched script's directory
    py_dirs = frozenset([top] + [dirname(join(top, n)) for n in names  # a script a git setting runs, there
                                 if n.endswith(".py") and _basename(n) not in HOST_EXECUTED and _exists(join(top, n))])
    parts = writable_parts(mounts, root)
    tracked = tracker(root, lambda dotgit: dotgit in skip or not any(inside(dotgit, p) for p in parts))
    for part in parts:
        for rel, entry in special_files(root, part, skip, snapshot.started_ns, state_dir, nested, py_dirs, tracked,
                                        told):
            if rel not in changes:
                old = snapshot.entries.get(rel)
                changes[rel] = Change(rel, "changed" if old else "created", entry, _why(root, rel, entry))
    # The projects and repositories nested in this one as the step leaves them: one it moved in
    # from elsewhere in the tree (`mv lib.tmp lib` after an earlier step's `mv lib lib.tmp`) was
    # not watched there at its start, and its Makefile is the host's to run all the same (red team 8).
    # Not what a `.git` holds (bound read-only wherever it is: a nested one made is moved whole
    # above) nor a config (a nested project's own: trusted by the host, not copied back).
    moved = list(changes)
    new = [p for p in nested if _relative(join(dirname(p), "Makefile"), root) not in names
           and _relative(join(dirname(p), "config"), root) not in names]  # not watched from the start
    extra = [n for n in _projects_watched(root, new, repos=True) + git_dirs_watched(root, new)
             if n not in names and ".git" not in n.split("/") and _basename(n) not in PROJECTS]
    for name in present(root, extra):
        if not any(name == m or name.startswith(m + "/") for m in moved):
            _compare(root, name, skip, snapshot, changes, since=snapshot.started_ns)
    return [changes[k] for k in sorted(changes, key=lambda p: (p.count("/"), p))]


def _why(root: str, rel: str, entry: Entry) -> str:
    """Why special_files found `rel`, in a quarantine's record and line."""
    name = _basename(rel)
    if name in NESTED + PROJECTS:
        return name
    if entry.kind == "dir" and _entry_under(root, rel + ".py") is not None:
        return f"a package before {name}.py"
    if entry.kind == "dir" and name == "node_modules":
        return "Node requires from it before the project's node_modules"
    if entry.kind == "dir" and name.endswith((".dist-info", ".egg-info")):
        return "Python loads its entry points"
    if entry.kind == "dir" and _entry_under(root, rel + "/__init__.py") is not None:
        return "a package named as a module of the standard library" if _standard(name) else \
            "a package Python imports before another of its name"
    if entry.kind not in ("file", "link"):
        return entry.kind
    if entry.mode & (stat.S_ISUID | stat.S_ISGID):
        return "setuid"
    if name.endswith((".pyc", ".so")) or name == PYCACHE:
        return "bytecode"
    if entry.kind == "link" and not name.endswith((".js", ".node")) and _entry_under(root, rel + ".js") is None:
        return "Python imports through it before the project's own"
    if name in PYTEST_CONFIGS:
        return "pytest takes it as its configuration when run below the top"
    if name.endswith(".py"):
        return "Python imports it before the project's own"
    return "Node requires it before the project's own"


def _compare(root: str, name: str, skip: frozenset[str], snapshot: Before, changes: dict[str, Change],
             since: int = 0) -> None:
    """Note in `changes` what of the watched `name` the step created or changed; with `since`,
    only what was written (or renamed: that sets a ctime too) since then, for a name not watched
    at the step's start (a project the host moved between runs is not the step's doing)."""
    let_owner_along(root, dirname(name))  # nor one on the way to a watched name
    way = anchor(root, name)
    if way != name:  # a directory on its way is a link: that link is what sends the host elsewhere
        return _link_change(root, way, snapshot, changes)
    for rel, entry in _tree(root, name, skip, keep=False):
        if rel in changes or entry.ident[4] < since:
            continue
        old = snapshot.entries.get(rel)
        if old is None:
            changes[rel] = Change(rel, "created", entry, "host-executed")
        elif _differs(old, entry):
            changes[rel] = Change(rel, "changed", entry, "host-executed")
        elif _linked(old, entry):  # its inode, written through another name later, is the host's file
            changes[rel] = Change(rel, "changed", entry, "a hard link was made to it")


def _link_change(root: str, way: str, snapshot: Before, changes: dict[str, Change], links_only: bool = False) -> None:
    """Note `way` (a directory on the way to a watched path) in `changes` if the step made it
    another kind of thing, or a link it re-pointed (`links_only`: only if it is a link now)."""
    entry = None if way in changes else _entry_under(root, way)
    if entry is None:
        return
    old = snapshot.entries.get(way)
    if links_only and entry.kind != "link":
        return
    if old is None or old.kind != entry.kind or old.target != entry.target:
        changes[way] = Change(way, "changed" if old else "created", entry, "host-executed")


def _linked(old: Entry, new: Entry) -> bool:
    """A host-executed file the step gave another name (`ln Makefile sub/.cache`): a later step
    that may write that name (a nested project's) would rewrite the host's file unseen. Moved,
    and put back as a file of its own."""
    if not (old.kind == new.kind == "file" and len(old.ident) > 5):
        return False
    # more names than before; or, with another name already, a name removed and one made (the
    # count the same, its ctime moved: `rm docs/Makefile.bak; ln Makefile sub/mk`)
    return new.ident[5] > old.ident[5] or (new.ident[5] > 1 and new.ident[4] != old.ident[4])


def _differs(old: Entry, new: Entry) -> bool:
    if old.kind != new.kind:
        return True
    if new.kind == "dir":  # compared per file, and by its rights (a sandbox's `chmod 0311 .husky` hides what is in it)
        return stat.S_IMODE(old.mode) != stat.S_IMODE(new.mode)
    if new.kind == "file" and (old.sha256 is None or new.sha256 is None):  # too big to hash, or unreadable
        return old.ident != new.ident or old.mode != new.mode
    if new.kind == "file":
        return old.sha256 != new.sha256 or old.mode != new.mode
    if new.kind == "link":
        return old.target != new.target
    return old.ident != new.ident


def special_files(root: str, top: str, skip: frozenset[str], since_ns: int,
                  state_dir: str | None = None, kept_out: list[str] | None = None,
                  py_dirs: frozenset[str] = frozenset(),
                  tracked: Callable[[str], bool | None] = lambda path: None,
                  told: list[str] | None = None) -> Iterator[tuple[str, Entry]]:
    """What a step left anywhere under `top` that the host would act on, judged by inodes that
    changed at or after `since_ns`: setuid/setgid files, sockets, FIFOs, Python bytecode of the
    project's own (`bytecode`), source that Python or Node imports in place of the project's
    (`shadowing_package`, `shadowing_source`; `py_dirs`: the directories Python runs scripts
    from, the top among them), and a `.git` or `.envrc` at any depth (NESTED; a directory is
    yielded whole, not entered). No link followed, read-only
    mounts not entered. Only the directories that changed since the last walk are listed (the
    index kept in `state_dir`, guard/index.py; without one, all of them), and each known NESTED
    entry is looked at again. A directory too deep to open by path (a tree built to outrun
    PATH_MAX) is yielded itself, so it is moved, not skipped."""
    from sbox_shim.guard import index

    found = index.scan(top, state_dir, stats=True)
    every = told is not None and any(n.endswith(".py") for _, n, _ in found.listed) and collects_more(root)
    if kept_out is not None:  # the KEPT entries the walk found
        kept_out += found.nested
    for directory in found.too_deep:
        yield _too_deep(root, directory)
    skipped: dict[str, bool] = {}

    def in_skip(directory: str) -> bool:  # is `directory` inside a read-only mount?
        if directory not in skipped:
            parent = dirname(directory)
            skipped[directory] = directory in skip or (parent != directory and inside(parent, top)
                                                       and in_skip(parent))
        return skipped[directory]

    seen: set[str] = set()
    moved: list[str] = []  # NESTED directories yielded whole: what is in them goes with them
    for path, name, st in found.listed:
        if path in seen or in_skip(dirname(path)) or any(inside(path, d) for d in moved):
            continue
        seen.add(path)
        fmt = stat.S_IFMT(st.st_mode)
        nested = name in NESTED and path not in skip
        # an sbox project of its own below the top (its config made or changed by the step) is the
        # host's to make: guard/watch.py watches what it holds only once the host has made it
        project = name in PROJECTS and dirname(path) != root.rstrip("/") and "node_modules" not in path.split("/")
        special = nested or project or fmt in (stat.S_IFSOCK, stat.S_IFIFO) or (
            fmt == stat.S_IFREG and (bool(st.st_mode & (stat.S_ISUID | stat.S_ISGID)) or bytecode(path, name, tracked, root))) or (
            fmt == stat.S_IFLNK and (bytecode(path, name, tracked, root) or module_link(path, name, tracked, root))) or (
            fmt == stat.S_IFDIR and (shadowing_package(path, name, since_ns, py_dirs, tracked, root)
                                     or shadowing_dir(path, name, py_dirs, root, tracked))) or (
            fmt in (stat.S_IFREG, stat.S_IFLNK) and shadowing_source(path, name, py_dirs, root, tracked))
        if not special and told is not None and fmt == stat.S_IFREG and st.st_ctime_ns >= since_ns and \
                tests_made(path, name, root, tracked, every):
            told.append(_relative(path, root))
        if special and st.st_ctime_ns >= since_ns:
            if len(path) > LONGEST:  # the walk reaches it, a path would not: moved from higher up, whole
                cut, entry = _too_deep(root, path)
                moved.append(join(root, cut))
                yield cut, entry
                continue
            if fmt == stat.S_IFDIR:
                moved.append(path)
            yield _relative(path, root), _found(root if inside(top, root) else top, path, st)


SYSTEM_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def bin_shadows(snapshot: Before) -> list[str]:
    """The commands the step put in the project's `node_modules/.bin` that are named as the
    system's (`"bin": {"git": …}` in a dependency: no install script needed), which run in place
    of them in a shell that has `node_modules/.bin` on PATH (direnv's `layout node`; red team
    23). Not the system's own Node tools (Debian's `tsc`, `rollup`: links into /usr/share/nodejs)."""
    top = snapshot.root.rstrip("/")
    try:
        fd = open_along(top, "node_modules/.bin")
    except OSError:
        return []
    try:
        if posix.fstat(fd).st_ctime_ns < snapshot.started_ns:
            return []
        listed = listed_at(fd) or []
        made = [n for n, _ in listed if _changed_at(fd, n, snapshot.started_ns)]
    finally:
        posix.close(fd)
    out = []
    for name in sorted(made):
        for directory in SYSTEM_BIN:
            try:
                posix.stat(join(directory, name))
            except OSError:
                continue
            if not _node_tool(join(directory, name)):
                out.append(name)
            break
    return out


def _node_tool(path: str) -> bool:
    """Is the system's command at `path` itself a Node package's (Debian's node-* packages)?"""
    import os

    return any(p in os.path.realpath(path) for p in ("/nodejs/", "/node_modules/"))


STARTUP = ("sitecustomize", "usercustomize")  # and every *.pth: site-packages code Python runs at start


def venv_writes(snapshot: Before, mounts: Sequence[Mount]) -> list[str]:
    """The startup code of a venv at the project's top (a directory there holding a pyvenv.cfg)
    that a step wrote, the venv not being bound writable on its own (the destination of pip's and
    uv's install phases): `pyvenv.cfg`, what `bin/` holds (`activate`, the `python` links, entry
    points), and in `site-packages` each `.pth`, and site/usercustomize and the modules a `.pth`
    imports in every form Python imports them (_module_files). Judged by change time (no
    process sets one back); relative to the project. Reported, not moved: a step that installs
    there as you asked (`sbox run -- make setup`) writes them too (red team 15: an `npm test`
    helper appended to `bin/activate`, added a `.pth` and a `bin/git`, which ran on the host, and
    nothing was said)."""
    root, since = snapshot.root.rstrip("/") or "/", snapshot.started_ns
    parts = writable_parts(mounts, root)
    own = {m.source.rstrip("/") for m in mounts if not m.readonly and m.kind in ("bind", "cache")}
    found: list[str] = []
    for name in _venvs(root):
        venv = join(root, name)
        if venv in own or not any(inside(venv, p) for p in parts):
            continue
        found += _startup(root, name, since)
    return found


def _venvs(root: str) -> list[str]:
    """The directories at the project's top holding a pyvenv.cfg (a regular file), never through a link."""
    try:
        top = open_along(root, "")
    except OSError:
        return []
    try:
        return sorted(name for name, is_dir in listed_at(top) or () if is_dir and name != ".git"
                      and _changed_at(top, name + "/pyvenv.cfg", -1) is not None)
    finally:
        posix.close(top)


def _changed_at(fd: int, rel: str, since: int) -> bool | None:
    """Whether the regular file or link `rel` below the directory `fd` changed at or after `since`
    (None: it is neither, or missing)."""
    try:
        st = posix.stat(rel, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return None
    return st.st_ctime_ns >= since


def _startup(root: str, name: str, since: int) -> list[str]:
    """What of the venv `name`'s startup code changed at or after `since`, relative to the project."""
    try:
        venv = open_along(root, name)
    except OSError:
        return []
    out: list[str] = []
    paths: list[str] = []  # the directories the .pth files' path lines put on sys.path
    imports: list[str] = []  # and the modules their import lines name
    try:
        # pyvenv.cfg, and a `bin`, `lib` or `site-packages` made a link (to a directory of the step's)
        out += [rel for rel in ("pyvenv.cfg", "bin", "lib", "local") if _changed_at(venv, rel, since)]
        out += ["bin/" + n for n in _names_in(venv, "bin") if _changed_at(venv, "bin/" + n, since)]
        # site-packages, and the dist-packages Debian's Python reads too (`lib/python3/dist-packages`,
        # `local/lib/python3.11/dist-packages`: red team 19 added a .pth there)
        for base in ("lib", "local/lib"):
            for lib in _names_in(venv, base):
                out += [f"{base}/{lib}"] if _changed_at(venv, f"{base}/{lib}", since) else []
                for site in (f"{base}/{lib}/site-packages", f"{base}/{lib}/dist-packages"):
                    out += [site] if _changed_at(venv, site, since) else []
                    out += _site_writes(venv, site, join(root, name, site), since, paths, imports)
    finally:
        posix.close(venv)
    out = [f"{name}/{rel}" for rel in out]
    # a directory of the project a path line names (an editable install's `src`): its
    # sitecustomize, and a module a .pth imports found there, run at every start too (red team 19)
    # (the project's top itself for a flat layout's editable install: red team 20)
    for path in dict.fromkeys(paths):
        if not inside(path, root):
            continue
        rel = _relative(path, root) if path != root else ""
        try:
            top = open_along(root, "")
        except OSError:
            continue
        try:
            found = [f"{rel}/{f}" if rel else f for f in _module_files(top, rel, _names_in(top, rel), [*STARTUP, *imports])]
            out += [f for f in found if _changed_at(top, f, since)]
        finally:
            posix.close(top)
    return out


def _site_writes(venv: int, site: str, where: str, since: int, paths: list[str], imported: list[str]) -> list[str]:
    """What of the site directory `site`'s startup code changed at or after `since`: each `.pth`,
    and site/usercustomize and the modules a `.pth` imports in every form Python imports them;
    into `paths` and `imported`, the directories its `.pth` files' path lines name and the modules
    their import lines do."""
    names = _names_in(venv, site)
    pths = [n for n in names if n.endswith(".pth")]
    out = [f"{site}/{n}" for n in pths if _changed_at(venv, f"{site}/{n}", since)]
    # the modules Python imports at every start: site/usercustomize, and what a .pth imports
    # (setuptools' distutils-precedence.pth imports _distutils_hack: red team 17 appended to it)
    imports, lines = _pth_lines(venv, site, pths)
    paths += [normpath(line if line.startswith("/") else join(where, line)) for line in lines]  # relative: to `site`
    imported += imports
    return out + [f"{site}/{f}" for f in _module_files(venv, site, names, [*STARTUP, *imports])
                  if _changed_at(venv, f"{site}/{f}", since)]


def _module_files(venv: int, site: str, names: list[str], modules: list[str]) -> list[str]:
    """The files (and links) of each of `modules` in `site` (whose entries are `names`), in every
    form Python imports: its source, its bytecode (sourceless `x.pyc` too, and `__pycache__`'s),
    an extension module, and a package's files and their bytecode (red team 18: a sourceless
    `sitecustomize.pyc`, a package `sitecustomize/`, and `_distutils_hack`'s pyc rewritten)."""
    out: list[str] = []
    cached = _names_in(venv, f"{site}/{PYCACHE}")
    for module in modules:
        out += [n for n in names if n.startswith(module + ".")]
        out += [f"{PYCACHE}/{n}" for n in cached if n.startswith(module + ".")]
        if module in names:  # a package (a directory reached without a link), or a file of that bare name
            package = f"{site}/{module}"
            out += [module] + [f"{module}/{n}" for n in _names_in(venv, package)]
            out += [f"{module}/{PYCACHE}/{n}" for n in _names_in(venv, f"{package}/{PYCACHE}")]
    return out


def _pth_lines(venv: int, site: str, pths: list[str]) -> tuple[list[str], list[str]]:
    """(The top-level modules the `.pth` files' import lines name (`import a, b.c`,
    `__import__('x')`), their path lines), as site.py reads them; read without following a link."""
    from sbox_shim.regular import read_regular

    found: list[str] = []
    paths: list[str] = []
    at = open_along_fd(venv, site) if pths else -1
    if at < 0:
        return found, paths
    try:
        texts = [(read_regular(name, dir_fd=at) or b"").decode("utf-8", "replace") for name in pths]
    finally:
        posix.close(at)
    for text in texts:
        for line in text.splitlines():
            if not line.startswith(("import ", "import\t")):
                paths += [line.rstrip()] if line.strip() and not line.startswith("#") else []
                continue
            words = line.replace("(", " ").replace(")", " ").replace(";", " ").replace(",", " ").split()
            names = [w.split(".")[0] for i, w in enumerate(words) if i and words[i - 1] in ("import", "from")]
            names += [w.strip("'\"").split(".")[0] for w in line.split("__import__")[1:]
                      for w in [w.lstrip("( ").split(")")[0]]]
            found += [n for n in names if n.isidentifier() and n not in found]
    return found, paths


def open_along_fd(fd: int, rel: str) -> int:
    """The directory `rel` below the directory `fd`, opened to list, each component without
    following a link; -1 if one is a link, missing or not a directory."""
    here = open_in(fd, ".")  # to list: `rel` may be "" (the directory itself)
    if here < 0:
        return -1
    for part in [p for p in rel.split("/") if p]:
        below = open_in(here, part)
        posix.close(here)
        here = below
        if here < 0:
            return -1
    return here


def _names_in(fd: int, rel: str) -> list[str]:
    """The names in the directory `rel` below `fd`, reached without following a link."""
    here = open_along_fd(fd, rel)
    if here < 0:
        return []
    try:
        return sorted(e.name for e in entries(here))
    finally:
        posix.close(here)


PYCACHE = "__pycache__"  # a link by this name sends Python to bytecode elsewhere (red team 18: into node_modules)


PYTHON_PROJECT = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "Pipfile", "tox.ini", "pytest.ini")


def _is_package(fd: int, name: str) -> bool:
    """Is `name` in the directory `fd` a package (its `__init__.py` there, reached without a link)?"""
    try:
        return stat.S_ISREG(posix.stat(f"{name}/__init__.py", dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def shadowing_package(path: str, name: str, since_ns: int, py_dirs: frozenset[str] = frozenset(),
                      tracked: Callable[[str], bool | None] = lambda path: None, root: str = "") -> bool:
    """A package whose `__init__.py` the step wrote, beside a module of its name, which Python then
    imports no more (red team 20: `tools/fsmonlib/__init__.py` beside the `fsmonlib.py` that the
    watched `core.fsmonitor` script imports, hidden by its own `.gitignore`: the host's
    `git status` ran it and showed nothing), or named as a module of the standard library in a
    directory of `py_dirs` (red team 23), or in a directory pytest puts first on sys.path named as
    a module found elsewhere (`_first_for_pytest`, red team 28). Not in installed packages."""
    if not name.isidentifier() or any(p in path for p in INSTALLED):
        return False
    here = dirname(path)
    try:
        init = posix.lstat(join(path, "__init__.py"))
    except OSError:
        return False
    if not (here in py_dirs and _standard(name) or _exists(join(here, name + ".py"))
            or root and _first_for_pytest(here, name, root, tracked)):
        return False
    # a package git tracks is the project's own (red team 27: a Django app `profile/` whose
    # `__init__.py` a formatter rewrote was moved whole)
    return init.st_ctime_ns >= since_ns and tracked(join(path, "__init__.py")) is not True


NODE_ORDER = ("", ".js", ".json", ".node", "/")  # how `require("./x")` looks: x, x.js, x.json, x.node, x/
NODE_INDEX = ("index.js", "index.json", "index.node")  # what `require("./x")` runs in x/ without a package.json
# executables' magic numbers, none of them a JavaScript file's start: ELF, Mach-O (both byte orders,
# 32 and 64 bits, fat); not PE's `MZ`, which can begin a script
BINARY = (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
          b"\xca\xfe\xba\xbe")
# modules the standard library (or pip, or pytest) tries to import and does without: `copy` and
# `pickle` try `org.python.core`, a `__pypy__` is probed, pip's `_manylinux`, platform's `java`
PROBED = ("org", "__pypy__", "_manylinux", "java", "vms_lib")


def _standard(stem: str) -> bool:
    """Is `stem` a module Python's own code imports (the standard library's, or one it probes)?"""
    return stem in getattr(sys, "stdlib_module_names", ()) or stem in PROBED or stem.startswith("_sysconfigdata")


def shadowing_source(path: str, name: str, py_dirs: frozenset[str], root: str,
                     tracked: Callable[[str], bool | None]) -> bool:
    """Source a step made, git tracks not, that Python, pytest or Node runs in place of the
    project's (red teams 23 and 24; `tracked`: guard/tracked.py, None without a repository):
    - a module named as one Python's own code imports (the standard library's, `org`,
      `__pypy__`, `_sysconfigdata*`) in a directory Python runs scripts from (`py_dirs`: the
      project's top, where `python3 -m tool` and `python3 app.py` put it first on sys.path, and
      each directory of a script a git setting runs): the global config's `textconv = python3 -m
      json.tool` ran a step's `argparse.py` at the host's `git diff`;
    - a `conftest.py`, `test_*.py` or `*_test.py`, which pytest imports wherever it collects
      (one in `tests/`, hidden by its own `.gitignore`, ran at the host's `python3 -m pytest`);
    - a file `require("./x")` finds before the project's tracked `x.json`, `x.node` or `x/`
      (`lib.js` beside `lib/`, `config.js` beside `config.json`, `tools/nbdiff.node` beside
      `tools/nbdiff/`, an `x` beside `x.js` unless an executable, which Node cannot load), and a
      `package.json` in a directory whose tracked `index.js` it replaces (its `main`); not what
      shadows only what the step or a build made (`dist/api.js` beside `dist/api/`: red team 24
      had a TypeScript build's output moved);
    - an `x.py` beside a namespace package `x/` (no `__init__.py`) whose files git tracks;
    - in a directory pytest puts first on sys.path, a module named as one a test there imports
      from elsewhere (`_first_for_pytest`, red team 28: a hidden `tests/app.py` before the top's);
    - a pytest configuration below the top (`tests/pytest.ini`, a `tox.ini` with `[pytest]`):
      `python3 -m pytest tests/` takes it over the top's, `addopts = -p x` and all (red team 29).
    Not in installed packages. Called for every file a guard walk lists: cheap tests first."""
    if any(p in path for p in INSTALLED):
        return False
    here = dirname(path)
    if name in PYTEST_CONFIGS:
        return here != root.rstrip("/") and inside(here, root) and _collected(path, root) \
            and tracked(path) is not True and pytest_config(path, name)
    stem, dot, suffix = name.rpartition(".")
    if name.endswith(".py"):
        python = here in py_dirs and _standard(stem) or _namespace_before(here, stem, tracked) or (
            name == "__init__.py" and bool(tracked(join(here, "*.py")))) or (  # a package's, `tests/` made one
            stem.isidentifier() and tracked(path) is not True and _first_for_pytest(here, stem, root, tracked))
        return python and tracked(path) is not True
    if name == "package.json":
        return any(tracked(join(here, n)) for n in NODE_INDEX) and not tracked(path) and _points_elsewhere(path)
    suffix = dot + suffix if dot and stem else ""
    stem = stem if suffix else name
    if suffix not in ("", ".js", ".node") or not stem or stem.startswith("."):
        return False
    for later in NODE_ORDER[NODE_ORDER.index(suffix) + 1:]:
        sibling = join(here, stem) if later == "/" else join(here, stem + later)
        try:
            st = posix.lstat(sibling)
        except OSError:
            continue
        if (later == "/") != stat.S_ISDIR(st.st_mode):
            continue
        loads = [join(sibling, n) for n in ("package.json",) + NODE_INDEX] if later == "/" else [sibling]
        if not any(tracked(p) for p in loads):  # `src/routes/` of .ts files: tsc's `src/routes.js` is the build's
            continue
        if tracked(path) or suffix == ".js" and any(tracked(join(here, stem + s)) for s in COMPILED):
            return False  # tsc's `src/config.js` from a tracked `src/config.ts`, beside `src/config.json`
        return bool(suffix) or _binary(path) is not True  # unreadable: as Node may read it
    return False


COMPILED = (".ts", ".tsx", ".mts", ".cts", ".jsx", ".coffee")  # what a build compiles to `x.js` beside it


def _points_elsewhere(path: str) -> bool:
    """Does this package.json send `require` of its directory to another file than its `index.js`
    (a `main` or `exports` naming one; not `{"type": "module"}`, ncc's)?"""
    import json

    from sbox_shim.regular import read_regular

    try:
        data = json.loads(read_regular(path) or b"{}")
    except ValueError:
        return True  # Node fails on it: nothing it runs, but nothing to trust either
    if not isinstance(data, dict):
        return False
    main = data.get("main")
    same = main is None or isinstance(main, str) and normpath(main.removeprefix("./")) in ("index", "index.js", ".")
    return not same or "exports" in data


def tests_made(path: str, name: str, root: str, tracked: Callable[[str], bool | None], every: bool = False) -> bool:
    """A test module a step made that git does not track, which pytest imports wherever it
    collects (`conftest.py`, `test_*.py`, `*_test.py`; red teams 23 and 24 hid one with its own
    `.gitignore`, and the host's `python3 -m pytest` ran it). Said in a line, not moved: a code
    generator writes tests too (red team 26: openapi-generator's new `test/test_store_api.py`)."""
    test = name == "conftest.py" or name.startswith("test_") and name.endswith(".py") or name.endswith("_test.py")
    return (test or every and name.endswith(".py")) and not any(p in path for p in INSTALLED) \
        and _collected(path, root) and tracked(path) is not True


PYTEST_CONFIGS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg", "pytest.toml", ".pytest.toml")
PYTEST_SECTIONS = {"tox.ini": "[pytest]", "setup.cfg": "[tool:pytest]", "pyproject.toml": "[tool.pytest"}


def pytest_config(path: str, name: str) -> bool:
    """Is this file one pytest takes as its configuration (a `pytest.ini` whatever it holds; the
    others with pytest's section)?"""
    from sbox_shim.regular import read_regular

    section = PYTEST_SECTIONS.get(name)
    return section is None or section.encode() in (read_regular(path) or b"").replace(b" ", b"")


def collects_more(root: str) -> bool:
    """Does the project's pytest configuration collect more than `test_*.py` (a `python_files`
    setting: pytest-django's `tests.py`; `--doctest-modules`: every module)? Then every module a
    step makes where pytest collects is said (red team 27)."""
    from sbox_shim.regular import read_regular

    text = " ".join((read_regular(join(root, n)) or b"").decode("utf-8", "replace") for n in PYTEST_CONFIGS)
    return "python_files" in text or "doctest-modules" in text or "doctest_modules" in text


NOT_COLLECTED = ("build", "dist", "node_modules", "venv", "CVS", "_darcs", "{arch}")  # pytest's norecursedirs


def _collected(path: str, root: str) -> bool:
    """Would pytest, run at the project's top, look in this file's directory (not in `build/`, a
    hidden directory or the others it skips: `pip install .` copies a package's tests to
    `build/lib/`)?"""
    parts = path[len(root.rstrip("/")) + 1:].split("/")[:-1] if inside(path, root) else []
    return not any(p in NOT_COLLECTED or p.startswith(".") or p.endswith(".egg") for p in parts)


def _first_for_pytest(here: str, stem: str, root: str, tracked: Callable[[str], bool | None]) -> bool:
    """Is `stem` in the directory `here` a module pytest's tests import in place of one found
    elsewhere? pytest (its default `prepend` import mode) puts the first directory without an
    `__init__.py` above each test module and conftest.py it collects first on sys.path: so a
    step's hidden `tests/app.py` ran at the host's `python3 -m pytest` in place of the reviewed
    top-level `app.py` (red team 28). `stem`: a standard module, one installed in a venv at the
    top (`_importable`), or one a `sys.path` entry anywhere in the repository would import by that
    name (tracked.py's `_top_level`: the top's, `src/`'s, a `pythonpath` directory's, an editable
    install's, a tracked conftest's `sys.path.insert(0, "lib")`: red team 32; not `pkg/utils.py`,
    which imports as `pkg.utils`: red team 31); `here`: `_pytest_dir`."""
    top = root.rstrip("/")
    if stem in NOT_IMPORTED or not (_standard(stem) or stem in _importable(top)[0]
                                    or tracked(join(top, "**", stem + ".py")) or tracked(join(top, "**", stem, "*.py"))):
        return False
    if here not in _FIRST:
        _FIRST[here] = _pytest_dir(here, top, tracked)
    return _FIRST[here]


# names no test imports from elsewhere: a scaffolded `newproj/setup.py` or `newproj/tests/`
# shadows nothing (red team 31); a `tests` package pytest has imported is in sys.modules already
NOT_IMPORTED = ("setup", "conftest", "tests", "test", "__main__")


TEST_DEPTH = 4  # packages below a test directory looked into for test modules (tests/unit/api/…)


def _pytest_dir(here: str, top: str, tracked: Callable[[str], bool | None], depth: int = 0) -> bool:
    """Would pytest put `here` first on sys.path: below the top, where it collects, no package
    itself (a regular `__init__.py` that stays: not one the guard moves, nor a directory or a link
    by that name, red team 29), holding a Python file git tracks, or a test module or conftest.py
    in it or in a package below it (`tests/unit/__init__.py`: pytest's basedir is `tests/`; a
    test directory the step made: red team 29)?"""
    if depth == 0:
        if here in _importable(top)[1]:  # a `pythonpath` directory: first, tests or not (red team 31)
            return here != top
        if here == top or not inside(here, top) or not _collected(join(here, "-"), top) or _regular_package(here, tracked):
            return False
        if tracked(join(here, "*.py")):
            return True
    for name, is_dir in _listed(top, here):
        if not is_dir and (name == "conftest.py" or name.startswith("test_") and name.endswith(".py")
                           or name.endswith("_test.py")):
            return True
        if is_dir and depth < TEST_DEPTH and not name.startswith(".") and name not in NOT_COLLECTED \
                and _regular_package(join(here, name), tracked) and _pytest_dir(join(here, name), top, tracked, depth + 1):
            return True
    return False


def _regular_package(directory: str, tracked: Callable[[str], bool | None]) -> bool:
    """Does `directory` hold a regular `__init__.py` that stays (git tracks it, or no tracked
    module beside it makes the guard move it)?"""
    init = join(directory, "__init__.py")
    try:
        if not stat.S_ISREG(posix.lstat(init).st_mode):
            return False
    except OSError:
        return False
    return tracked(init) is not False or not tracked(join(directory, "*.py"))


# what `_first_for_pytest` learnt in one walk (`after` clears them: a step changes both)
_FIRST: dict[str, bool] = {}
_IMPORTABLE: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _listed(top: str, directory: str) -> list[tuple[str, bool]]:
    """(name, is a directory) in `directory` below `top`, reached without following a link."""
    try:
        fd = open_along(top, directory[len(top) + 1:])
    except OSError:
        return []
    try:
        return listed_at(fd) or []
    finally:
        posix.close(fd)


def _importable(top: str) -> tuple[frozenset[str], frozenset[str]]:
    """(The top-level names of the venvs at the project's top (`requests` of
    `.venv/lib/python3.11/site-packages/requests/`), the directories the project's pytest
    configuration puts first on sys.path (`pythonpath`)). Directories are listed without following
    a link. The project's own modules a test imports are tracked.py's `_top_level` markers: the
    top's, `src/`'s, a `pythonpath` directory's and an editable install's among them."""
    if top not in _IMPORTABLE:
        names: set[str] = set()
        for venv in _venvs(top):
            for python, _ in _listed(top, join(top, venv, "lib")):
                for entry, is_dir in _listed(top, join(top, venv, "lib", python, "site-packages")):
                    if is_dir and entry.isidentifier() or entry.endswith((".py", ".so")):
                        names.add(entry.partition(".")[0])
        _IMPORTABLE[top] = (frozenset(names), frozenset(join(top, d) for d in _pythonpath(top)))
    return _IMPORTABLE[top]


def _pythonpath(top: str) -> list[str]:
    """The directories the pytest configuration at the top puts on sys.path (`pythonpath = src lib`,
    `pythonpath = ["src", "lib"]`, over lines too), relative to the top, normalised, inside it."""
    from sbox_shim.regular import read_regular

    found: list[str] = []
    for name in PYTEST_CONFIGS:
        lines = (read_regular(join(top, name)) or b"").decode("utf-8", "replace").splitlines()
        for i, line in enumerate(lines):
            key, eq, value = line.partition("=")
            if not eq or key.strip() != "pythonpath":
                continue
            words = [value]
            for more in lines[i + 1:]:  # an ini value's indented lines, a TOML array's
                if not more.strip() or "=" in more or not (more[0].isspace() or "[" in value and "]" not in " ".join(words)):
                    break
                words.append(more)
            for word in " ".join(words).replace("[", " ").replace("]", " ").replace(",", " ").split():
                word = word.strip("'\"")
                parts = [part for part in word.split("/") if part not in ("", ".")]
                if parts and not word.startswith("/") and ".." not in parts:
                    found.append("/".join(parts))
    return found


def _namespace_before(here: str, stem: str, tracked: Callable[[str], bool | None]) -> bool:
    """Is there a directory `stem` beside, without an `__init__.py`, with files git tracks (a
    namespace package, which Python imports only when no `stem.py` is found)?"""
    try:
        if not stat.S_ISDIR(posix.lstat(join(here, stem)).st_mode):
            return False
        posix.lstat(join(here, stem, "__init__.py"))
        return False
    except FileNotFoundError:
        return bool(tracked(join(here, stem)))
    except OSError:
        return False


def shadowing_dir(path: str, name: str, py_dirs: frozenset[str], root: str,
                  tracked: Callable[[str], bool | None]) -> bool:
    """A directory a step made that Python or Node then searches before the project's own (red
    team 24), git tracking nothing in it: a `node_modules` below the top in a directory with no
    `package.json` (`src/node_modules/dep/` is what `src/app.js`'s `require("dep")` finds before
    the installed `node_modules/dep`), and a `*.dist-info` where Python runs scripts from (its
    `entry_points.txt` names pytest plugins that `python3 -m pytest` loads from the top)."""
    if any(p in path + "/" for p in INSTALLED[:2]) or "/node_modules/" in path:
        return False
    here = dirname(path)
    if name == "node_modules":  # not in a hidden directory: no project's source lies below one
        top = root.rstrip("/")
        if here == top or "/." in here[len(top):]:
            return False
        try:
            posix.lstat(join(here, "package.json"))
            return False
        except OSError:  # beside the project's tracked source, not in a build's output (red team 27)
            return bool(tracked(here)) and not tracked(path)
    return name.endswith((".dist-info", ".egg-info")) and here in py_dirs and not tracked(path) and _plugins(path, tracked)


def _plugins(path: str, tracked: Callable[[str], bool | None]) -> bool:
    """Does this metadata directory name entry points other than scripts (`[pytest11]`: plugins a
    tool loads on its own)? A package vendored with `pip install --target .` names scripts only."""
    from sbox_shim.regular import read_regular

    text = (read_regular(join(path, "entry_points.txt")) or b"").decode("utf-8", "replace")
    plugins: list[tuple[str, str]] = []  # (group, the module an entry imports) of each entry not a script's
    group = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            group = line[1:-1].strip()
        elif "=" in line and group not in ("console_scripts", "gui_scripts"):
            plugins.append((group, line.partition("=")[2].partition("[")[0].partition(":")[0].strip()))
    # a plugin project's own egg-info (`setup.py egg_info`): its packaging declares the group (red team
    # 27) and each entry's module (red team 28's note: the group alone vouched for a step's `evilmod`)
    declared = " ".join((read_regular(join(dirname(path), n)) or b"").decode("utf-8", "replace")
                        for n in PYTHON_PROJECT[:3] if tracked(join(dirname(path), n))) if plugins else ""
    return any(g not in declared or not _names_word(declared, module) for g, module in plugins)


def _names_word(text: str, word: str) -> bool:
    """Does `text` hold `word` whole (`pkg.plugin` in `'pkg.plugin:main'`, not `pkg` in it)?"""
    at = text.find(word)
    while word and at >= 0:
        before, after = text[at - 1:at], text[at + len(word):at + len(word) + 1]
        if not (before.isalnum() or before in (".", "_")) and not (after.isalnum() or after in (".", "_")):
            return True
        at = text.find(word, at + 1)
    return False


def _exists(path: str) -> bool:
    try:
        posix.lstat(path)
        return True
    except OSError:
        return False


def _binary(path: str) -> bool | None:
    """Does the file at `path` begin as an executable (ELF, Mach-O: a build's `cli` beside `cli.js`,
    cross-compiled by bun or pkg; red team 27)? None: unreadable."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        return posix.read(fd, 4) in BINARY
    except OSError:
        return None
    finally:
        posix.close(fd)


def module_link(path: str, name: str, tracked: Callable[[str], bool | None] | None = None, root: str = "") -> bool:
    """A link Python imports through in place of the project's code: a `__pycache__`, or one
    named as a module that shadows a `.py` beside it or the standard library (`util` ->
    `node_modules/.cache/u`, a package whose `__init__.pyc` the guard leaves alone there: red
    teams 18 and 19), or one found elsewhere in a directory pytest puts first on sys.path (`tests/app`
    -> `../build/p`, red team 29). Not in installed packages."""
    if any(p in path for p in INSTALLED):
        return False
    stem = name[:-3] if name.endswith(".py") else name
    if name == PYCACHE or not stem.isidentifier():
        return name == PYCACHE
    if root and tracked is not None and _first_for_pytest(dirname(path), stem, root, tracked):
        return True
    # `site`, `test`, `html`: where Python runs (a `.py`, a package, a Python project's files there:
    # `python3 -m pkg.app` at a top holding only `pkg/` imported `json` from a link, red team 20)
    if stem in getattr(sys, "stdlib_module_names", ()):
        try:
            fd = open_along(dirname(path), "")
        except OSError:
            return True
        try:
            listed = listed_at(fd)
            return listed is None or any(n.endswith(".py") or n in PYTHON_PROJECT or is_dir and _is_package(fd, n)
                                         for n, is_dir in listed)
        finally:
            posix.close(fd)
    if stem != name:
        return False  # `x.py`: a package `x/` beside it comes first
    try:
        posix.lstat(join(dirname(path), stem + ".py"))
        return True
    except OSError:
        return False


def bytecode(path: str, name: str, tracked: Callable[[str], bool | None] | None = None, root: str = "") -> bool:
    """A file Python runs on the host in place of the project's source (red team 15: a step planted
    `__pycache__/util.cpython-311.pyc` for a reviewed `util.py`, `git status` showed nothing, and
    the host's `python3 app.py` and its own git hook ran it): any `.pyc`; any extension module
    named for Python (`x.cpython-311-x86_64-linux-gnu.so`, `x.abi3.so`: red team 17 planted
    `util/__init__.cpython-311-….so`, a package Python imports before `util.py`, and a top-level
    `json.cpython-311-….so` before the standard library's); and a plain `x.so` that shadows a
    `.py` or package beside it, a package's `__init__`, a module of the standard library, or one
    found elsewhere in a directory pytest puts first on sys.path (`_first_for_pytest`). Not
    in installed packages (a venv's `site-packages`, `node_modules`): those are what was installed.
    Sandboxes run Python with PYTHONDONTWRITEBYTECODE, so a step writes none of its own accord;
    a C extension built in place in the project (`pip install -e .`) is moved too. Called for every
    regular file a guard walk lists (a whole node_modules after an install): the suffix first."""
    if not name.endswith((".pyc", ".so")) or any(p in path for p in INSTALLED):
        return False
    if name.endswith(".pyc"):
        return True
    stem, _, tag = name[:-3].partition(".")
    if tag:
        return tag == "abi3" or tag.startswith(("cpython-", "pypy"))
    if stem == "__init__" or stem in getattr(sys, "stdlib_module_names", ()):
        return True
    for beside in (stem + ".py", stem + "/__init__.py"):
        try:
            posix.lstat(join(dirname(path), beside))
            return True
        except OSError:
            pass
    if root and tracked is not None and stem.isidentifier() and _first_for_pytest(dirname(path), stem, root, tracked):
        return True
    try:  # a namespace package `x/` (no `__init__`): Python takes `x.so` first (red team 25)
        is_dir = stat.S_ISDIR(posix.lstat(join(dirname(path), stem)).st_mode)
    except OSError:
        return False  # not a directory of Python git tracks: `go build -buildmode=plugin`'s (red team 27)
    return is_dir and tracked is not None and bool(tracked(join(dirname(path), stem, "*.py")))


def _found(base: str, path: str, st: posix.stat_result) -> Entry:
    """The Entry of what a walk found at `path`, given its lstat: a file read (for its digest) or
    a link read in its directory reached from `base` (the project, or a writable part outside
    it) without following a link, as the walk reached it."""
    if stat.S_ISDIR(st.st_mode):
        return _entry_at(None, path, st, keep=False)  # nothing read
    rel = path[len(base.rstrip("/")) + 1:]
    try:
        fd = open_along(base, dirname(rel))
    except OSError:  # no longer there as it was: its identity only
        return Entry(KINDS.get(stat.S_IFMT(st.st_mode), "other"), st.st_mode,
                     (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink))
    try:
        return _entry_at(fd, _basename(rel), st, keep=False)
    finally:
        posix.close(fd)


def _too_deep(root: str, directory: str) -> tuple[str, Entry]:
    """An ancestor of `directory` (below MAX_DEPTH levels in a writable part) well within reach
    of a path (at most 64 levels down and 2,048 characters, where no real tree goes): moved
    whole, with everything under it. Reached from `root` without following a link."""
    parts = _relative(directory, root).split("/")
    n = min(max(1, len(parts) // 2), 64)
    while n > 1 and len("/".join(parts[:n])) > 2048:
        n -= 1
    head, name = "/".join(parts[:n - 1]), parts[n - 1]
    fd = open_along(root, head)
    try:
        return "/".join(parts[:n]), _entry_at(fd, name, posix.stat(name, dir_fd=fd, follow_symlinks=False), keep=False)
    finally:
        posix.close(fd)


def _printable(text: str) -> str:
    from sbox_shim.trust.files import printable

    return printable(text)


def script_changes(snapshot: Before) -> list[str]:
    """package.json scripts the step added or changed, one line each (reported, not quarantined)."""
    package = _package(snapshot.root)
    if package == snapshot.package:
        return []
    now, lines = _parse_scripts(package), []
    for name, body in now.items():
        if name not in snapshot.scripts:
            lines.append(_printable(f"sbox: package.json script {name!r} was added by the sandbox: {body}"))
        elif snapshot.scripts[name] != body:
            lines.append(_printable(f"sbox: package.json script {name!r} was changed by the sandbox: {body}"))
    return lines


HOOK_INSTALLERS = ("husky", "simple-git-hooks", "lefthook", "pre-commit install", "core.hookspath", "git-hooks")


def installs_hooks(command: Sequence[str], snapshot: Before) -> bool:
    """Is this step the project's own git hook installer (`npm run prepare` running husky, ...)?"""
    words = [_basename(w) for w in command]
    if "husky" in words:
        return True
    if list(command[-2:]) == ["run", "prepare"]:
        body = snapshot.scripts.get("prepare", "").lower()
        return any(name in body for name in HOOK_INSTALLERS)
    return False
