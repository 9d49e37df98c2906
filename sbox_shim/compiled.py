"""The plan cache: sbox's warm path.

Building a Plan means reading YAML, validating it, dispatching, laying the sandbox out; with its
imports that is about a tenth of a second on every `npm` a user types. Most commands repeat: the
same argv in the same directory with the same environment. So once the cold path has built a
plan it can run on bwrap without help (one step, network off or on, no limits that need sbox
watching), it stores the finished bwrap options here, and the next identical command runs them
from this module, which imports only what Python has loaded already.

A record is used only when everything it was built from is unchanged:
- its key: sbox's version, uid and gid, the working directory, argv and every environment
  variable, hashed (the record holds no copy of them);
- the facts it depends on, checked again on every use: sbox's own source files, each config file
  consulted (the user file, every candidate up the tree), the toolchain paths and protected paths
  whose presence shaped the mounts, each PATH directory and candidate searched for the tool, the
  bwrap binary.
Environment values are stored as references to the caller's variables, so no token reaches the
disk. Records live in sbox's state directory (0700, owner checked on read), which build.py keeps
read-only in every sandbox that could otherwise reach it. `SBOX_PLAN_CACHE=0` turns it off (and
the kept parsed configs and bwrap options, which use `read_private`/`write_private` too).
"""
from __future__ import annotations

import marshal
import os
import sys

from sbox_shim import __version__
from sbox_shim.backends import bwraprun

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Mapping, Sequence

    from sbox_shim.host import Host
    from sbox_shim.plan import Plan

FORMAT = 1
KEEP = 256  # records kept; the oldest go first
REF = "\0"  # an option that starts with it is filled in at run time: REF + "env" + REF + NAME | REF + "fd" + REF + N
PACKAGE = os.path.dirname(os.path.abspath(__file__))
# Shell bookkeeping that no plan is built from: `_` (the path the shell ran) and OLDPWD. Should a
# profile pass them through, the sandbox still gets their current values (see `store`).
VOLATILE = ("_", "OLDPWD")


# ---------------------------------------------------------------- the warm path (lean)


def run_cached(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Run `sbox ARGV` from its record; None when there is none (or it went stale): the cold path
    must do it. Nothing has run when this returns None."""
    if env.get("SBOX_PLAN_CACHE") == "0":
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    path = record_path(env, key(argv, env, cwd))
    record = _read(path)
    if record is None:
        return None
    try:
        prepared = _prepare(record, env)
    except (LookupError, TypeError, ValueError, AttributeError, OSError):  # a record of another shape
        _remove(path)
        return None
    if prepared is None:
        return None
    code = _run(record, *prepared)
    if code is None:
        _remove(path)
    return code


def key(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    """A digest of everything the plan was built from that is not a file."""
    parts = [f"sbox-plan-{FORMAT}", __version__, sys.version, str(os.getuid()), str(os.getgid()), sys.executable, cwd,
             str(len(argv)), *argv]
    parts += [f"{name}={value}" for name, value in sorted(env.items()) if name not in VOLATILE]
    return digest("\0".join(parts).encode("utf-8", "surrogateescape"))


def digest(data: bytes) -> str:
    """SHA-256, hex."""
    try:  # the built-in module: hashlib loads OpenSSL, tens of milliseconds here
        if sys.version_info >= (3, 12):
            from _sha2 import sha256  # type: ignore[import-not-found]
        else:
            from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def directory(env: Mapping[str, str]) -> str:
    from sbox_shim.paths import user_dir

    return os.path.join(env.get("SBOX_STATE_DIR") or user_dir("state", env), "plans")


def record_path(env: Mapping[str, str], digest: str) -> str:
    return os.path.join(directory(env), digest + ".plan")


def _read(path: str) -> dict[str, Any] | None:
    record = read_private(path)
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def read_private(path: str) -> object:
    """What sbox stored at `path`, if it is ours: a regular file of this user, in a directory of
    this user, neither writable by anyone else. None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not (_private(os.fstat(fd)) and _private(os.stat(os.path.dirname(path)))):
            return None
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    try:
        return marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def fact(kind: str, path: str) -> object:
    """What a record remembers about a path: for `exists` whether it is there, for `type` which
    kind of file it is, for `link` where it points, for `stat`/`lstat` its identity, size and
    times, for `code` every source file of sbox."""
    try:
        if kind == "exists":
            os.lstat(path)
            return True
        if kind == "link":
            return os.readlink(path)
        if kind == "code":
            return _code(path)
        st = os.stat(path) if kind == "stat" else os.lstat(path)
    except OSError:
        return None
    if kind == "type":
        return st.st_mode & 0o170000
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _code(package: str) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for sub in ("", "backends", "ecosystems", "egress"):
        with os.scandir(os.path.join(package, sub)) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    out.append((os.path.join(sub, entry.name), st.st_ino, st.st_size, st.st_mtime_ns))
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


def _prepare(record: Mapping[str, Any], env: Mapping[str, str]) -> tuple[list[str], list[int]] | None:
    """The options and data fds to run a record with; None if a fact has changed or a referenced
    variable is gone. Raises if the record is not what this version writes."""
    if not all(fact(kind, p) == seen for kind, p, seen in record["facts"]):
        return None
    for path in record["makedirs"]:
        os.makedirs(path, mode=0o700, exist_ok=True)
    fds: list[int] = []
    try:
        for target, data in bwraprun.file_data(record["files"], record["host_dns"]):
            fds.append(bwraprun.memfd("sbox" + target.replace("/", "-"), data))
        options = _fill(record["options"], env, fds)
        if options is not None and all(isinstance(o, str) for o in [record["bwrap"], *record["argv"], *options]):
            return options, fds
    except BaseException:
        _close(fds)
        raise
    _close(fds)
    return None


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


def _run(record: Mapping[str, Any], options: list[str], fds: list[int]) -> int | None:
    """Run a prepared record's sandbox; None if bwrap could not set it up (nothing ran)."""
    if record.get("announce"):
        sys.stderr.write(str(record["announce"]) + "\n")
        sys.stderr.flush()
    try:
        code, status = bwraprun.run(record["bwrap"], options, record["argv"], fds, warn=sys.stderr.write)
    except OSError:
        return None
    if status is not None and status.exit_code is None and code == 1:
        return None  # set-up failed or the command is missing: the cold path says which
    return code


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ---------------------------------------------------------------- the cold path: writing records


def store(argv: Sequence[str], plan: Plan, backend: ModuleType, host: Host, explicit_config: str | None,
          announce: str) -> str | None:
    """Record a plan the warm path can run; return the record's path, or None (and why not is
    `cacheable`'s answer). Failing to write is not an error: the next run is just cold again."""
    if host.env.get("SBOX_PLAN_CACHE") == "0" or cacheable(plan, backend, host) is not None:
        return None
    from sbox_shim.backends import bwrap
    from sbox_shim.backends.bwrapargs import bwrap_options

    step = plan.steps[0]
    path = bwrap.bwrap_path()
    if path is None:
        return None
    target = record_path(host.env, key(argv, host.env, host.cwd))
    try:  # what the run creates anyway, created before the facts are taken: else they go stale at once
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        for m in step.mounts:
            if m.kind == "cache":
                os.makedirs(m.source, mode=0o700, exist_ok=True)
    except OSError:
        return None
    env = [(name, REF + "env" + REF + name if host.env.get(name) == value else value) for name, value in step.env]
    files = bwrap.data_files(step)
    data = [(target, REF + "fd" + REF + str(i)) for i, (target, _, _) in enumerate(files)]
    record = {
        "format": FORMAT,
        "facts": [(kind, p, fact(kind, p)) for kind, p in _watched(plan, host, explicit_config, path)],
        "bwrap": path,
        "options": bwrap_options(step, data, "--disable-userns" in bwrap.options_of(path), env=env),
        "argv": list(step.argv),
        "files": files,
        "host_dns": step.network.policy == "open",
        "makedirs": [m.source for m in step.mounts if m.kind == "cache"],
        "announce": "" if host.env.get("SBOX_QUIET") == "1" else announce,
    }
    try:
        _write(target, marshal.dumps(record))
    except (OSError, ValueError):
        return None
    return target


def cacheable(plan: Plan, backend: ModuleType | None, host: Host) -> str | None:
    """None if the warm path can run this plan exactly as the cold path would; else why not."""
    from sbox_shim.build import AS_IS
    from sbox_shim.environment import is_secret

    if len(plan.steps) != 1 or plan.steps[0].label != AS_IS:
        return "a built-in two-phase install reads project files and is planned on every run"
    step = plan.steps[0]
    if step.mode != "sandbox" or backend is None or backend.NAME != "bwrap":
        return "the warm path runs bwrap sandboxes only"
    if step.network.policy not in ("off", "open"):
        return "an allowlist is resolved and enforced anew on every run"
    if step.image or step.limits.timeout or step.limits.memory or (step.limits.pids and host.uid != 0):
        return "limits and images are handled by the full path only"
    if any(is_secret(name) and host.env.get(name) != value for name, value in step.env):
        return "a credential-like value sbox computed would be written to disk"
    plans = os.path.realpath(directory(host.env))
    if any(not m.readonly and m.kind in ("bind", "cache") and _within(plans, os.path.realpath(m.source))
           for m in step.mounts):
        return "the plan cache would be writable inside the sandbox"
    return None


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _watched(plan: Plan, host: Host, explicit_config: str | None, bwrap_path: str) -> list[tuple[str, str]]:
    """The paths whose state built this plan, with what to compare (see `fact`)."""
    from sbox_shim import config, layout
    from sbox_shim.toolpath import searched, without_shims

    step = plan.steps[0]
    path_var = without_shims(host.env.get("PATH", os.defpath), host.shim_dirs)
    watched = [("code", PACKAGE), ("stat", bwrap_path)]
    watched += [("stat", p) for p in config.consulted(host.cwd, host.env, explicit_config)]
    watched += [("type", p) for p in layout.TOOLCHAIN + layout.ETC] + [("link", p) for p in layout.TOOLCHAIN]
    watched += [("exists", p) for p in layout.protected_paths(plan.project_root, plan.config_path)]
    watched += [("exists", p) for p in host.own_dirs]
    for p in searched(step.argv[0], path_var, host.shim_dirs):
        watched += [("stat", p), ("lstat", p)]
    return list(dict.fromkeys(watched))


def write_private(path: str, value: Any) -> None:
    """Store `value` (plain data) at `path` for `read_private`: atomically, in a private directory
    that keeps its newest KEEP files. Raises OSError, or ValueError for what marshal cannot hold."""
    _write(path, marshal.dumps(value))


def _write(path: str, data: bytes) -> None:
    """Atomically, in a private directory; the oldest files go once there are more than KEEP."""
    base = os.path.dirname(path)
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _prune(base)


def _prune(base: str) -> None:
    with os.scandir(base) as entries:
        records = [(e.stat().st_mtime_ns, e.path) for e in entries if not e.name.endswith(".tmp")]
    for _, old in sorted(records)[:-KEEP]:
        _remove(old)
