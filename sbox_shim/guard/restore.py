"""`sbox quarantine list` and `sbox quarantine restore ID [PATH...] [--force]`: what the persistence
guard moved away (guard/quarantine.py), shown entry by entry, and put back whole or entry by entry.

A quarantine's top-level entries are those not inside another of its entries (an entry inside a
moved directory went with it, and comes back only with it). An entry that holds a `.git`, `.envrc`
or `HEAD` (git and direnv act on them in any directory), a setuid/setgid file, a socket, a FIFO, or
a tree too deep to look into comes back only when named: `restore ID` with no PATH refuses, changes
nothing, and names them, so one hidden among legitimate edits is never restored unseen.
"""
from __future__ import annotations

import fcntl
import json
import os
import posixpath
import shlex
import stat
import sys

from sbox_shim.guard.quarantine import _digest, _move_from, _open_parent, _parents_or_missing, _place, directory
from sbox_shim.trust.files import printable

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence, TextIO

NESTED = (".git", ".envrc", "HEAD")  # guard.NESTED: acted on by git or direnv in any directory
NAMED_ONLY = (*NESTED, "setuid", "socket", "fifo", "dir")  # a `why` of "dir": moved whole, too deep to walk
DEPTH = 64


def _manifests(state_dir: str) -> list[dict[str, Any]]:
    base = directory(state_dir)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(base, name, "manifest.json"), encoding="utf-8") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def _mark(where: str, restored: Sequence[str]) -> None:
    """Mark the entries at or under each of `restored` in the manifest, and the quarantine restored
    once all are; under a lock, from the manifest as it is now (a restore of other entries of the
    same quarantine may have run meanwhile)."""
    if not restored:
        return
    lock = os.open(os.path.join(where, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(where, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        for e in manifest["entries"]:
            if any(_under(str(e["path"]), p) for p in restored):
                e["restored"] = True
        manifest["restored"] = all(e.get("restored") for e in manifest["entries"])
        new = os.path.join(where, "manifest.json.new")
        with open(new, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        os.replace(new, os.path.join(where, "manifest.json"))
    finally:
        os.close(lock)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _tops(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The paths of the entries that lie inside no other entry (what was moved itself)."""
    paths = {str(e["path"]) for e in entries}
    out = []
    for e in entries:
        parts = str(e["path"]).split("/")
        if not any("/".join(parts[:i]) in paths for i in range(1, len(parts))):
            out.append(str(e["path"]))
    return list(dict.fromkeys(out))


def _restored(manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("restored") or manifest.get("restored"))


def _hazard(entry: Mapping[str, Any]) -> str | None:
    """Why a manifest entry comes back only when named, or None."""
    why, kind = str(entry.get("why")), str(entry.get("kind"))
    if posixpath.basename(str(entry["path"])) in NESTED:
        return posixpath.basename(str(entry["path"]))
    if why in NAMED_ONLY or kind in ("socket", "fifo"):
        return why if why in NAMED_ONLY else kind
    return None


def _walk(path: str, rel: str, depth: int, out: list[str]) -> None:
    """What under the held `path` (never through a link) comes back only when named."""
    try:
        st = os.lstat(path)
    except OSError:
        out.append(f"{rel} (unreadable)")
        return
    name = posixpath.basename(rel)
    if name in NESTED:  # named for itself: what a .git holds (its HEAD) is its own business
        out.append(f"{rel} ({name})")
        return
    if stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        out.append(f"{rel} ({'socket' if stat.S_ISSOCK(st.st_mode) else 'fifo'})")
    elif stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        out.append(f"{rel} (setuid)")
    if not stat.S_ISDIR(st.st_mode):
        return
    if depth <= 0:
        out.append(f"{rel} (too deep to look into)")
        return
    try:
        names = sorted(os.listdir(path))
    except OSError:
        out.append(f"{rel} (unreadable)")
        return
    for child in names:
        _walk(os.path.join(path, child), f"{rel}/{child}", depth - 1, out)


def hazards(where: str, manifest: Mapping[str, Any], top: str) -> list[str]:
    """`path (why)` for each thing in the top-level entry `top` that comes back only when named:
    by the manifest's entries at or under it, and by what the quarantine holds there."""
    out = [f"{e['path']} ({h})" for e in manifest["entries"]
           if _under(str(e["path"]), top) and (h := _hazard(e)) is not None]
    held = os.path.join(where, "files", top)
    if os.path.lexists(held):
        _walk(held, top, DEPTH, out)
    return list(dict.fromkeys(out))


def cmd_list(state_dir: str, out: TextIO = sys.stdout) -> int:
    """Every quarantine, and each of its top-level entries: kind, created/changed, why, whether it
    is restored, and `!!` where it comes back only when named."""
    for m in _manifests(state_dir):
        where = os.path.join(directory(state_dir), str(m.get("id")))
        entries = {str(e["path"]): e for e in m["entries"]}
        tops = _tops(m["entries"])
        done = [p for p in tops if _restored(m, entries[p])]
        back = " (restored)" if m.get("restored") or (tops and len(done) == len(tops)) else \
            " (partly restored)" if done else ""
        out.write(printable(f"{m['id']}{back}  {m['root']}  {' '.join(m['command'])}") + "\n")
        for p in tops:
            e = entries[p]
            line = f"  {p}  [{e['what']} {e['kind']}, {e['why']}{', restored' if p in done else ''}]"
            found = [] if p in done else hazards(where, m, p)
            inner = [h for h in found if not h.startswith(f"{p} (")]
            if found:
                line += "  !! restored only when named" + (f"; holds {', '.join(inner)}" if inner else "")
            out.write(printable(line) + "\n")
    return 0


def _command(ident: str, paths: Sequence[str], force: bool) -> str:
    return " ".join(["sbox quarantine restore", shlex.quote(ident), *map(shlex.quote, paths),
                     *(["--force"] if force else [])])


def _choose(ident: str, where: str, manifest: Mapping[str, Any], tops: Sequence[str], held: Sequence[str],
            paths: Sequence[str]) -> tuple[list[str], str | None]:
    """The top-level entries the user named, or the one-line reason one of them is refused."""
    by_path = {str(e["path"]): e for e in manifest["entries"]}
    chosen: list[str] = []
    for raw in paths:
        p = posixpath.normpath(raw).rstrip("/") if raw else raw
        if p in held:
            chosen.append(p)
            continue
        if p in tops:
            gone = "is restored already" if _restored(manifest, by_path[p]) else "is no longer held there"
            return [], f"sbox: {raw} in quarantine {ident} {gone}; see sbox quarantine list"
        top = next((t for t in tops if p.startswith(t + "/")), None)
        if top is not None and (p in by_path or os.path.lexists(os.path.join(where, "files", p))):
            return [], (f"sbox: {raw} lies inside {top}, quarantined whole; restore it by naming {top}: "
                        f"{_command(ident, [top], False)}")
        return [], f"sbox: {raw} is not in quarantine {ident}; see sbox quarantine list"
    return list(dict.fromkeys(chosen)), None


def cmd_restore(state_dir: str, ident: str, force: bool, paths: Sequence[str] = (),
                err: TextIO = sys.stderr) -> int:
    """Move a quarantine's entries back where they were: the named top-level ones, or with no PATH
    all of them unless one comes back only when named (then nothing, and which to name). An
    existing file is not overwritten without --force, and with it is moved into the quarantine's
    `displaced/`, not lost. Each restored entry is marked in the manifest; the quarantine is
    restored when all are."""
    where = os.path.join(directory(state_dir), ident)
    found = [m for m in _manifests(state_dir) if m.get("id") == ident and os.path.basename(where) == ident]
    if not found or "/" in ident:
        err.write(printable(f"sbox: no quarantine {ident!r}; see sbox quarantine list") + "\n")
        return 1
    manifest, root = found[0], found[0]["root"]
    tops = _tops(manifest["entries"])
    held = [p for p in tops if os.path.lexists(os.path.join(where, "files", p))]
    if paths:
        tops, problem = _choose(ident, where, manifest, tops, held, paths)
        if problem:
            err.write(printable(problem) + "\n")
            return 1
    else:
        tops = held
    if not tops:
        err.write(f"sbox: quarantine {ident} holds nothing left to restore\n")
        return 1
    unsafe = [p for p in tops if p.startswith("/") or ".." in p.split("/") or not _parents_or_missing(root, p)]
    if unsafe:
        err.write(printable(f"sbox: not restored: a directory above {', '.join(unsafe)} in {root} is not a real "
                            "directory (a link?); sbox never restores through one: replace it with a directory, "
                            "then try again") + "\n")
        return 1
    altered = [e["path"] for e in manifest["entries"] if e.get("kind") == "file" and e.get("sha256")
               and any(_under(e["path"], t) for t in tops)
               and os.path.lexists(os.path.join(where, "files", e["path"]))
               and _digest(os.path.join(where, "files", e["path"])) != e["sha256"]]
    if altered:
        err.write(printable(f"sbox: not restored: {', '.join(altered)} in quarantine {ident} is not what was "
                            "quarantined (its sha256 differs from the manifest's); look at it in "
                            f"{os.path.join(where, 'files')}") + "\n")
        return 1
    if not paths:
        named = [h for p in tops for h in hazards(where, manifest, p)]
        if named:
            rest = [p for p in tops if not hazards(where, manifest, p)]
            err.write(printable(
                f"sbox: not restored: quarantine {ident} holds {', '.join(named)}, which sbox restores only when "
                "named (git, direnv or another host program acts on such entries); "
                + (f"the rest: {_command(ident, rest, force)}; " if rest else "")
                + f"everything: {_command(ident, tops, force)}") + "\n")
            return 1
    taken = [p for p in tops if os.path.lexists(os.path.join(root, p))]
    if taken and not force:
        err.write(printable(f"sbox: not restored: {', '.join(taken)} exists in {root}; "
                            f"{_command(ident, list(paths), True)} moves it into the quarantine first") + "\n")
        return 1
    restored: list[str] = []
    try:
        return _put_all(where, root, ident, tops, force, paths, restored, err)
    finally:
        _mark(where, restored)


def _put_all(where: str, root: str, ident: str, tops: Sequence[str], force: bool, paths: Sequence[str],
             restored: list[str], err: TextIO) -> int:
    """Place each of `tops`, appending each placed to `restored`; 1 at the first that fails."""
    for p in tops:  # each placed through descriptors: a link a sandbox swaps in meanwhile is never followed
        try:
            parent, name = _open_parent(root, p)
        except OSError as exc:
            err.write(printable(f"sbox: not restored: a directory above {p} in {root} is not a real directory "
                                f"({exc.strerror}); sbox never restores through a link") + "\n")
            return 1
        try:
            try:
                os.lstat(name, dir_fd=parent)
                there = True
            except FileNotFoundError:
                there = False
            if there and not force:  # made since the look above
                err.write(printable(f"sbox: not restored: {p} exists in {root}; {_command(ident, list(paths), True)} "
                                    "moves it into the quarantine first") + "\n")
                return 1
            if there:  # moved as the guard moves (across filesystems: copied through descriptors)
                _move_from(parent, name, os.path.join(where, "displaced", p))
            _place(os.path.join(where, "files", p), parent, name)
        except OSError as exc:  # something changed it meanwhile (a sandbox still running there)
            err.write(printable(f"sbox: not restored: {p} in {root} changed while sbox restored it "
                                f"({exc.strerror}); try again once nothing runs there") + "\n")
            return 1
        finally:
            os.close(parent)
        restored.append(p)
        err.write(printable(f"sbox: restored {p} in {root}") + "\n")
    return 0
