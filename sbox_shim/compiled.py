"""The plan cache: sbox's warm path.

Building a Plan means reading YAML, validating it, dispatching, laying the sandbox out; with its
imports that is about a tenth of a second on every `npm` a user types. Most commands repeat: the
same argv in the same directory with the same environment. So once the cold path has built a
plan it can run on bwrap without help (one step, network off or on, no limits that need sbox
watching), recorder.py stores the finished bwrap options, and the next identical command runs
them from this module, which imports only what Python has loaded already or builds in.

A record is used only when everything it was built from is unchanged:
- its key: sbox's version, uid and gid, the working directory, argv and every environment
  variable, hashed (the record holds no copy of them);
- the facts it depends on, checked again on every use: sbox's own source files, each config file
  consulted (the user file, every candidate up the tree), the toolchain paths and protected paths
  whose presence shaped the mounts, each writable output's kind, every `.git` in the writable
  parts of the project (listing only the directories that changed since the last walk:
  guard/index.py), the sockets at its top, each PATH directory and candidate searched for the
  tool, the bwrap binary.
Environment values are stored as references to the caller's variables, so no token reaches the
disk. Records are kept.py's private files in sbox's state directory. `SBOX_PLAN_CACHE=0` turns
the cache off, and with it the kept parsed configs and bwrap options.
"""
from __future__ import annotations

import posix
import sys

from sbox_shim import __version__, kept, lean
from sbox_shim.backends import bwraprun, pinned

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence

FORMAT = 6  # 2: records carry the seccomp filter; 3: and the binds to pin; 4: and their targets; 5: or a plan; 6: nproc
REF = "\0"  # an option that starts with it is filled in at run time: REF + "env" + REF + NAME | REF + "fd" + REF + N
PACKAGE = lean.dirname(lean.join(posix.getcwd(), __file__))  # __file__ is absolute but from `python -m`
# Shell bookkeeping that no plan is built from: `_` (the path the shell ran) and OLDPWD. Should a
# profile pass them through, the sandbox still gets their current values (recorder.store).
VOLATILE = ("_", "OLDPWD")


# ---------------------------------------------------------------- the warm path (lean)


def run_cached(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Run `sbox ARGV` from its record; None when there is none (or it went stale): the cold path
    must do it. Nothing has run when this returns None."""
    if env.get("SBOX_PLAN_CACHE") == "0":
        return None
    try:
        cwd = posix.getcwd()
    except OSError:
        return None
    records = directory(env)
    if records.startswith(cwd.rstrip("/") + "/") or in_a_project(records):
        return None  # a sandbox could have written it: the cold path refuses, saying why
    path = lean.join(records, key(argv, env, cwd) + ".plan")
    record = _read(path)
    if record is None:
        return None
    if "plan" in record:  # a whole plan, for the runner (replay.py)
        return _replay(path, record, env)
    try:
        if record["makedirs"]:  # bwrap needs them to exist: made once the facts hold
            prepared = _prepare(record, env, lean.dirname(records))
            held = None if prepared is None else _start(record, *prepared)
        else:  # bwrap sets the sandbox up while the facts are checked; it runs nothing before
            held = _held(record, env)
            if held is not None and not _still_holds(record, lean.dirname(records), held[0]):
                return None
    except (LookupError, TypeError, ValueError, AttributeError, OSError):  # a record of another shape
        kept.remove(path)
        return None
    if held is None:
        return None
    code = _run(record, *held)
    if code is None:
        kept.remove(path)
    return code


def _replay(path: str, record: Mapping[str, Any], env: Mapping[str, str]) -> int | None:
    """A recorded plan, run by the runner once every fact holds (and its pinned addresses are
    still fresh: checked while bwrap sets the first step's sandbox up, held: replay.run); None,
    and the record gone if it went stale, when the cold path must plan."""
    import time

    backend = str(record.get("backend", "bwrap"))
    if backend == "docker":  # the SDK and the daemon reached while the facts are checked
        from sbox_shim.backends import dockerhelper

        dockerhelper.start(env)

    def holds() -> bool:
        try:
            fresh = not record["expires"] or time.time() < float(record["expires"])
            return fresh and all(fact(kind, p, state) == seen for kind, p, seen in record["facts"])
        except (LookupError, TypeError, ValueError, AttributeError, OSError):
            return False

    from sbox_shim import replay

    try:
        state = str(record["state"])
        prepared = replay.prepare(record, env)
    except (LookupError, TypeError, ValueError, AttributeError):  # a record of another shape
        kept.remove(path)
        return None
    if prepared is None:
        return None
    code = replay.run(*prepared, env, state, backend, holds)
    if code is None:
        kept.remove(path)
    return code


def key(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    """A digest of everything the plan was built from that is not a file."""
    parts = [f"sbox-plan-{FORMAT}", __version__, sys.version, str(posix.getuid()), str(posix.getgid()),
             sys.executable, cwd, str(len(argv)), *argv]
    parts += [f"{name}={value}" for name, value in sorted(env.items()) if name not in VOLATILE]
    return kept.digest("\0".join(parts).encode("utf-8", "surrogateescape"))


def directory(env: Mapping[str, str]) -> str:
    from sbox_shim.paths import sbox_dir

    return lean.join(sbox_dir("state", env), "plans")


def resolved(path: str) -> str:
    """`path` with its links resolved: itself when none of its components is a link (lstat each,
    no `os` loaded), else os.path.realpath."""
    here = ""
    for part in path.split("/")[1:]:
        here += "/" + part
        try:
            if posix.lstat(here).st_mode & 0o170000 == 0o120000:
                import os

                return os.path.realpath(path)
        except OSError:
            return path
    return path


def in_a_project(path: str) -> bool:
    """Does a directory above `path`, as written or with its links resolved, hold an opt-in file
    (or a pyproject.toml, which might be one)? Then `path` may lie in a project a sandbox could
    write, and nothing there is used."""
    real = resolved(path)
    return _below_opt_in(path) or (real != path and _below_opt_in(real))


def _below_opt_in(path: str) -> bool:
    while True:
        parent = lean.dirname(path)
        if parent == path:
            return False
        path = parent
        for name in ("sbox.yaml", ".sbox.yaml", "pyproject.toml"):
            try:
                posix.lstat(lean.join(path, name))
                return True
            except OSError:
                pass


def record_path(env: Mapping[str, str], digest: str) -> str:
    return lean.join(directory(env), digest + ".plan")


def _read(path: str) -> dict[str, Any] | None:
    record = kept.read_private(path)
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def fact(kind: str, path: str, state_dir: str | None = None) -> object:
    """What a record remembers about a path: for `exists` whether it is there, for `type` which
    kind of file it is (`follow`: of what a link leads to), for `link` where it points, for
    `names` what a directory lists, for `content` the digest of what a file holds, for `stat`/`lstat` its identity, size and
    times, for `code` every source file of sbox, for `gits` every .git below a directory (walked
    against the directory index kept in `state_dir`: guard/index.py), for `sockets` the unix
    sockets in its top two levels."""
    try:
        if kind == "exists":
            posix.lstat(path)
            return True
        if kind == "link":
            return posix.readlink(path)
        if kind == "code":
            return _code(path)
        if kind == "gits":
            from sbox_shim.guard import index

            return index.scan(path, state_dir).gits()
        if kind == "sockets":
            return lean.sockets(path)
        if kind == "names":
            return _names(path)
        if kind == "content":
            return _content(path)
        st = posix.stat(path) if kind in ("stat", "follow") else posix.lstat(path)
    except OSError:
        return None
    if kind in ("type", "follow"):
        return st.st_mode & 0o170000
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _names(path: str) -> str:
    """A listing: each name with its kind (directory, link, other), digested."""
    with posix.scandir(path) as entries:
        names = sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "@" if e.is_symlink() else "")
                       for e in entries)
    return kept.digest("\0".join(names).encode("utf-8", "surrogateescape"))


DIGESTED = 1 << 20  # a bigger file is known by its identity and times, not its bytes


def _content(path: str) -> object:
    """What a file opened for reading held: its bytes' digest (a link followed, as open does); the
    kind of anything that is not a regular file. A file over DIGESTED bytes (a tool's binary whose
    first bytes planning read: node is 100 MB) by its identity, size and times instead, as a
    `stat` fact: any write to it moves its ctime, which no process without the clock can set back."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK)
    try:
        st = posix.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000:
            return st.st_mode & 0o170000
        if st.st_size > DIGESTED:
            return ("big", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        h = kept.hasher()
        while chunk := posix.read(fd, 1 << 20):
            h.update(chunk)
        return str(h.hexdigest())
    finally:
        posix.close(fd)


SUBPACKAGES = ("", "backends", "ecosystems", "egress", "guard", "trust")  # every source file counts


def _code(package: str) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for sub in SUBPACKAGES:
        with posix.scandir(lean.join(package, sub)) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    out.append((lean.join(sub, entry.name), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def _fill(template: Sequence[str], env: Mapping[str, str], fds: Sequence[int]) -> list[str] | None:
    """The options with references resolved; None if a referenced variable is gone."""
    out = []
    for option in template:
        if option.startswith(REF):
            _, kind, name = option.split(REF, 2)
            if kind == "env" and name not in env:
                return None
            option = env[name] if kind == "env" else str(fds[int(name)])
        out.append(option)
    return out


def _holds(record: Mapping[str, Any], state_dir: str | None = None) -> bool:
    """Does every fact the record was built from still hold?"""
    return all(fact(kind, p, state_dir) == seen for kind, p, seen in record["facts"])


def _still_holds(record: Mapping[str, Any], state_dir: str, held: bwraprun.Held) -> bool:
    """`_holds`, for a sandbox already held: killed unless every fact holds."""
    try:
        if _holds(record, state_dir):
            return True
    except BaseException:
        held.abandon()
        raise
    held.abandon()
    return False


def _prepare(record: Mapping[str, Any], env: Mapping[str, str],
             state_dir: str | None = None) -> tuple[list[str], list[int]] | None:
    """The options and data fds to run a record with; None if a fact has changed or a referenced
    variable is gone. Raises if the record is not what this version writes."""
    if not _holds(record, state_dir):
        return None
    for path in record["makedirs"]:
        lean.makedirs(path, 0o700)
    return _materials(record, env)


def _materials(record: Mapping[str, Any], env: Mapping[str, str]) -> tuple[list[str], list[int]] | None:
    """The options and data fds to run a record with; None if a referenced variable is gone."""
    fds = record_fds(record)
    try:
        options = _fill(record["options"], env, fds)
        if options is not None and all(isinstance(o, str) for o in [record["bwrap"], *record["argv"], *options]):
            return options, fds
    except BaseException:
        _close(fds)
        raise
    _close(fds)
    return None


def _held(record: Mapping[str, Any], env: Mapping[str, str]) -> tuple[bwraprun.Held, list[tuple[str, int, int]]] | None:
    """The record's sandbox, started and held before its command; None if a referenced variable
    is gone (nothing started)."""
    prepared = _materials(record, env)
    return None if prepared is None else _start(record, *prepared)


def _start(record: Mapping[str, Any], options: list[str],
           fds: list[int]) -> tuple[bwraprun.Held, list[tuple[str, int, int]]]:
    """Start bwrap held before the command (it closes `fds` once it has them), and what to check
    where it mounts: (target, device, inode) of each pinned source. Raises OSError when bwrap
    cannot be started (the cold path says why)."""
    targets = [str(t) for t in record["pins"][2]]
    pins = fds[len(fds) - len(targets):] if targets else []
    verify = [(t, st.st_dev, st.st_ino) for t, fd in zip(targets, pins) for st in [posix.fstat(fd)]]
    nproc = record.get("nproc")
    return bwraprun.start(record["bwrap"], options, record["argv"], fds, nproc if isinstance(nproc, int) else None), verify


def record_fds(record: Mapping[str, Any]) -> list[int]:
    """The fds a record's options name: its files' memfds, then its seccomp filter's (the BPF
    itself is in the record, so no kept file is read and no filter is built here)."""
    bpf = record["seccomp"]
    if not isinstance(bpf, bytes) or not bpf or len(bpf) % 8:
        raise ValueError("a record without a seccomp filter")
    fds = bwraprun.data_fds(record["files"], record["host_dns"])
    try:
        fds.append(bwraprun.memfd("sbox-seccomp", bpf))
        root, sources, _ = record["pins"]
        fds += pinned.open_all(str(root), [str(s) for s in sources])  # OSError: the cold path says why
    except BaseException:
        _close(fds)
        raise
    return fds


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        posix.close(fd)


def _run(record: Mapping[str, Any], held: bwraprun.Held, verify: list[tuple[str, int, int]]) -> int | None:
    """Run a held record's sandbox; None if bwrap could not set it up (nothing ran)."""
    if record.get("announce"):
        sys.stderr.write(str(record["announce"]) + "\n")
        sys.stderr.flush()

    def sandbox(ready: Callable[[int], str] | None = None) -> int | None:
        try:
            code, status = bwraprun.finish(held, warn=sys.stderr.write, verify=verify, ready=ready)
        except OSError:
            return None
        if status is not None and status.exit_code is None and code == 1:
            return None  # set-up failed or the command is missing: the cold path says which
        return code

    run: Callable[[], int | None] = sandbox
    if record.get("egress"):  # an allowlisted step: the egress proxy around it (egress/warm.py)
        from sbox_shim.egress import warm

        def run() -> int | None:
            return warm.run(record["egress"], sandbox)
    if record.get("guard"):  # the project is writable: the persistence guard checks it after
        from sbox_shim.guard.run import guarded_warm

        return guarded_warm(record["guard"], run)
    return run()
