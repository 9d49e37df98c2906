"""What planning looked at: every path it stat'ed, listed, read or followed, for the plan cache.

A built-in ecosystem plan is made from files all over (package.json, lockfiles, every .npmrc up
the tree, pip.conf, Cargo's config, a go.work, the tool's own path); no list kept by hand would stay
complete. So while the cold path plans a command that the plan cache could keep, `watching`
wraps the few `os` and `io` functions planning reaches files through and notes each path with
what was learnt of it; recorder.py turns these into facts the warm path checks again (compiled.fact):
- `type` (lstat, os.path.lexists, realpath's walk), `follow` (stat, access, isfile, exists);
- `link` (readlink);
- `names` (a listing: scandir, listdir, glob, walk);
- `content` (a file opened for reading: its bytes' digest).
sbox's own state and caches (kept and checked by key), the run directory's parent, /proc, /sys and
/dev are left out. Imports are not seen (importlib calls `posix` itself): sbox's code is a fact
of its own.
"""
from __future__ import annotations

import builtins
import io
import os
from contextlib import contextmanager

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, Sequence

IGNORED = ("/proc", "/sys", "/dev")


class Probes:
    def __init__(self, cwd: str, ignored: Sequence[str]) -> None:
        self.cwd = cwd
        self.ignored = tuple(p.rstrip("/") for p in (*IGNORED, *ignored) if p)
        self.seen: dict[tuple[str, str], None] = {}

    def note(self, kind: str, path: Any) -> None:
        try:
            if isinstance(path, int):
                return  # an fd: opened through a path noted before
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return
        full = os.path.normpath(os.path.join(self.cwd, text))
        if any(full == p or full.startswith(p + "/") for p in self.ignored):
            return
        self.seen[(kind, full)] = None

    def facts(self) -> list[tuple[str, str]]:
        return list(self.seen)


@contextmanager
def watching(cwd: str, ignored: Sequence[str] = ()) -> Iterator[Probes]:
    """Note what planning looks at until the block ends (then `os` and `io` are as they were)."""
    probes = Probes(cwd, ignored)
    saved: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, kind: Callable[..., str | None]) -> None:
        real = getattr(owner, name)

        def probed(*args: Any, **kwargs: Any) -> Any:
            what = kind(*args, **kwargs)
            if what and kwargs.get("dir_fd") is None:
                probes.note(what, args[0] if args else kwargs.get("path", kwargs.get("file", ".")))
            return real(*args, **kwargs)

        saved.append((owner, name, real))
        setattr(owner, name, probed)

    wrap(os, "stat", lambda *a, follow_symlinks=True, **k: "follow" if follow_symlinks else "type")
    wrap(os, "lstat", lambda *a, **k: "type")
    wrap(os, "access", lambda *a, follow_symlinks=True, **k: "follow" if follow_symlinks else "type")
    wrap(os, "readlink", lambda *a, **k: "link")
    wrap(os, "scandir", lambda *a, **k: "names")
    wrap(os, "listdir", lambda *a, **k: "names")
    wrap(os, "open", lambda path, flags, *a, **k: None if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) else "content")
    reading = lambda file, mode="r", *a, **k: None if any(c in mode for c in "wax+") else "content"  # noqa: E731
    wrap(builtins, "open", reading)
    wrap(io, "open", reading)
    try:
        yield probes
    finally:
        for owner, name, real in reversed(saved):
            setattr(owner, name, real)
