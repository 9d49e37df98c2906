"""What sbox's warm path needs of `os`, on the built-in `posix` module.

`import os` costs about 3 ms on this project's test machine (it builds `os.environ` on
`_collections_abc`): more than the rest of the warm path's imports together, on every repeated
command. So the modules the warm path loads (entry, compiled, kept, paths, backends.bwraprun) call
`posix` and these helpers; the rest of sbox uses `os` as usual. Linux and macOS only, like sbox.
"""
from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any


def environ() -> dict[str, str]:
    """`os.environ` as a plain dict: names and values decoded the way os decodes them."""
    encoding = sys.getfilesystemencoding()
    return {name.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for name, value in posix.environ.items()}


def join(base: str, *parts: str) -> str:
    """`os.path.join` for str paths: an absolute part starts again."""
    path = base
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def inside(path: str, root: str) -> bool:
    """`path` is `root` or lies below it (as strings: resolve first where links matter)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def dirname(path: str) -> str:
    """`os.path.dirname`."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") or head


def normpath(path: str) -> str:
    """`os.path.normpath` of an absolute path."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def git_dirs(dotgit: str) -> tuple[str, ...]:
    """The git directories a `.git` entry stands for: itself if it is a directory; for a `.git`
    file (`gitdir: X`, as `git worktree`, `--separate-git-dir` and submodules write it) the
    directory it names and, through X/commondir, the repository's common one (config, hooks).
    Absolute and normalized, not resolved: whoever uses them checks where they lie."""
    import stat

    try:
        mode = posix.lstat(dotgit).st_mode
    except OSError:
        return ()
    if stat.S_ISDIR(mode):
        return (dotgit,)
    if not stat.S_ISREG(mode):
        return ()
    found = _pointer(dotgit, "gitdir:")
    if found is None:
        return ()
    common = _pointer(join(found, "commondir"), "")
    return (found,) if common is None or common == found else (found, common)


def _pointer(path: str, prefix: str, at: int | None = None, base: str = "") -> str | None:
    """The path a small pointer file names (`gitdir: X`, commondir's `X`), made absolute against
    the file's directory (`base`, when the file is `path` in the directory open as `at`); None
    if it cannot be read or says nothing."""
    try:  # never blocks on a FIFO, reads nothing but a regular file
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC, dir_fd=at)
    except OSError:
        return None
    try:
        if posix.fstat(fd).st_mode & 0o170000 != 0o100000:
            return None
        text = posix.read(fd, 4096).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    finally:
        posix.close(fd)
    line = text.splitlines()[0].strip() if text.strip() else ""
    if not line.startswith(prefix) or not line[len(prefix):].strip():
        return None
    return normpath(join(base if at is not None else dirname(path), line[len(prefix):].strip()))


def pointer(path: str, prefix: str) -> str | None:
    return _pointer(path, prefix)


def pointer_at(fd: int, name: str, base: str, prefix: str) -> str | None:
    """_pointer for the file `name` in the directory open as `fd`, whose path is `base`."""
    return _pointer(name, prefix, fd, base)


def makedirs(path: str, mode: int = 0o777) -> None:
    """`os.makedirs(path, mode, exist_ok=True)`."""
    parent = dirname(path)
    if parent and parent != path:
        try:
            posix.stat(parent)
        except FileNotFoundError:
            makedirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        pass


_PATH_FLAGS = posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC


def let_owner_in(directory: str) -> bool:
    """Give a directory of this user's its owner's read, write and search rights back if it lacks
    one (a sandbox running as this user took them: `chmod 0 .` hides what is in it, even from an
    lstat); True if it did. Reached without following a last link: an O_PATH descriptor, changed
    through /proc/self/fd (let_owner_along: no link anywhere below a trusted top)."""
    try:
        fd = posix.open(directory, _PATH_FLAGS)
    except OSError:
        return False
    try:
        return let_owner_at(fd)
    finally:
        posix.close(fd)


def open_along(top: str, relative: str, make: int = 0) -> int:
    """An O_PATH descriptor of the directory `relative` below `top` (itself for ""), each
    component opened in the one before it without following a link (one missing made with mode
    `make`, if given). OSError (ELOOP, ENOTDIR, ENOENT) where one is a link, no directory or
    missing: a directory another sandbox swaps for a link meanwhile never sends the caller
    outside the tree."""
    fd = posix.open(top, _PATH_FLAGS)
    try:
        for part in [p for p in relative.split("/") if p]:
            if make:
                try:
                    posix.mkdir(part, make, dir_fd=fd)
                except FileExistsError:
                    pass
            below = posix.open(part, _PATH_FLAGS, dir_fd=fd)
            posix.close(fd)
            fd = below
    except BaseException:
        posix.close(fd)
        raise
    return fd


def let_owner_along(top: str, relative: str) -> None:
    """let_owner_in for `top` and each directory of `relative` below it, in turn, each opened in
    the one before it without following a link: a directory swapped for a link meanwhile (by a
    sandbox still running on the tree) ends the walk, and never sends it to another directory."""
    try:
        fd = posix.open(top, _PATH_FLAGS)
    except OSError:
        return
    try:
        let_owner_at(fd)
        for part in [p for p in relative.split("/") if p]:
            try:
                below = posix.open(part, _PATH_FLAGS, dir_fd=fd)
            except OSError:
                return
            posix.close(fd)
            fd = below
            let_owner_at(fd)
    finally:
        posix.close(fd)


def let_owner_at(fd: int) -> bool:
    """let_owner_in for the directory open (O_PATH) as `fd`."""
    try:
        st = posix.fstat(fd)
        if st.st_uid != posix.getuid() or st.st_mode & 0o700 == 0o700:
            return False
        posix.chmod(f"/proc/self/fd/{fd}", st.st_mode & 0o7777 | 0o700)
        return True
    except OSError:
        return False


def listing(directory: str) -> Any:
    """posix.scandir(directory); a directory of this user's that a sandbox (running as this user)
    left without its owner's read or search right gets its owner's rights back first, so that a
    walk sees what is in it (`chmod 0311 packages` must not hide a planted `packages/web/.git`).
    Reached without following a link: an O_PATH descriptor, changed through /proc/self/fd."""
    try:
        return posix.scandir(directory)
    except PermissionError:
        if not let_owner_in(directory):
            raise
        return posix.scandir(directory)


LIST_FLAGS = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC


def entries(fd: int) -> list[Any]:
    """What the directory open as `fd` holds (DirEntry: name and d_type): the very directory,
    never a path another sandbox could have swapped for a link."""
    try:
        with posix.scandir(fd) as it:
            return list(it)
    except OSError:
        return []


def listed_at(handle: int, owner: bool = False) -> list[tuple[str, bool]] | None:
    """(name, is a directory, not through a link) of each entry of the directory an O_PATH
    descriptor holds, opened again to list it; with `owner`, one of this user's that a sandbox
    made unreadable to its owner gets its owner's rights back first. None if it cannot be listed."""
    flags = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC
    try:
        listed = posix.open(".", flags, dir_fd=handle)
    except PermissionError:
        if not (owner and let_owner_at(handle)):
            return None
        try:
            listed = posix.open(".", flags, dir_fd=handle)
        except OSError:
            return None
    except OSError:
        return None
    try:
        with posix.scandir(listed) as listing:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
    except OSError:
        return None
    finally:
        posix.close(listed)


def open_in(fd: int, name: str, owner: bool = False) -> int:
    """The directory `name` in the one open as `fd`, opened to list; -1 if a link (swapped in
    since it was listed as a directory), missing or unreadable. With `owner`, one of this user's
    that a sandbox made unreadable to its owner gets its owner's rights back first (reopened
    through /proc/self/fd: the very directory whose rights were given back)."""
    try:
        return posix.open(name, LIST_FLAGS, dir_fd=fd)
    except PermissionError:
        if not owner:
            return -1
    except OSError:
        return -1
    try:
        handle = posix.open(name, _PATH_FLAGS, dir_fd=fd)
    except OSError:
        return -1
    try:
        return posix.open(f"/proc/self/fd/{handle}", LIST_FLAGS) if let_owner_at(handle) else -1
    except OSError:
        return -1
    finally:
        posix.close(handle)


SOCKET = 0o140000


def sockets(top: str, depth: int = 2) -> tuple[str, ...]:
    """Unix sockets up to `depth` levels below `top` (links not followed), sorted; walked through
    directory descriptors as gitwalk.git_entries is."""
    found = []
    try:
        level = [(top.rstrip("/"), posix.open(top, LIST_FLAGS))]
    except OSError:
        return ()
    for n in range(depth):
        below = []
        for path, fd in level:
            for entry in entries(fd):
                if entry.is_dir(follow_symlinks=False):
                    if n + 1 < depth and (inner := open_in(fd, entry.name)) >= 0:
                        below.append((path + "/" + entry.name, inner))
                elif not entry.is_file(follow_symlinks=False) and not entry.is_symlink():
                    try:  # d_type said neither file, dir nor link: a socket, a fifo, a device
                        if posix.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_mode & 0o170000 == SOCKET:
                            found.append(path + "/" + entry.name)
                    except OSError:
                        pass
            posix.close(fd)
        level = below
    return tuple(sorted(found))

