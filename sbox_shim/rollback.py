"""Keep a package directory's install state before a multi-step install, and put it back if a
later step fails: what a tool that installs in one process does itself (npm rolls a failed
install back), and a split into sandboxed phases must not lose.

Kept on the host, beside the project's own files, in `<package dir>/.sbox-rollback-XXXX` (0700,
not an output of any phase, so no sandbox can write it): the small files' bytes, and the
`node_modules` directory, renamed there when the install replaces it whole (`npm ci`), else a
clone of hard links (no file data is copied). Nothing here follows a link the project holds:
directories are opened with O_NOFOLLOW from their parent's descriptor, links are kept as links.
A file a step rewrote in place (rather than replaced, as npm does) shares its inode with the
clone, so that change is not undone, as it would stay after a successful install. What the
persistence guard watches is never shared: the names it looks for at any depth (`.git`, `.envrc`,
`HEAD`) are copied, not linked, and the clone put back has no setuid or setgid bit (a step could
have set one on a shared inode).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from sbox_shim.guard import NESTED
from sbox_shim.text import printable

PREFIX = ".sbox-rollback-"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BIG = 256 << 20  # a lockfile of a large monorepo is tens of MiB; nothing sensible is larger


@dataclass
class Kept:
    directory: str  # the package directory
    keep: str  # where the previous state is kept
    files: dict[str, tuple[str, bytes | str, int] | None] = field(default_factory=dict)  # absent: None
    modules: str = "absent"  # absent | moved | cloned | left (not kept) | unkept (a link or not a directory)
    since: float = 0.0


def keep(directory: str, names: tuple[str, ...], modules: str = "node_modules", whole: bool = False,
         tree: bool = True) -> Kept:
    """Keep `names` (files in `directory`) and its `modules` directory; `whole`: the install
    replaces the directory entirely, so it is renamed away and an empty one put in its place;
    not `tree`: the directory is not kept (nothing is expected to change it)."""
    import time

    where = os.path.join(directory, PREFIX + os.urandom(4).hex())
    os.mkdir(where, 0o700)
    kept = Kept(directory, where, since=time.time())
    for name in names:
        kept.files[name] = _read(directory, name)
    try:
        st = os.lstat(os.path.join(directory, modules))
    except FileNotFoundError:
        return kept
    if not tree:
        kept.modules = "left"
        return kept
    if not stat.S_ISDIR(st.st_mode):
        kept.modules = "unkept"
        return kept
    if _empty(os.path.join(directory, modules)):  # as good as absent (sbox makes it before a run it records)
        return kept
    source, target = os.path.join(directory, modules), os.path.join(where, modules)
    if whole:
        os.rename(source, target)
        os.mkdir(source, stat.S_IMODE(st.st_mode))
        kept.modules = "moved"
        return kept
    fd = os.open(source, _DIR)
    try:
        os.mkdir(target, stat.S_IMODE(st.st_mode))
        _clone(fd, target, top=True)
    except BaseException:  # interrupted or failed: no half-made copy is left in the project
        import shutil

        shutil.rmtree(where, ignore_errors=True)
        raise
    finally:
        os.close(fd)
    kept.modules = "cloned"
    return kept


def restore(kept: Kept, modules: str = "node_modules") -> tuple[list[str], str | None]:
    """Put the kept state back; (what was rolled back, why it could not be: None if it was).
    On success the kept copy is removed; otherwise it stays where the line says."""
    done: list[str] = []
    try:
        current = os.path.join(kept.directory, modules)
        if kept.modules in ("moved", "cloned"):  # what is there stays unless the kept one can replace it
            os.lstat(os.path.join(kept.keep, modules))
        if kept.modules == "cloned":
            _strip_setid(os.path.join(kept.keep, modules))
        if kept.modules in ("absent", "moved", "cloned") and os.path.lexists(current):
            os.rename(current, os.path.join(kept.keep, "failed-" + modules))
        if kept.modules in ("moved", "cloned"):
            os.rename(os.path.join(kept.keep, modules), current)
        if kept.modules not in ("unkept", "left"):
            done.append(modules)
        for name, saved in kept.files.items():
            if _put(kept, name, saved):
                done.append(name)
    except OSError as exc:
        return done, printable(f"{exc.filename or kept.directory}: {exc.strerror or exc}")
    if kept.modules == "unkept":
        return done, f"{modules} is not a directory (a link?): sbox did not keep it"
    discard(kept)
    return done, None


def discard(kept: Kept) -> None:
    """The install succeeded: remove the kept state (never through a link: rmtree does not follow)."""
    import shutil

    shutil.rmtree(kept.keep, ignore_errors=True)


def _read(directory: str, name: str) -> tuple[str, bytes | str, int] | None:
    path = os.path.join(directory, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "link", os.readlink(path), 0
    from sbox_shim.regular import read_regular

    data = read_regular(path, _BIG)
    if data is None:
        raise OSError(0, "not a regular file sbox can keep", path)
    return "file", data, stat.S_IMODE(st.st_mode)


def _put(kept: Kept, name: str, saved: tuple[str, bytes | str, int] | None) -> bool:
    """Put one file back by rename (which replaces a link, never follows it); True if it changed."""
    path = os.path.join(kept.directory, name)
    if saved is None:
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)
            return True
        return False
    kind, content, mode = saved
    temp = os.path.join(kept.keep, "restore-" + name)
    if kind == "link":
        assert isinstance(content, str)
        os.symlink(content, temp)
    else:
        assert isinstance(content, bytes)
        if _same(path, content):
            return False
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
    os.replace(temp, path)
    return True


def _same(path: str, content: bytes) -> bool:
    from sbox_shim.regular import read_regular

    return read_regular(path, _BIG) == content


def _clone(fd: int, target: str, top: bool = False, copy: bool = False) -> None:
    """Recreate the tree open at `fd` under `target`: directories made, links copied as links,
    regular files hard-linked (the top level's own files, which a tool rewrites in place, copied,
    last: npm trusts its hidden lockfile only when it is newer than the directories)."""
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda e: not e.is_dir(follow_symlinks=False))
        for entry in entries:
            name, dest = entry.name, os.path.join(target, entry.name)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(dest, stat.S_IMODE(st.st_mode) | 0o700)
                child = os.open(name, _DIR, dir_fd=fd)
                try:
                    _clone(child, dest, copy=copy or name in NESTED)
                finally:
                    os.close(child)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=fd), dest)
            elif stat.S_ISREG(st.st_mode):
                if not (top or copy or name in NESTED):
                    try:
                        os.link(name, dest, src_dir_fd=fd, follow_symlinks=False)
                        continue
                    except OSError:
                        pass
                _copy(fd, name, dest, st.st_mode)


def _empty(path: str) -> bool:
    fd = os.open(path, _DIR)
    try:
        with os.scandir(fd) as entries:
            return next(iter(entries), None) is None
    finally:
        os.close(fd)


def _strip_setid(path: str) -> None:
    """Clear setuid and setgid bits in the tree at `path` (sbox's own copy: no link followed)."""
    for directory, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(os.path.join(directory, name), stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))


def _copy(fd: int, name: str, dest: str, mode: int) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    with os.fdopen(src, "rb") as f, open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        import shutil

        shutil.copyfileobj(f, out)
        os.fchmod(out.fileno(), stat.S_IMODE(mode))
