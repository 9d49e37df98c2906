"""Keep a package directory's install state before a multi-step install, and put it back if a
later step fails: what a tool that installs in one process does itself (npm rolls a failed
install back), and a split into sandboxed phases must not lose.

Kept on the host, beside the project's own files, in `<package dir>/.sbox-rollback-XXXX` (0700):
the small files' bytes, and the `node_modules` directory, renamed there when the install replaces
it whole (`npm ci`), else a clone of hard links (no file data is copied). A file a step rewrote in
place (rather than replaced, as npm does) shares its inode with the clone, so that change is not
undone, as it would stay after a successful install. What the persistence guard watches is never
shared: the names it looks for at any depth (`.git`, `.envrc`, `HEAD`) are copied, not linked, and
the clone put back has no setuid or setgid bit (a step could have set one on a shared inode).

Another sandbox with the project writable (a dev server, run at the same time) can rename, replace
or link anything there, this directory too. So nothing here follows a link the project holds and
every path is one name under a directory sbox holds open: the package directory, the rollback
directory and the kept tree are opened once, their identities (device, inode) remembered, and at
restore opened again without following a link and compared. If one is not what sbox made, nothing
is restored and nothing removed: the line says what was found and where the kept state is. What
another sandbox moves while sbox works goes on being worked on where it went, which that sandbox
could write already; no link leads sbox anywhere.
"""
from __future__ import annotations

import os
import stat

from sbox_shim import rollback_tree
from sbox_shim.rollback_tree import DIR as _DIR
from sbox_shim.text import printable

PREFIX = ".sbox-rollback-"
_BIG = 256 << 20  # a lockfile of a large monorepo is tens of MiB; nothing sensible is larger
Ident = tuple[int, int]  # (st_dev, st_ino)


class Kept:
    """What `keep` kept, and where (a plain class: dataclasses' import costs the plan cache's
    warm path milliseconds before an install's first step)."""

    def __init__(self, directory: str, keep: str, since: float = 0.0,
                 ids: tuple[Ident, Ident, Ident] = ((0, 0), (0, 0), (0, 0))) -> None:
        self.directory = directory  # the package directory
        self.keep = keep  # where the previous state is kept
        self.files: dict[str, tuple[str, bytes | str, int] | None] = {}  # absent: None
        self.modules = "absent"  # absent | moved | cloned | left (not kept) | unkept (a link or not a directory)
        self.since = since
        self.ids = ids  # the package dir, `keep`, the kept tree
        self.refused = False  # restore found one of them changed: nothing restored, nothing removed
        self.found = ""  # then: where the kept state is ("" not found)

    def __repr__(self) -> str:
        return f"Kept({self.__dict__!r})"


def keep(directory: str, names: tuple[str, ...], modules: str = "node_modules", whole: bool = False,
         tree: bool = True) -> Kept:
    """Keep `names` (files in `directory`) and its `modules` directory; `whole`: the install
    replaces the directory entirely, so it is renamed away and an empty one put in its place;
    not `tree`: the directory is not kept (nothing is expected to change it)."""
    import time

    home = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the path the user is in
    try:
        name = PREFIX + os.urandom(4).hex()
        os.mkdir(name, 0o700, dir_fd=home)
        box = os.open(name, _DIR, dir_fd=home)  # a link put there in the instant: ELOOP, nothing kept
        try:
            kept = Kept(directory, os.path.join(directory, name), since=time.time(),
                        ids=(_ident(os.fstat(home)), _ident(os.fstat(box)), (0, 0)))
            try:
                _fill(kept, home, box, names, modules, whole, tree)
            except BaseException:  # interrupted or failed: no half-made copy is left in the project
                if kept.modules != "moved":
                    try:
                        rollback_tree.empty_out(box)
                        os.rmdir(name, dir_fd=home)
                    except OSError:
                        pass
                raise
            return kept
        finally:
            os.close(box)
    finally:
        os.close(home)


def _fill(kept: Kept, home: int, box: int, names: tuple[str, ...], modules: str, whole: bool,
          tree: bool) -> None:
    for name in names:
        kept.files[name] = _read(home, name)
    try:
        st = os.lstat(modules, dir_fd=home)
    except FileNotFoundError:
        return
    if not tree:
        kept.modules = "left"
        return
    if not stat.S_ISDIR(st.st_mode):
        kept.modules = "unkept"
        return
    source = os.open(modules, _DIR, dir_fd=home)
    try:
        if rollback_tree.empty(source):  # as good as absent (sbox makes it before a run it records)
            return
        if whole:
            os.rename(modules, modules, src_dir_fd=home, dst_dir_fd=box)
            kept.modules = "moved"
            kept.ids = (*kept.ids[:2], _ident(os.lstat(modules, dir_fd=box)))
            os.mkdir(modules, stat.S_IMODE(st.st_mode), dir_fd=home)
            return
        os.mkdir(modules, stat.S_IMODE(st.st_mode), dir_fd=box)
        target = os.open(modules, _DIR, dir_fd=box)
        try:
            kept.ids = (*kept.ids[:2], _ident(os.fstat(target)))
            rollback_tree.clone(source, target, top=True)
        finally:
            os.close(target)
        kept.modules = "cloned"
    finally:
        os.close(source)


def restore(kept: Kept, modules: str = "node_modules") -> tuple[list[str], str | None]:
    """Put the kept state back; (what was rolled back, why it could not be: None if it was).
    On success the kept copy is removed; otherwise it stays where the line says."""
    opened = _reopen(kept, modules)
    if isinstance(opened, str):
        kept.refused, kept.found = True, _find(kept)
        return [], printable(opened + ": nothing was restored or removed")
    home, box = opened
    done: list[str] = []
    try:
        if kept.modules == "cloned":
            _strip_setid(box, modules, kept.ids[2])
        if kept.modules in ("absent", "moved", "cloned") and _lexists(home, modules):
            os.rename(modules, "failed-" + modules, src_dir_fd=home, dst_dir_fd=box)
        if kept.modules in ("moved", "cloned"):
            os.rename(modules, modules, src_dir_fd=box, dst_dir_fd=home)
        if kept.modules not in ("unkept", "left"):
            done.append(modules)
        for name, saved in kept.files.items():
            if _put(home, box, name, saved):
                done.append(name)
    except OSError as exc:
        return done, printable(f"{exc.filename or kept.directory}: {exc.strerror or exc}")
    finally:
        os.close(home)
        os.close(box)
    if kept.modules == "unkept":
        return done, f"{modules} is not a directory (a link?): sbox did not keep it"
    discard(kept)
    return done, None


def discard(kept: Kept) -> None:
    """The install succeeded (or was rolled back): remove the kept state, only if it is still
    the directory sbox made; else it stays, as something else in the project left it."""
    opened = _reopen(kept, None)
    if isinstance(opened, str):
        return
    home, box = opened
    try:
        try:
            rollback_tree.empty_out(box)
            os.rmdir(os.path.basename(kept.keep), dir_fd=home)
        except OSError:
            pass
    finally:
        os.close(home)
        os.close(box)


def _reopen(kept: Kept, modules: str | None) -> tuple[int, int] | str:
    """The package directory and the kept one, open, each checked to be the one sbox made (and
    the kept tree in it, with `modules`); else what was found instead."""
    try:
        home = os.open(kept.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return f"{kept.directory}: {exc.strerror}"
    if _ident(os.fstat(home)) != kept.ids[0]:
        os.close(home)
        return f"{kept.directory} is now another directory than the one the install began in"
    name = os.path.basename(kept.keep)
    try:
        box = os.open(name, _DIR, dir_fd=home)
    except OSError:
        box = -1
    if box < 0 or _ident(os.fstat(box)) != kept.ids[1]:
        if box >= 0:
            os.close(box)
        found = _what(home, name)
        os.close(home)
        return f"{kept.keep} is now {found}, not the directory sbox made"
    if modules is not None and kept.modules in ("moved", "cloned"):
        found = _what(box, modules, kept.ids[2])
        if found:
            os.close(home)
            os.close(box)
            return f"{os.path.join(kept.keep, modules)} is now {found}, not the {modules} sbox kept"
    return home, box


def _what(fd: int, name: str, ident: Ident | None = None) -> str:
    """What is at `name` ('' if it has identity `ident`), in words."""
    try:
        st = os.lstat(name, dir_fd=fd)
    except OSError:
        return "gone"
    if ident is not None and _ident(st) == ident:
        return ""
    if stat.S_ISLNK(st.st_mode):
        return f"a link to {os.readlink(name, dir_fd=fd)}"
    return "another directory" if stat.S_ISDIR(st.st_mode) else "not a directory"


def _find(kept: Kept) -> str:
    """Where the kept directory is now, if something moved it within the package directory."""
    try:
        home = os.open(kept.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if _ident(os.fstat(home)) == kept.ids[0]:
            with os.scandir(home) as entries:
                for entry in entries:
                    if _ident(entry.stat(follow_symlinks=False)) == kept.ids[1]:
                        return os.path.join(kept.directory, entry.name)
    except OSError:
        pass
    finally:
        os.close(home)
    return ""


def _ident(st: os.stat_result) -> Ident:
    return st.st_dev, st.st_ino


def _lexists(fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    return True


def _read(fd: int, name: str) -> tuple[str, bytes | str, int] | None:
    try:
        st = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "link", os.readlink(name, dir_fd=fd), 0
    data = rollback_tree.read_bytes(fd, name, _BIG)
    if data is None:
        raise OSError(0, "not a regular file sbox can keep", name)
    return "file", data, stat.S_IMODE(st.st_mode)


def _put(home: int, box: int, name: str, saved: tuple[str, bytes | str, int] | None) -> bool:
    """Put one file back by rename (which replaces a link, never follows it); True if it changed."""
    if saved is None:
        try:
            st = os.lstat(name, dir_fd=home)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            return False
        os.unlink(name, dir_fd=home)
        return True
    kind, content, mode = saved
    temp = "restore-" + name
    if kind == "link":
        assert isinstance(content, str)
        os.symlink(content, temp, dir_fd=box)
    else:
        assert isinstance(content, bytes)
        if rollback_tree.read_bytes(home, name, _BIG) == content:
            return False
        with os.fdopen(os.open(temp, rollback_tree.NEW, 0o600, dir_fd=box), "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
    os.replace(temp, name, src_dir_fd=box, dst_dir_fd=home)
    return True


def _strip_setid(box: int, modules: str, ident: Ident) -> None:
    """Clear setuid and setgid bits in the kept tree (checked to be sbox's own; no link followed)."""
    fd = os.open(modules, _DIR, dir_fd=box)
    try:
        if _ident(os.fstat(fd)) != ident:
            raise OSError(0, "not the tree sbox kept", modules)
        rollback_tree.strip_setid(fd)
    finally:
        os.close(fd)
