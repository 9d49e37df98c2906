"""What git tracks in the repository a project lies in, read from its index file, never by
running git (the repository's config could make git run anything).

The guard asks it of a file that would run in place of another (guard.shadowing_source): a step's
new file hidden by its own `.gitignore` is what `git status` never shows, while a change to a
tracked file shows in `git diff`, and what a build writes beside its own output (`dist/`) shadows
nothing git tracks. The index lies in the git directory, which every sandbox sees read-only.
Read lazily, once per guard walk, only when a candidate turns up. Lean (no imports at run time
but sbox's own)."""
from __future__ import annotations

from sbox_shim.lean import dirname, git_dirs, join

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable

MAX_INDEX = 256 << 20  # a bigger index is not read (as though there were no repository)


def index_paths(data: bytes, hash_size: int = 20) -> list[str] | None:
    """The paths an index file (versions 2, 3 and 4) lists; None if it is not one."""
    read = index_file(data, hash_size)
    return None if read is None else read[0]


def index_file(data: bytes, hash_size: int = 20) -> tuple[list[str], str | None] | None:
    """(The paths an index file lists, the shared index its `link` extension names: a split index,
    `core.splitIndex`, whose entries there have no names); None if it is not one."""
    if len(data) < 12 or data[:4] != b"DIRC":
        return None
    version = int.from_bytes(data[4:8], "big")
    count = int.from_bytes(data[8:12], "big")
    if version not in (2, 3, 4):
        return None
    fixed = 40 + hash_size + 2  # times, ids, mode, size; the object's hash; the flags
    out: list[str] = []
    at, previous = 12, b""
    for _ in range(count):
        if at + fixed > len(data):
            return None
        flags = int.from_bytes(data[at + fixed - 2:at + fixed], "big")
        start = at + fixed + (2 if version >= 3 and flags & 0x4000 else 0)
        if version == 4:  # the path: how much of the previous one to drop, then the rest
            if start >= len(data):
                return None
            byte, i = data[start], start + 1
            drop = byte & 0x7F
            while byte & 0x80:  # git's offset varint: each continuation adds one before shifting
                if i >= len(data):
                    return None
                byte, i = data[i], i + 1
                drop = ((drop + 1) << 7) | (byte & 0x7F)
            end = data.find(b"\0", i)
            if end < 0 or drop > len(previous):
                return None
            path = previous[:len(previous) - drop] + data[i:end]
            at = end + 1
        else:
            end = data.find(b"\0", start)
            if end < 0:
                return None
            path = data[start:end]
            at += (end - at + 8) & ~7  # entries are padded with NULs to a multiple of 8 bytes
        previous = path
        out.append(path.decode("utf-8", "surrogateescape"))
    link = None
    while at + 8 <= len(data) - hash_size:  # the extensions, then the file's own hash
        size = int.from_bytes(data[at + 4:at + 8], "big")
        if data[at:at + 4] == b"link" and size >= hash_size:
            link = data[at + 8:at + 8 + hash_size].hex()
        at += 8 + size
    return [p for p in out if p], link


def _hash_size(gitdirs: tuple[str, ...]) -> int:
    from sbox_shim.regular import read_regular

    for gitdir in gitdirs:
        text = (read_regular(join(gitdir, "config")) or b"").decode("utf-8", "replace").lower().replace(" ", "")
        if "objectformat=sha256" in text:
            return 32
    return 20


def repository(root: str, trusted: Callable[[str], bool]) -> tuple[str, tuple[str, ...]] | None:
    """The top of the worktree `root` lies in (its own or an enclosing one) and its git directories:
    the nearest `.git` that is `trusted` (no step could have made it: a read-only bind, or out of
    the step's reach). One that is not is passed over: a step's own `.git`, index and all, would
    vouch for its plants, and the guard moves it (NESTED), leaving the host's git the one above."""
    here = root.rstrip("/") or "/"
    while True:
        dotgit = join(here, ".git")
        found = git_dirs(dotgit)
        if found and trusted(dotgit):
            return here, found
        parent = dirname(here)
        if parent == here:
            return None
        here = parent


def tracker(root: str, trusted: Callable[[str], bool] = lambda dotgit: True) -> Callable[[str], bool | None]:
    """A test of an absolute path: is it tracked (a file, or a directory with a tracked file below
    it) in the repository it lies in, the nearest trusted one above it (a submodule's, a nested
    clone's, a linked worktree's in the project: red team 26)? None when there is none, or its
    index cannot be read. Each index is read at the first question about a path in it, and each
    directory's repository looked for once: a tracker serves one walk, after the step."""
    loaded: dict[str, tuple[str, set[str], set[str]] | None] = {}
    repositories: dict[str, tuple[str, tuple[str, ...]] | None] = {}  # by directory: asked once each
    top_level: dict[str, set[str]] = {}  # `_top_level`'s markers, made at the first question about one

    def tracked(path: str) -> bool | None:
        cut = path.find("/**/")  # a top-level module of this name anywhere in `path[:cut]`'s repository
        here = path[:cut] if cut >= 0 else dirname(path)
        if here not in repositories:
            repositories[here] = repository(here, trusted)
        found = repositories[here]
        if found is None:
            return None
        top = found[0].rstrip("/")
        if top not in loaded:
            loaded[top] = _load(top, found[1])
        known = loaded[top]
        if known is None or not path.startswith(top + "/"):
            return None
        _, files, dirs = known
        rel = path[len(top) + 1:].rstrip("/")
        if cut >= 0:
            if top not in top_level:
                top_level[top] = _top_level(files)
            return rel[rel.index("**/"):] in top_level[top]
        return rel in files or rel in dirs

    return tracked


def _load(top: str, gitdirs: tuple[str, ...]) -> tuple[str, set[str], set[str]] | None:
    from sbox_shim.regular import read_regular

    size = _hash_size(gitdirs)
    read = index_file(read_regular(join(gitdirs[0], "index"), MAX_INDEX) or b"", size)
    if read is None:
        return None
    paths, link = read
    if link is not None and link.strip("0"):  # a split index: the shared one holds the rest
        shared = index_paths(read_regular(join(gitdirs[0], f"sharedindex.{link}"), MAX_INDEX) or b"", size)
        if shared is None:
            return None  # as though there were no repository: nothing reads as tracked
        paths += shared  # its deleted entries counted as tracked too
    dirs = {p[:i] for p in paths for i in range(len(p)) if p[i] == "/"}
    # a directory with a tracked Python module directly in it: "DIR/*.py" (the __init__.py rule)
    dirs |= {p[:p.rindex("/")] + "/*.py" for p in paths if p.endswith(".py") and "/" in p}
    dirs |= {"*.py"} if any(p.endswith(".py") and "/" not in p for p in paths) else set()
    return top, set(paths), dirs


def _top_level(files: set[str]) -> set[str]:
    """Markers of the modules a `sys.path` entry anywhere in the repository makes importable by
    their own name (a tracked conftest's `sys.path.insert(0, "lib")`: red team 32): `**/x.py` for a
    module in a directory that is no package, `**/x/*.py` for a package or namespace directory in
    one; not `pkg/utils.py`, which imports as `pkg.utils` (red team 31)."""
    def package(d: str) -> bool:
        return (d + "/__init__.py" if d else "__init__.py") in files

    out = set()
    for p in files:
        if not p.endswith(".py"):
            continue
        d, _, name = p.rpartition("/")
        if not package(d):
            out.add("**/" + name)
        if d and not package(d.rpartition("/")[0]):
            out.add("**/" + d.rpartition("/")[2] + "/*.py")
    return out
