"""The persistence guard's hands: move what the guard (__init__.py) found into sbox's quarantine, and back.

Nothing is deleted: each entry is renamed (never followed) into
`<state>/quarantine/<ID>/files/<its relative path>`, with `manifest.json` beside it; a changed
file's previous version is put back from the snapshot when it was kept. `sbox quarantine list`
and `sbox quarantine restore ID [PATH...] [--force]` read the manifests (guard/restore.py).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time

from sbox_shim.guard import Before, Change, Entry
from sbox_shim.guard.copies import copy_file as _copy_file
from sbox_shim.guard.copies import copy_out as _copy_out
from sbox_shim.trust.files import printable

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence

HOOK_DIRS = (".husky",)


def directory(state_dir: str) -> str:
    return os.path.join(state_dir, "quarantine")


def _own(path: str, depth: int = 64) -> None:
    """Give every regular file at or under `path` (moved into a quarantine) an inode of its own: a
    hard link the sandbox made to it elsewhere (node_modules/.m -> Makefile) would otherwise let a
    later sandbox that writes there change what the quarantine holds. The old inode stays where
    those links are; nothing is deleted. A tree deeper than `depth` (one built to outrun PATH_MAX,
    moved whole) keeps what lies below that depth as it is."""
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            if depth > 0:
                for name in _names_in(path):
                    _own(os.path.join(path, name), depth - 1)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            copy = f"{path}.sbox-own"
            _copy_file(path, copy)
            os.rename(copy, path)
    except OSError:  # too long a path, or gone: left as it is
        pass


def _names_in(path: str) -> list[str]:
    """What a quarantined directory holds; one a sandbox left unreadable to its owner made readable."""
    from sbox_shim.lean import listing

    with listing(path) as it:
        return [e.name for e in it]


def _digest(path: str) -> str | None:
    """sha256 of a regular file (never through a link), as the guard recorded it; None otherwise."""
    from sbox_shim.guard import _entry

    try:
        st = os.lstat(path)
    except OSError:
        return None
    return _entry(path, st, keep=False).sha256 if stat.S_ISREG(st.st_mode) else None


def _move_from(parent: int, name: str, target: str) -> None:
    """Move `name` in the directory open as `parent` to `target`: renamed from that descriptor, or
    across filesystems copied through descriptors (_copy_out) and then removed. A
    directory of sbox's own user that a sandbox left without its owner's rights (renaming one
    into another directory writes its `..`; copying one reads it) gets them back first."""
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    try:
        os.rename(name, target, src_dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.EACCES and _let_owner(parent, name):
            return _move_from(parent, name, target)
        if exc.errno != errno.EXDEV:
            raise
        _let_owner(parent, name)
        _copy_out(parent, name, target)
        _remove(parent, name)


def _remove(parent: int, name: str) -> None:
    """Remove `name` (copied into the quarantine) from the directory open as `parent`; a directory
    with shutil.rmtree, which opens each directory without following a link (/proc/self/fd/N
    names the parent itself, not a path)."""
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(f"/proc/self/fd/{parent}/{name}")
    else:
        os.unlink(name, dir_fd=parent)


def _let_owner(parent: int, name: str) -> bool:
    """lean.let_owner_in for `name` in the directory open as `parent` (no link followed)."""
    from sbox_shim.lean import let_owner_in

    return let_owner_in(f"/proc/self/fd/{parent}/{name}")


def _put_back(root: str, rel: str, snapshot: Before) -> bool:
    """Recreate the previous version of `rel` (already moved away) from the snapshot; False if it
    was not kept."""
    old = snapshot.entries.get(rel)
    if old is None:
        return False
    try:  # through the parent's descriptor: a link another sandbox swaps in meanwhile is not followed
        parent, name = _open_parent(root, rel, make=False)
    except OSError:
        return False
    try:  # FileExistsError: put back meanwhile by the guard of an overlapping step, or remade by its sandbox
        if old.kind == "link" and old.target is not None:
            os.symlink(old.target, name, dir_fd=parent)
        elif old.kind == "dir":
            os.mkdir(name, stat.S_IMODE(old.mode), dir_fd=parent)
        elif old.kind == "file" and old.content is not None:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            with os.fdopen(fd, "wb") as f:
                f.write(old.content)
                os.fchmod(f.fileno(), stat.S_IMODE(old.mode))
        else:
            return False
    except FileExistsError:
        return False
    finally:
        os.close(parent)
    if old.kind == "dir":
        under = sorted(r for r in snapshot.entries if r.startswith(rel + "/"))
        return all([_put_back(root, r, snapshot) for r in under if "/" not in r[len(rel) + 1:]])
    return True


# O_PATH: a directory is opened to act in (rename, make, open at), never read, so one its owner may
# search but not list (a sandbox's `chmod 0311`) is reached all the same; a link is still refused
NOFOLLOW_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_parent(root: str, rel: str, make: bool = True) -> tuple[int, str]:
    """A descriptor of the directory holding `rel` under `root`, reached one component at a time,
    none followed if it is a link (a missing one is made, with `make`), and `rel`'s last name.
    OSError (ELOOP, ENOTDIR, ENOENT) where a component is a link, no directory or missing."""
    from sbox_shim.lean import open_along

    head, _, name = rel.rpartition("/")
    return open_along(root, head, make=0o755 if make else 0), name


def _place(source: str, parent: int, name: str) -> None:
    """Move `source` (in the quarantine) to `name` in the directory `parent`: rename(2), or across
    filesystems a copy made through descriptors (links as links), then the source removed."""
    try:
        os.rename(source, name, dst_dir_fd=parent)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    _copy_into(source, parent, name)
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.rmtree(source)
    else:
        os.unlink(source)


def _copy_into(source: str, parent: int, name: str) -> None:
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), name, dir_fd=parent)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=parent)
        inner = os.open(name, NOFOLLOW_DIR, dir_fd=parent)
        try:
            for child in os.listdir(source):
                _copy_into(os.path.join(source, child), inner, child)
        finally:
            os.close(inner)
    elif stat.S_ISREG(st.st_mode):
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode), dir_fd=parent)
        try:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 16):
                    os.write(out, chunk)
        finally:
            os.close(out)


def _parents_or_missing(root: str, rel: str) -> bool:
    """Every directory between root and rel that exists is a real directory (none is a link)."""
    return _real_parents(root, rel, missing_ok=True)


def _real_parents(root: str, rel: str, missing_ok: bool = False) -> bool:
    """Every directory between root and rel is a real directory (no link to follow); with
    `missing_ok`, the first one missing ends the walk (restore makes the rest)."""
    here = root
    for part in rel.split("/")[:-1]:
        here = os.path.join(here, part)
        try:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return False
        except FileNotFoundError:
            return missing_ok
        except OSError:
            return False
    return True


def _record(change: Change, restored: bool, held: str | None = None) -> dict[str, Any]:
    e: Entry = change.entry
    record = {"path": change.path, "what": change.what, "kind": e.kind, "why": change.why,
              "mode": oct(stat.S_IMODE(e.mode)), "sha256": e.sha256, "link": e.target,
              "previous_restored": restored}
    if held:  # renamed beside itself, in the project (_move_or_hold): where it is now
        record["held"] = held
    return record


def quarantine(changes: Sequence[Change], snapshot: Before, state_dir: str,
               command: Sequence[str]) -> tuple[str, list[dict[str, Any]]] | None:
    """Move every change into a new quarantine; return its id and manifest entries (None if there
    was nothing). An entry inside a created or changed directory moves with it."""
    if not changes:
        return None
    ident = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"
    where = os.path.join(directory(state_dir), ident)
    os.makedirs(os.path.join(where, "files"), mode=0o700)
    moved: list[str] = []
    records: list[dict[str, Any]] = []
    failed: list[str] = []  # each entry is tried: one that cannot be moved leaves none of the others
    try:
        holders: dict[str, str] = {}  # what was renamed beside itself -> that name
        for change in changes:
            inside = next((m for m in moved if change.path.startswith(m + "/")), None)
            restored = False
            held = None
            if inside in holders:  # moved with a directory renamed beside itself
                held = holders[inside] + change.path[len(inside):]
            if not inside:
                try:  # moved through its parent's descriptor: a link swapped in meanwhile is not followed
                    parent, name = _open_parent(snapshot.root, change.path, make=False)
                except OSError as exc:
                    above = exc.errno in (errno.ELOOP, errno.ENOTDIR)
                    failed.append(f"{change.path}: " + ("a directory above it is a link; not followed" if above
                                                        else exc.strerror or str(exc)))
                    continue
                try:
                    held = _move_or_hold(parent, name, os.path.join(where, "files", change.path), ident)
                except FileNotFoundError:  # gone since the comparison: the guard of an overlapping step took it
                    continue
                except OSError as exc:
                    failed.append(f"{change.path}: {exc.strerror or exc}")
                    continue
                finally:
                    os.close(parent)
                if held is None:
                    _own(os.path.join(where, "files", change.path))
                else:
                    held = holders[change.path] = os.path.join(os.path.dirname(change.path), held)
                moved.append(change.path)
                if change.what == "changed":
                    restored = _put_back(snapshot.root, change.path, snapshot)
            records.append(_record(change, restored, held))
    finally:  # what moved is listed and restorable even when a later entry could not be moved
        manifest = {"id": ident, "root": snapshot.root, "command": list(command), "time": time.time(),
                    "entries": records}
        with open(os.path.join(where, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
    if failed:
        raise OSError(errno.EIO, "; ".join(failed))
    return ident, records


def _move_or_hold(parent: int, name: str, target: str, ident: str) -> str | None:
    """`_move_from`; where the quarantine is on another filesystem and the entry cannot be copied
    there (a tree built deeper than a path can name), renamed beside itself instead, to a name no
    tool reads (`NAME.sbox-quarantined-ID`): returns that name. A rename within a directory works
    at any depth."""
    try:
        _move_from(parent, name, target)
        return None
    except FileNotFoundError:
        raise
    except OSError:
        held = f"{name}.sbox-quarantined-{ident}"
        if os.path.lexists(target):  # the part copied: set aside (removing it could recurse as deep)
            os.rename(target, target + ".partial-copy")
        os.rename(name, held, src_dir_fd=parent, dst_dir_fd=parent)
        return held


def _shell_word(path: str) -> str:
    """`path` as one shell word (shlex.quote, without shlex's import)."""
    if path and all(c.isascii() and (c.isalnum() or c in "@%+=:,./-_") for c in path):
        return path
    return "'" + path.replace("'", "'\"'\"'") + "'"


def report_lines(ident: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for r in records:
        what = f"{r['what']} by the sandbox" + (f", {r['why']}" if r["why"] != "host-executed" else "")
        if r["what"] == "changed":
            what += "; the previous version is back" if r["previous_restored"] else "; no previous version kept"
        if r.get("held"):  # not copied into the quarantine, on another filesystem
            out.append(printable(f"sbox: quarantined {r['path']} ({what}) as {r['held']} beside it: it could not be "
                                 "copied into sbox's quarantine on another filesystem (too deep, or changed while "
                                 "copied); delete it, or move it back by hand"))
            continue
        if r["kind"] == "dir" and r["what"] == "created" and r["why"] == "host-executed":
            continue  # a watched directory: its files have a line each (a moved-whole one has its own)
        restore = f"sbox quarantine restore {ident} {_shell_word(r['path'])}"
        out.append(printable(f"sbox: quarantined {r['path']} ({what}); restore: {restore}"))
    return out


def touches_hooks(records: Sequence[Mapping[str, Any]], hooks: str | None) -> bool:
    dirs = [*HOOK_DIRS, *([hooks] if hooks else [])]
    return any(r["path"] == d or r["path"].startswith(d + "/") for r in records for d in dirs)
