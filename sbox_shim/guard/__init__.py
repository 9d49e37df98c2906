"""The persistence guard's eyes: what a writable sandbox step left that the host would execute.

Before a step that can write the project, `before` notes the host-executed paths (the protected
names of layout.PROTECTED, `.husky/`, `.envrc`, `.pre-commit-config.yaml`, the root `Makefile`,
git's `core.hooksPath` directory) with the content of their small files, and the project's
`package.json` scripts. After it, `after` compares them per file, and walks the writable part of
the tree (no link followed, read-only mounts skipped) for setuid/setgid files, sockets and FIFOs
whose inode changed since the step began (ctime, which no process can set back). Pure reading:
guard/quarantine.py moves what this finds.
"""
from __future__ import annotations

import errno
import posix
import stat
import time

from sbox_shim import kept
from sbox_shim.gitconfig import settings
from sbox_shim.lean import dirname, git_dirs, inside, join, normpath
from sbox_shim.protected import PROTECTED

TYPE_CHECKING = False  # mypy reads this as True; at run time typing and plan are not loaded (warm path)
if TYPE_CHECKING:
    from typing import Any, Iterator, Mapping, Sequence

    from sbox_shim.plan import Mount

# At the project's top: files the host runs or reads as code later (git hooks and their managers,
# direnv and dotenv, make in all its spellings, editors', dev containers' and agents' tasks).
HOST_EXECUTED = (".husky", ".githooks", ".envrc", ".env", ".pre-commit-config.yaml", "Makefile", "makefile",
                 "GNUmakefile", "lefthook.yml", "lefthook.yaml", ".lefthook.yml", ".lefthook.yaml",
                 ".lintstagedrc", ".lintstagedrc.json", ".lintstagedrc.js", ".lintstagedrc.cjs",
                 ".lintstagedrc.mjs", ".lintstagedrc.yaml", ".lintstagedrc.yml", "lint-staged.config.js",
                 "lint-staged.config.cjs", "lint-staged.config.mjs", ".mcp.json", ".devcontainer", ".zed",
                 "mise.toml", ".mise.toml", "mise.local.toml", ".mise.local.toml", ".config/mise.toml",
                 ".config/mise", ".tool-versions", "justfile", "Justfile", ".justfile", "lefthook-local.yml",
                 ".lefthook-local.yml", ".devcontainer.json", ".cursor", ".gemini", ".roo", ".kiro", ".amazonq",
                 ".continue", ".windsurf", "gradlew", "mvnw", ".mvn", "Taskfile.yml", "Taskfile.yaml", "Rakefile",
                 ".bazelrc", "Procfile", ".exrc", ".nvim.lua", ".lazy.lua", ".envrc.local", ".env.local",
                 ".lfsconfig", ".gitconfig", ".gitmodules", "CLAUDE.md", "AGENTS.md", "GEMINI.md", ".clinerules",
                 ".aider.conf.yml", ".pdbrc", ".pdbrc.py", "sitecustomize.py", "usercustomize.py", ".nvimrc",
                 ".vimrc", ".hg", "taskfile.yml", "taskfile.yaml", "Taskfile.dist.yml", "Taskfile.dist.yaml",
                 "taskfile.dist.yml", "taskfile.dist.yaml", ".config/lefthook.yml", ".config/lefthook.yaml",
                 "mise", ".mise", "opencode.json", ".opencode", ".codex", ".qwen", ".crush.json", "crush.json",
                 ".junie", ".augment", ".trae", "flake.nix", "shell.nix", "default.nix", "devenv.nix",
                 "devenv.yaml", "devbox.json", "bunfig.toml", ".sl", ".jj", "opencode.jsonc", ".lvimrc",
                 ".dir-locals.el", ".gdbinit", ".lldbinit")
# Not here: the tool configs sbox's trust gate holds instead (.cargo/config.toml, .yarnrc.yml,
# .pnpmfile.cjs, .npmrc, pip.conf, ...): one a sandbox wrote is refused, named, until `sbox trust`.
# Also at the top, in any spelling of its case (just finds its file so) or by ending: listed names.
CASELESS = ("justfile", ".justfile")
ENDINGS = (".code-workspace",)
# At any depth: git runs a repository's config (core.fsmonitor, hooks) wherever a `.git` is, and
# direnv loads an `.envrc` in any directory the user enters.
NESTED = (".git", ".envrc", "HEAD")  # a HEAD makes its directory a git dir git finds (bare repository)
KEEP_BYTES = 1 << 20  # a changed file at most this big is rolled back from the snapshot
HASH_BYTES = 64 << 20  # a bigger one is known by its identity (a 2 TiB sparse file would take hours to hash)
SLACK_NS = 50_000_000  # file times come from a coarse clock, a tick behind time.time_ns()
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
        self.ident = ident  # device, inode, size, mtime, ctime: unchanged means untouched
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


def writable_parts(mounts: Sequence[Mount], root: str) -> list[str]:
    """The parts of the project a step's mounts make writable (empty: the guard has nothing to do)."""
    root = root.rstrip("/") or "/"
    out = []
    for m in mounts:
        if m.readonly or m.kind not in ("bind", "cache"):
            continue
        source = m.source.rstrip("/") or "/"
        if inside(root, source):
            out.append(root)
        elif inside(source, root):
            out.append(source)
    return list(dict.fromkeys(out))


def readonly_targets(mounts: Sequence[Mount]) -> frozenset[str]:
    return frozenset(m.target.rstrip("/") for m in mounts if m.readonly and m.kind in ("bind", "cache"))




def _git_config(root: str, top: str | None = None) -> tuple[str | None, list[str]]:
    """(core.hooksPath, the project files git includes) from `<root>/.git/config` and the files
    its `include.path` / `includeIf.*.path` name, read as text (running git would run the config).
    Paths relative to the project's top (`top`, else the root), only those inside it."""
    top = top or root
    gitdirs = git_dirs(join(root, ".git"))  # a `.git` file names its git directory (and the common one)
    hooks, included = _configs([join(d, "config") for d in reversed(gitdirs)])
    includes = [_relative(path, top) for path in included
                if inside(path, top) and path != top and not any(inside(path, d) for d in gitdirs)]
    if not hooks and gitdirs:
        hooks = _global_hooks()  # a repository of its own that sets none: the user's global one applies
    if not hooks or hooks.startswith("~/") and not _home():
        return None, includes
    return _in_project(join(_home(), hooks[2:]) if hooks.startswith("~/") else join(root, hooks), top), includes


def _home() -> str:
    return posix.environ.get(b"HOME", b"").decode("utf-8", "surrogateescape")


def _configs(files: list[str]) -> tuple[str | None, list[str]]:
    """`core.hooksPath` as git reads it from `files` and the files they include (`include.path`,
    `includeIf.*.path`, each read where it is included, `~/` being HOME), and every file included."""
    home = _home()
    hooks = None
    every: list[str] = []
    seen: set[str] = set()
    while files and len(seen) < 16:
        path = files.pop(0)
        if path in seen:
            continue
        seen.add(path)
        included = []
        for section, key, value in settings(path):
            if section == "core" and key == "hookspath" and value:
                hooks = value
            elif section.startswith(("include", "includeif")) and key == "path" and value:
                if value.startswith("~"):
                    if not value.startswith("~/") or not home:
                        continue
                    value = join(home, value[2:])
                included.append(normpath(join(dirname(path), value)))
        files[:0] = included
        every += included
    return hooks, every


def _in_project(path: str, top: str, written: bool = True) -> str | None:
    """`path` relative to the project's top if it lies there, as written or as it resolves (git
    follows a link on the way: `hooks -> frontend/hk` outside the project still names the project's
    `frontend/hk`); only as it resolves unless `written`; None otherwise."""
    import os  # only for a repository that sets core.hooksPath or links its hooks

    ways = ((os.path.normpath(path), top),) if written else ()
    for candidate, base in (*ways, (os.path.realpath(path), os.path.realpath(top))):
        if inside(candidate, base) and candidate != base:
            return str(os.path.relpath(candidate, base))
    return None


def _linked_hooks(gitdirs: Sequence[str], top: str) -> list[str]:
    """The project paths a git directory's `hooks/` reaches through links (`.git/hooks ->
    ../githooks`, `.git/hooks/pre-commit -> ../../tools/hooks/pre-commit`): git runs them."""
    found = []
    for gitdir in gitdirs:
        hooks = join(gitdir, "hooks")
        try:
            if stat.S_ISLNK(posix.lstat(hooks).st_mode):
                found.append(_in_project(hooks, top, written=False))
                continue
            with posix.scandir(hooks) as it:
                links = [e.path for e in it if e.is_symlink()]
        except OSError:
            continue
        found += [_in_project(link, top, written=False) for link in links]
    return [rel for rel in found if rel]


def _global_hooks() -> str | None:
    """`core.hooksPath` from git's system and global configs (read as text, last one wins, as git
    reads them): a relative one names a directory in every repository (`git-hooks`)."""
    env = posix.environ
    home = _home()
    xdg = env.get(b"XDG_CONFIG_HOME", b"").decode("utf-8", "surrogateescape") or (home and join(home, ".config"))
    system = env.get(b"GIT_CONFIG_SYSTEM", b"/etc/gitconfig").decode("utf-8", "surrogateescape")
    files = [] if env.get(b"GIT_CONFIG_NOSYSTEM") else [system]
    configured = env.get(b"GIT_CONFIG_GLOBAL")
    if configured is not None:
        files.append(configured.decode("utf-8", "surrogateescape"))
    else:
        files += [p for p in (xdg and join(xdg, "git", "config"), home and join(home, ".gitconfig")) if p]
    hooks, _ = _configs(files)
    return hooks if hooks and not hooks.startswith(("/", "~")) else None


def hooks_path(root: str) -> str | None:
    """git's `core.hooksPath`, through the project's `.git/config` and what it includes, relative to
    the root, if it lies in the project."""
    return _git_config(root)[0]


def watched(root: str) -> list[str]:
    return list(dict.fromkeys([*PROTECTED, *HOST_EXECUTED, *_repository(root, root), *_enclosing(root)]))


def _enclosing(root: str) -> list[str]:
    """What the repository the project lies in (sbox.yaml below its top: a monorepo's `frontend/`)
    makes host-executed inside the project: its hooks directory when `core.hooksPath` points there."""
    here = dirname(root)
    while here:
        if git_dirs(join(here, ".git")):
            return _repository(here, root)
        parent = dirname(here)
        if parent == here:
            break
        here = parent
    return []


def _repository(repo: str, root: str) -> list[str]:
    """What `repo`'s `.git/config` makes host-executed in the project (relative to its root): the
    files it includes (they run like .git/config) and its hooks directory, or, for husky's layout
    (`core.hooksPath = .husky/_`, whose wrappers run `.husky/<hook>`), the directory above it."""
    hooks, includes = _git_config(repo, root)
    names = [anchor(root, p) for p in includes + _linked_hooks(git_dirs(join(repo, ".git")), root)]
    if hooks:
        names.append(anchor(root, dirname(hooks) if _basename(hooks) == "_" and "/" in hooks else hooks))
    return names


def anchor(root: str, rel: str) -> str:
    """`rel`, or its first component that is a link: what lies beyond a link is not the
    project's, and the guard never follows one (a planted `tools -> /elsewhere` is itself what
    it moves)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        try:
            if stat.S_ISLNK(posix.lstat(join(root, *parts[:i])).st_mode):
                return "/".join(parts[:i])
        except OSError:
            return rel
    return rel


def _entry(path: str, st: posix.stat_result, keep: bool) -> Entry:
    kind = KINDS.get(stat.S_IFMT(st.st_mode), "other")
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if kind == "link":
        return Entry(kind, st.st_mode, ident, target=posix.readlink(path))
    if kind != "file" or st.st_size > HASH_BYTES:  # compared by `ident`: a write changes its ctime
        return Entry(kind, st.st_mode, ident)
    digest = kept.hasher()
    content = b""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return Entry(kind, st.st_mode, ident)
    try:
        while chunk := posix.read(fd, 1 << 16):
            digest.update(chunk)
            if keep and len(content) <= KEEP_BYTES:
                content += chunk
    finally:
        posix.close(fd)
    return Entry(kind, st.st_mode, ident, digest.hexdigest(), content if keep and len(content) <= KEEP_BYTES else None)


def _tree(root: str, rel: str, skip: frozenset[str], keep: bool) -> Iterator[tuple[str, Entry]]:
    """Every entry at and under root/rel, links not followed, read-only mounts not entered."""
    path = join(root, rel)
    try:
        st = posix.lstat(path)
    except OSError:
        return
    yield rel, _entry(path, st, keep)
    if not stat.S_ISDIR(st.st_mode) or path in skip:
        return
    try:
        with posix.scandir(path) as it:
            names = sorted(e.name for e in it)
    except OSError:
        return
    for name in names:
        yield from _tree(root, join(rel, name), skip, keep)


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


def present(root: str, names: Sequence[str]) -> list[str]:
    """The names that may exist: those whose first component the root lists (one directory
    read instead of an lstat per name; a name it does not list has nothing for `_tree` to see).
    All of them if the root cannot be listed."""
    try:
        with posix.scandir(root) as it:
            listed = {e.name for e in it}
    except OSError:
        return list(names)
    spelled = [name for name in sorted(listed) if name.lower() in CASELESS or name.endswith(ENDINGS)]
    return list(dict.fromkeys([name for name in names if name.split("/", 1)[0] in listed] + spelled))


def packages_watched(root: str, mounts: Sequence[Mount]) -> list[str]:
    """What `watched` is for the project's top, at the top of each directory in it that is a
    package or repository of its own: a local `file:` dependency npm builds in place (a directory
    of the project a step may write, which every package's scripts in that phase may write: its
    Makefile runs when you `make` there), and each repository nested in the project (a `.git`
    below the top, bound read-only: its hooks and its Makefile run when you work there). Not a
    node_modules or a hidden directory."""
    roots = [part for part in writable_parts(mounts, root) if part != root.rstrip("/") and inside(part, root)]
    roots += [dirname(m.target) for m in mounts if m.readonly and _basename(m.target) == ".git"
              and inside(m.target, root) and dirname(m.target) != root.rstrip("/")]
    out = []
    for part in dict.fromkeys(roots):
        rel = _relative(part, root)
        parts = rel.split("/")
        if "node_modules" in parts or any(p.startswith(".") for p in parts) or not stat.S_ISDIR(_mode(part)):
            continue
        out += [f"{rel}/{name}" for name in (*PROTECTED, *HOST_EXECUTED)] + _repository(part, root)
    return out


def _projects_watched(root: str, known: Sequence[str]) -> list[str]:
    """`watched` at the top of each project nested in this one (a directory below the top with an
    sbox.yaml of its own, as the last walk found them): its Makefile, editors' and agents'
    settings run when you work there, as the top's do. Not in a node_modules or a hidden directory."""
    from sbox_shim.guard.index import PROJECTS

    out: list[str] = []
    for path in known:
        part = dirname(path)
        if _basename(path) not in PROJECTS or part == root.rstrip("/") or not inside(part, root):
            continue
        parts = _relative(part, root).split("/")
        if "node_modules" in parts or any(p.startswith(".") for p in parts):
            continue
        rel = "/".join(parts)
        out += [f"{rel}/{name}" for name in (*PROTECTED, *HOST_EXECUTED)] + _repository(part, root)
    return out


def _mode(path: str) -> int:
    try:
        return posix.lstat(path).st_mode
    except OSError:
        return 0


def before(root: str, mounts: Sequence[Mount], state_dir: str | None = None) -> Before:
    """What the host-executed paths hold before a step (content kept to roll a change back), with
    what the last walk of the writable parts found (guard/index.py, in `state_dir`): each nested
    `.envrc`, so that one a step rewrites in place is put back as the host had it, and each
    project nested in this one (a directory with an sbox.yaml of its own), watched as the top is."""
    started = time.time_ns() - SLACK_NS
    skip = readonly_targets(mounts)
    known: list[str] = []
    if state_dir:
        from sbox_shim.guard import index

        known = [p for part in writable_parts(mounts, root) for p in index.known(part, state_dir)]
    names = tuple(dict.fromkeys(watched(root) + packages_watched(root, mounts) + _projects_watched(root, known)))
    entries = {rel: e for name in present(root, names) for rel, e in _tree(root, name, skip, keep=True)}
    for path in known:
        rel = _relative(path, root)
        if _basename(path) == ".envrc" and rel not in entries:
            try:
                st = posix.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                entries[rel] = _entry(path, st, keep=True)
    return Before(root, started, entries, names, _package(root))


def after(snapshot: Before, mounts: Sequence[Mount], state_dir: str | None = None) -> list[Change]:
    """What the step created or changed among the host-executed paths, and the setuid/setgid
    files, sockets and FIFOs it made anywhere it could write. Parents sort before children."""
    root, skip = snapshot.root, readonly_targets(mounts)
    names = dict.fromkeys([*snapshot.names, *watched(root)])
    changes: dict[str, Change] = {}
    for name in present(root, list(names)):
        for rel, entry in _tree(root, name, skip, keep=False):
            old = snapshot.entries.get(rel)
            if old is None:
                changes[rel] = Change(rel, "created", entry, "host-executed")
            elif _differs(old, entry):
                changes[rel] = Change(rel, "changed", entry, "host-executed")
    for part in writable_parts(mounts, root):
        for rel, entry in special_files(root, part, skip, snapshot.started_ns, state_dir):
            if rel not in changes:
                old = snapshot.entries.get(rel)
                why = _basename(rel) if _basename(rel) in NESTED else \
                    "setuid" if entry.kind == "file" else entry.kind
                changes[rel] = Change(rel, "changed" if old else "created", entry, why)
    return [changes[k] for k in sorted(changes, key=lambda p: (p.count("/"), p))]


def _differs(old: Entry, new: Entry) -> bool:
    if old.kind != new.kind:
        return True
    if new.kind == "dir":
        return False  # compared per file
    if new.kind == "file" and (old.sha256 is None or new.sha256 is None):  # too big to hash, or unreadable
        return old.ident != new.ident or old.mode != new.mode
    if new.kind == "file":
        return old.sha256 != new.sha256 or old.mode != new.mode
    if new.kind == "link":
        return old.target != new.target
    return old.ident != new.ident


def special_files(root: str, top: str, skip: frozenset[str], since_ns: int,
                  state_dir: str | None = None) -> Iterator[tuple[str, Entry]]:
    """What a step left anywhere under `top` that the host would act on, judged by inodes that
    changed at or after `since_ns`: setuid/setgid files, sockets, FIFOs, and a `.git` or `.envrc`
    at any depth (NESTED; a directory is yielded whole, not entered). No link followed, read-only
    mounts not entered. Only the directories that changed since the last walk are listed (the
    index kept in `state_dir`, guard/index.py; without one, all of them), and each known NESTED
    entry is looked at again. A directory too deep to open by path (a tree built to outrun
    PATH_MAX) is yielded itself, so it is moved, not skipped."""
    from sbox_shim.guard import index

    found = index.scan(top, state_dir)
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
    candidates = [(e.path, e.name, e) for e in found.listed]
    candidates += [(p, _basename(p), None) for p in found.nested]
    for path, name, e in candidates:
        if path in seen or in_skip(dirname(path)) or any(inside(path, d) for d in moved):
            continue
        seen.add(path)
        try:
            st = e.stat(follow_symlinks=False) if e is not None else posix.lstat(path)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                yield _too_deep(root, path)
            continue
        fmt = stat.S_IFMT(st.st_mode)
        nested = name in NESTED and path not in skip
        special = nested or fmt in (stat.S_IFSOCK, stat.S_IFIFO) or (
            fmt == stat.S_IFREG and bool(st.st_mode & (stat.S_ISUID | stat.S_ISGID)))
        if special and st.st_ctime_ns >= since_ns:
            if fmt == stat.S_IFDIR:
                moved.append(path)
            yield _relative(path, root), _entry(path, st, keep=False)


def _too_deep(root: str, directory: str) -> tuple[str, Entry]:
    """An ancestor of `directory` well within reach of a path (at most 64 levels down, where no
    real tree goes): moved whole, with everything under it."""
    rel = _relative(directory, root)
    parts = rel.split("/")
    cut = "/".join(parts[:min(max(1, len(parts) // 2), 64)])
    st = posix.lstat(join(root, cut))
    return cut, _entry(join(root, cut), st, keep=False)


def _basename(path: str) -> str:
    """`os.path.basename`."""
    return path[path.rfind("/") + 1:]


def _relative(path: str, root: str) -> str:
    """`os.path.relpath` of a path found by walking `root` (so below it, joined without `..`)."""
    if inside(path, root) and path != root:
        return path[len(root.rstrip("/")) + 1:]
    import os

    return os.path.relpath(path, root)


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
