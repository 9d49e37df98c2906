"""What an install left in a project, as a comparable manifest, and how two manifests differ.

A manifest maps each project-relative path to what it is: a file by its SHA-256 and whether it
is executable, a symbolic link by its target (never followed), a directory by nothing. Byte for
byte, with one documented exception, VOLATILE: Python's bytecode caches, which embed the time
they were written (pip compiles on install, so two installs a minute apart never match there).
npm's hidden lockfile (`node_modules/.package-lock.json`) has no timestamp and is compared.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path

VOLATILE = ("__pycache__", "*.pyc")

Manifest = dict[str, str]


def _volatile(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in VOLATILE)


def _describe(path: Path) -> str:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "link " + os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        return "special"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ("exec " if st.st_mode & 0o111 else "file ") + digest.hexdigest()


def manifest(root: Path, globs: list[str] | None = None) -> Manifest:
    """Every entry under `root` (or only those matching `globs`), volatile ones left out."""
    out: Manifest = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _volatile(d))
        for name in dirs + sorted(files):
            if _volatile(name):
                continue
            path = Path(top) / name
            rel = path.relative_to(root).as_posix()
            if globs and not any(fnmatch.fnmatch(rel, g) for g in globs):
                continue
            out[rel] = _describe(path)
    return out


def differences(a: Manifest, b: Manifest) -> list[str]:
    """Paths that differ, each marked: `-` only in a, `+` only in b, `~` in both but not alike."""
    only_a = [f"-{p}" for p in a if p not in b]
    only_b = [f"+{p}" for p in b if p not in a]
    changed = [f"~{p}" for p in a if p in b and a[p] != b[p]]
    return sorted(only_a + only_b + changed, key=lambda s: s[1:])


def summary(diff: list[str], count: int | None = None, shown: int = 3) -> str:
    """`identical`, or how many paths differ (`count`, when `diff` was cut short) and the first
    few (`-` direct only, `+` sbox only, `~` changed)."""
    count = len(diff) if count is None else count
    if not count:
        return "identical"
    more = f", +{count - shown} more" if count > shown else ""
    return f"{count} differ: {', '.join(diff[:shown])}{more}"
