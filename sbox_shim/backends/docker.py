"""The Docker backend: the Docker SDK, a tiny local base image, the host toolchain mounted read-only."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from sbox_shim.backends import dockerahead, dockerapi, dockerhelper, npmahead, pinned, seccomp
from sbox_shim.backends.dockerimage import base_image_tag, build_base_image, pull
from sbox_shim.backends.dockerimage import ensure_base_image as ensure_base_image  # for tests and benches
from sbox_shim.backends.dockerio import attach_and_run
from sbox_shim.backends.dockerwatch import DONE
from sbox_shim.backends.scratch import scratch_bytes
from sbox_shim.errors import SandboxError
from sbox_shim.plan import DNS_SINKHOLE, Mount, Step

NAME = "docker"
LABEL = dockerapi.LABEL
OWNER = "io.sbox.owner"
_WATCHERS: list[int] = []  # reaped when the next step starts one, or by init after sbox
# Python with -I -S (no site, no working directory on the path: ~3x less start-up on every run),
# sbox's own package first; the Docker SDK's directories are passed to it for a removal.
WATCHER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from sbox_shim.backends.dockerwatch import main; "
           "raise SystemExit(main())")
INIT_PATHS = ("/usr/bin/docker-init", "/usr/bin/tini", "/usr/bin/tini-static")
DNS_FILES = ("/etc/resolv.conf", "/etc/hosts")


def _client() -> Any:
    """The SDK's low-level APIClient (dockerapi.py); agreeing on the API version is the one
    request that proves a daemon answers."""
    try:
        return dockerapi.connect()
    except Exception as exc:  # the SDK raises many types for "no daemon"
        raise _unreachable(_short(exc)) from None


def _unreachable(why: str) -> SandboxError:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return SandboxError(f"cannot reach a Docker daemon at {where} ({why}); start one "
                        "(`sudo systemctl start docker`, or `sudo dockerd &`) or use backend: bwrap")


# sbox's command line calls this as soon as it knows that the run uses docker: the SDK is imported
# and the daemon reached in a helper process while sbox plans (dockerhelper.py).
start_early = dockerhelper.start


def _steps_api() -> Any:
    """The helper started early, once it has reached the daemon; else the SDK in this process."""
    helper = dockerhelper.remote()
    if helper is None:
        return _client()
    try:
        helper.ping()
    except dockerhelper.RemoteError as exc:
        raise _unreachable(str(exc)) from None
    return helper


_short = dockerapi.short


def unavailable() -> str | None:
    try:
        _client()
    except SandboxError as exc:
        return str(exc.args[0])
    return None


# Before the command, each pinned bind inside the container must be a mount point at its target
# (mountinfo's fifth field, as the kernel escapes it) holding the very directory or file sbox opened
# and checked on the host (device and inode): docker resolves a bind's source and destination
# paths again when it mounts them, and a link swapped in meanwhile would be followed. Arguments:
# (target, its mountinfo spelling, "dev:ino") for each bind, `--`, the command. One `stat` of every
# target and one `awk` over mountinfo, whatever the number of binds (a stat that fails leaves its
# line out: the count differs, and the check fails).
# Each such mount must also be on that very directory (mountcheck._on_itself): its root (fourth
# field) is its target's place in the nearest mount holding it, when that one is on the same device.
VERIFY = (
    '( n=$#; for a; do [ "$a" = -- ] && break; set -- "$@" "$a"; done; shift "$n"\n'
    'ids=$(n=$#; k=0; for a; do [ $((k % 3)) = 0 ] && set -- "$@" "$a"; k=$((k + 1)); done; shift "$n"; '
    'exec stat -c %d:%i -- "$@" 2>/dev/null)\n'
    "exec awk -v ids=\"$ids\" 'BEGIN { n = split(ids, got, \"\\n\"); "
    'for (i = 2; i < ARGC; i += 3) { k++; t[k] = ARGV[i]; m[k] = ARGV[i + 1]; want[k] = ARGV[i + 2] } '
    'for (i = 2; i < ARGC; i++) ARGV[i] = "" } { seen[$5] = 1; pt[NR] = $5; rt[NR] = $4; dv[NR] = $3 } '
    'END { for (j = 1; j <= k; j++) { o = 0; h = 0; hl = -1; '
    'for (i = 1; i <= NR; i++) { if (pt[i] == m[j]) { o = i; continue } '
    'pre = pt[i] == "/" ? "/" : pt[i] "/"; '
    'if (substr(m[j], 1, length(pre)) == pre && length(pt[i]) >= hl) { h = i; hl = length(pt[i]) } } '
    'r = rt[h]; sub(/\\/$/, "", r); p = pt[h]; sub(/\\/$/, "", p); '
    'if (!(m[j] in seen) || got[j] != want[j] || n != k || (h && dv[h] == dv[o] && rt[o] != r substr(m[j], length(p) + 1))) { '
    'print "sbox: " t[j] " is not what sbox checked (swapped, or its parent moved, while the sandbox was set up?); '
    'nothing ran" > "/dev/stderr"; exit 1 } } }\' /proc/self/mountinfo "$@" ) || exit 125\n'
    'while [ "$1" != -- ]; do shift; done; shift; exec "$@"')


def container_config(step: Step, file_mounts: list[Any], name: str, image: str, tty: bool,
                     verify: Sequence[tuple[str, str, str]] = (), gate: str = "",
                     gate_later: bool = False, preload: bool = False) -> dict[str, Any]:
    """The keyword arguments for creating the container: a pure function of the step. `verify`
    holds (target, its mountinfo spelling, "dev:ino") of the pinned binds, checked inside before the
    command runs; `gate`: the command waits for sbox to write this word instead (dockerahead.py),
    the binds checked from the host; `gate_later`: and the command's arguments after it, one per
    line (a step whose command a hook decides once the step before it has ended); `preload`:
    instead, npm's driver loads npm and waits on the gate itself (npmahead.py)."""
    net = step.network
    size = scratch_bytes(step.limits.memory)
    scratch = f"rw,exec,nosuid,nodev,mode=1777,size={size}"
    mounts: list[dict[str, Any]] = []
    for m in list(step.mounts) + file_mounts:
        if m.kind in ("symlink", "redact"):
            continue  # part of the base image; in file_mounts (materialize)
        if net.policy in ("dns", "open") and m.target in DNS_FILES:
            continue  # Docker writes them: from dns= and extra_hosts (the spec's mechanism), or the host's
        # the SDK's docker.types.Mount as a plain dict: it crosses to the helper as data
        if m.kind == "tmpfs":
            mounts.append({"Target": m.target, "Source": None, "Type": "tmpfs", "ReadOnly": False,
                           "TmpfsOptions": {"Mode": 0o1777, "SizeBytes": size}})
        else:
            mounts.append({"Target": m.target, "Source": os.path.realpath(m.source), "Type": "bind",
                           "ReadOnly": m.readonly})
    mounts = list({m["Target"]: m for m in mounts}.values())  # the later of two at one target, as on bwrap
    init = _host_init() if not step.image else None
    argv = list(step.argv)
    if gate and preload:  # npm's driver, loading npm, then reading `go` and its last words there
        argv = list(npmahead.waiting(step.argv, dockerahead.GATE))
    elif gate and gate_later:  # the command itself comes through the gate (a step a hook decides)
        argv = ["/bin/sh", "-c", dockerahead.GATED_LATER, "sh", gate]
    elif gate:
        argv = ["/bin/sh", "-c", dockerahead.GATED, "sh", gate, *argv]
    elif verify:
        argv = ["/bin/sh", "-c", VERIFY, "sh", *(w for pair in verify for w in pair), "--", *argv]
    config: dict[str, Any] = dict(
        image=image,
        command=[init, "--", *argv] if init else argv,
        name=name,
        user=f"{step.uid}:{step.gid}",
        working_dir=step.cwd,
        environment=dict(step.env),
        mounts=mounts,
        tmpfs={"/tmp": scratch, "/var/tmp": scratch},
        shm_size=size,
        read_only=True,
        cap_drop=["ALL"],
        security_opt=(["no-new-privileges"] if step.no_new_privileges else []) + [seccomp.docker_security_opt()],
        init=init is None,
        labels={LABEL: "1", OWNER: owner()},
        stdin_open=True,
        tty=tty,
        hostname="sbox",
        pids_limit=step.limits.pids or -1,
    )
    if step.limits.memory:
        config["mem_limit"] = step.limits.memory
    if net.policy in ("off", "proxy"):
        config["network_mode"] = "none"
    elif net.policy == "dns":
        config["dns"] = [DNS_SINKHOLE]
        config["extra_hosts"] = [f"{n}:{ip}" for n, ips in net.pins for ip in ips if ":" not in ip]
    if step.image:
        config.pop("read_only")  # a real image may need its own writable root
    return config


def _host_init() -> str | None:
    """The host's tini (shipped as docker-init), visible through the read-only /usr mount.

    Docker's own init is bind-mounted at /sbin/docker-init, which a host /sbin -> usr/sbin link
    inside the read-only /usr cannot take; running the same binary from /usr avoids that.
    """
    for path in INIT_PATHS:
        if os.access(path, os.X_OK):
            return path
    return None


def owner() -> str:
    """This sbox process, as `boot-id:pid`: lets a later run reap what a killed one left."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown"
    return f"{boot}:{os.getpid()}"


def reap_stale(client: Any) -> None:
    """Remove sbox containers whose sbox process died (SIGKILL leaves no chance to clean up)."""
    api = dockerapi.low_level(client)
    boot = owner().split(":")[0]
    try:
        found = api.containers(all=True, filters={"label": LABEL})
    except Exception:  # the daemon went away: the run itself reports that
        return
    for container in found:
        mark = (container.get("Labels") or {}).get(OWNER, "")
        their_boot, _, pid = mark.partition(":")
        if their_boot == boot and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove(dockerapi.Box(api, str(container["Id"]), []))


# The runner names the next step (`ahead`) and drops what was not used (`discard`): dockerahead.py.
ahead = dockerahead.plan
discard = dockerahead.discard_all


_STEPS_CLIENT: list[Any] = []  # one client for the steps of a run: the daemon answered the first


def run(step: Step, run_dir: str, index: int = 0, state_dir: str | None = None,
        egress: Callable[[int], str] | None = None) -> int:
    """Run the step in a container. `egress` (an offline phase whose lookups sbox hears:
    egress/lookups.py) is called with the pid of the container's init before the command runs,
    which it waits for behind the gate of a container started ahead (dockerahead.py; one is made
    now if none was); it returns "" or why nothing may run. Where no gated container can be used,
    the step runs in a container made now, without `egress`."""
    api = _STEPS_CLIENT[0] if _STEPS_CLIENT else _steps_api()
    _STEPS_CLIENT[:] = [api]
    started = dockerahead.take(step, index)
    within = 0.0
    if started is None and egress is not None:
        started, within = dockerahead.now(api, step, run_dir, index), dockerahead.START_WITHIN
    if started is not None:
        try:
            if started.ready(within):
                why = egress(started.init) if egress is not None else ""
                if why:
                    sys.stderr.write(f"sbox: {why}; the sandbox was removed, nothing ran\n")
                    return 125
                return attach_and_run(api, started.box, started.tty, step.limits.timeout, sock=started.sock,
                                      go=started.go, started=lambda: dockerahead.kick(api))
        finally:
            started.discard()
    return _run_new(api, step, run_dir, index)


def _run_new(api: Any, step: Step, run_dir: str, index: int) -> int:
    """The step in a container made now."""
    # What other, killed sbox runs left: removed alongside this run's own requests, not before them
    # (the helper did it as it started).
    reaper = threading.Thread(target=reap_stale, args=(api,), daemon=True)
    if not isinstance(api, dockerhelper.Remote):
        reaper.start()
    links = tuple((m.target, m.source) for m in step.mounts if m.kind == "symlink")
    image = step.image or base_image_tag(links)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    name = f"sbox-{os.getpid()}-{os.urandom(4).hex()}"
    lifeline = watch(api, name)
    container = None
    try:
        config = container_config(step, materialize(step, run_dir, index), name, image, tty, identities(step))
        container = _create(api, config, step, links)
        return attach_and_run(api, container, tty, step.limits.timeout, started=lambda: dockerahead.kick(api))
    finally:
        # A container that has ended, with a step to come: removed while that step runs (joined
        # before sbox exits); otherwise now.
        if container is not None and dockerahead.pending() and _ended(container):
            dockerahead.behind(threading.Thread(target=_finish, args=(container, lifeline)))
        else:
            _finish(container, lifeline)
        if reaper.is_alive():
            reaper.join(timeout=5)


def _finish(container: Any, lifeline: int) -> None:
    """Remove the container; then the watcher has nothing to do."""
    if container is not None:
        _remove(container)
    if lifeline < 0:
        return
    try:
        os.write(lifeline, DONE)
    except OSError:
        pass
    os.close(lifeline)


def _ended(container: Any) -> bool:
    try:
        return not container.api.inspect_container(container.id)["State"]["Running"]
    except Exception:  # unknown: removed before anything else happens
        return False


def _create(api: Any, config: dict[str, Any], step: Step, links: tuple[tuple[str, str], ...]) -> Any:
    """Create the container; an image not there yet (the base image on first use, or the
    profile's image) is built or pulled once, and the create tried again."""
    for attempt in range(2):
        try:
            return dockerapi.create(api, config)
        except Exception as exc:
            if attempt or not dockerapi.image_missing(exc):
                raise SandboxError(f"docker could not create the sandbox: {_short(exc)}") from None
        if step.image:
            pull(api, step.image)
        else:
            build_base_image(api, config["image"], links)
    raise AssertionError("unreachable")


def identities(step: Step) -> list[tuple[str, str, str]]:
    """(target, "dev:ino") of each bind under the project, opened without following a link below
    the project root (pinned.py): what the container must find at each target."""
    try:
        fds = pinned.open_all(step.project, [source for source, _ in step.pinned()])
    except OSError as exc:
        raise SandboxError(f"{exc.filename or step.project}: {exc.strerror}; nothing ran") from None
    try:
        stats = [os.fstat(fd) for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)
    return [(target, _escaped(target), f"{st.st_dev}:{st.st_ino}") for (_, target), st in zip(step.pinned(), stats)]


def _escaped(path: str) -> str:
    """A path as /proc/self/mountinfo writes it."""
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(char, code)
    return path


def watch(api: Any, name: str) -> int:
    """What removes container `name` if sbox dies: the helper that creates it (-1: nothing to
    tell it), or a watcher of its own."""
    return -1 if isinstance(api, dockerhelper.Remote) else _lifeline(name)


def _lifeline(name: str) -> int:
    """Start the host-side watcher that removes container `name` if sbox dies (dockerwatch.py);
    returns the pipe to it, which only this process holds."""
    for pid in list(_WATCHERS):  # earlier steps' watchers, done by now
        if os.waitpid(pid, os.WNOHANG)[0]:
            _WATCHERS.remove(pid)
    read, write = os.pipe()
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        with open(os.devnull, "r+b") as null:
            argv = [sys.executable, "-I", "-S", "-c", WATCHER, package, name, _sdk_path()]
            pid = os.posix_spawn(sys.executable, argv, os.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, read, 0), (os.POSIX_SPAWN_DUP2, null.fileno(), 1),
                                               (os.POSIX_SPAWN_DUP2, null.fileno(), 2)], setsid=True)
    except OSError as exc:
        os.close(write)
        raise SandboxError(f"cannot start sbox's watcher of the docker sandbox: {exc}") from None
    finally:
        os.close(read)
    _WATCHERS.append(pid)
    return write


def _sdk_path() -> str:
    """Where this process found the Docker SDK and what it imports (absolute directories only, never
    the working directory): all the watcher may import from besides the standard library."""
    dirs = []
    for module in ("docker", "requests", "urllib3", "idna", "certifi", "charset_normalizer"):
        found = getattr(sys.modules.get(module), "__file__", None)
        if found and os.path.isabs(found):
            dirs.append(os.path.dirname(os.path.dirname(found)))
    return os.pathsep.join(dict.fromkeys(dirs))


def _remove(container: Any) -> None:
    # Signals must not interrupt the cleanup that guarantees no leftovers.
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        container.remove(force=True)
    except Exception:
        pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def leftovers() -> list[str]:
    """Names of sbox containers still present (for `doctor` and tests)."""
    api = _client()
    return [str(c["Names"][0]).lstrip("/") for c in api.containers(all=True, filters={"label": LABEL})]


def materialize(step: Step, run_dir: str, index: int) -> list[Mount]:
    """Write the step's generated files, and the host's configs it reads without their
    credentials (redact.py, read now), under run_dir; return read-only mounts for them."""
    from sbox_shim import redact

    base = os.path.join(run_dir, f"files-{index}")
    files = [(f.target, f.content.encode("utf-8", "surrogateescape")) for f in step.files]
    files += [(m.target, redact.read(m.source, step.project)) for m in step.mounts if m.kind == "redact"]
    mounts = []
    for target, data in files:
        path = os.path.join(base, target.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)
        os.chmod(path, 0o644)
        mounts.append(Mount(path, target))
    return mounts

