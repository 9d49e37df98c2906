"""The bubblewrap command line for a Step: a pure function of the step and its generated files."""
from __future__ import annotations

from sbox_shim.backends.scratch import scratch_bytes

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Mapping, Sequence

    from sbox_shim.plan import Mount, Step

SHARED_NET = ("dns", "open")  # policies that keep the host's network namespace
HOSTNAME = "sbox"
# Fresh kernel filesystems and scratch space every sandbox gets, whatever the plan says. `--dev`
# is a tmpfs with the device nodes and a /dev/shm directory, of the kernel's default size: it is
# made read-only in the end, and /dev/shm gets a sized tmpfs of its own.
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
# Kernel files Docker masks in /proc: the host's keyrings, timers, scheduler and memory. Each that
# exists on the host (so in the sandbox's /proc, the same kernel's) gets /dev/null bound over it,
# which bwrap mounts nodev: reading it is refused.
MASKED_PROC = ("/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
               "/proc/latency_stats", "/proc/kcore", "/proc/sysrq-trigger")


def scratch_args(size: int) -> list[tuple[str, list[str]]]:
    """/proc, /dev and the scratch tmpfs, each at most `size` bytes (`--size` precedes its `--tmpfs`)."""
    return [("/proc", ["--proc", "/proc"]), ("/dev", ["--dev", "/dev"])] + [
        (target, ["--perms", "1777", "--size", str(size), "--tmpfs", target]) for target in SCRATCH]


def namespace_args(uid: int, gid: int, share_net: bool, disable_userns: bool = True) -> list[str]:
    """Every namespace new (the network's kept only when asked), no capabilities, own session.

    bwrap always sets PR_SET_NO_NEW_PRIVS; `--die-with-parent` ties the sandbox to our process;
    `--disable-userns` (bubblewrap >= 0.8) stops the command making user namespaces of its own.
    """
    args = ["--unshare-all"]
    if share_net:
        args.append("--share-net")
    args.append("--unshare-user")
    if disable_userns:
        args.append("--disable-userns")
    return args + [
        "--die-with-parent", "--new-session",
        "--cap-drop", "ALL",
        "--uid", str(uid), "--gid", str(gid),
        "--hostname", HOSTNAME,
    ]


def env_args(env: Sequence[tuple[str, str]]) -> list[str]:
    args = ["--clearenv"]
    for name, value in env:
        args += ["--setenv", name, value]
    return args


def mount_args(mounts: Sequence[Mount], data: Sequence[tuple[str, int | str]] = (),
               masked: Sequence[str] = (), size: int | None = None,
               pinned: Mapping[str, int | str] | None = None) -> list[str]:
    """Scratch filesystems, the masked /proc files, the plan's mounts and our /etc files; parents
    before children.

    Every tmpfs (scratch, the throwaway HOME) holds at most `size` bytes (default: `scratch_bytes`).

    `data` are our generated files and the copied ones as (target, fd). bwrap writes each into the
    sandbox's own root (`--file`, no mount, made read-only with the root), or where a bound host
    directory holds the target, into a file of its own bound over it (`--ro-bind-data`): nothing is
    ever written through to the host.

    `pinned` maps the target of a bind to the fd of its source, opened by sbox (pinned.py): bwrap
    binds that open file (--bind-fd), not the path, which a sandbox could have swapped since.

    The sort is stable and by depth only, so at one depth the later mount of a target wins.
    """
    pinned = pinned or {}
    size = scratch_bytes(None) if size is None else size
    entries = scratch_args(size)
    entries += [(target, ["--ro-bind", "/dev/null", target]) for target in masked]
    for m in mounts:
        if m.kind == "symlink":
            entries.append((m.target, ["--symlink", m.source, m.target]))
        elif m.kind == "tmpfs":
            entries.append((m.target, ["--size", str(size), "--tmpfs", m.target]))
        elif m.kind in ("copy", "redact"):
            continue  # in `data`
        elif m.target in pinned:
            how = "--ro-bind-fd" if m.readonly else "--bind-fd"
            entries.append((m.target, [how, str(pinned[m.target]), m.target]))
        else:
            entries.append((m.target, ["--ro-bind" if m.readonly else "--bind", m.source, m.target]))
    bound = [m.target.rstrip("/") for m in mounts if m.kind not in ("symlink", "tmpfs", "copy", "redact")]
    for target, fd in data:
        inside = any(target == b or target.startswith(b + "/") for b in bound)
        how = "--ro-bind-data" if inside else "--file"
        entries.append((target, ["--perms", "0644", how, str(fd), target]))
    entries.sort(key=lambda e: _depth(e[0]))
    args = [a for _, group in entries for a in group]
    # a read-only tmpfs (skeleton.py's, a mask) once what is mounted inside it is there
    for m in mounts:
        if m.kind == "tmpfs" and m.readonly:
            args += ["--remount-ro", m.target]
    # the root holds only mount points: read-only, as in docker; /dev too, a tmpfs bwrap cannot size
    return args + ["--remount-ro", "/dev", "--remount-ro", "/"]


def _depth(target: str) -> int:
    return len([part for part in target.split("/") if part])


def bwrap_options(step: Step, data: Sequence[tuple[str, int | str]] = (), disable_userns: bool = True,
                  env: Sequence[tuple[str, str]] | None = None, seccomp: int | str | None = None,
                  masked: Sequence[str] = (), pinned: Mapping[str, int | str] | None = None) -> list[str]:
    """Everything between `bwrap` and `--`: namespaces, seccomp, environment, filesystem, working
    directory.

    `data` names an fd for each of the step's files; `env` replaces the step's environment (the plan
    cache stores references in place of the caller's values); `seccomp` is the fd of the filter
    (seccomp.py), `masked` the MASKED_PROC files this kernel has, `pinned` the fds of the binds
    under the project (Step.pinned, in its order)."""
    return [
        *namespace_args(step.uid, step.gid, step.network.policy in SHARED_NET, disable_userns),
        *(["--seccomp", str(seccomp)] if seccomp is not None else []),
        *env_args(step.env if env is None else env),
        *mount_args(step.mounts, data, masked, scratch_bytes(step.limits.memory), pinned),
        "--chdir", step.cwd,
    ]


def bwrap_argv(step: Step, data: Sequence[tuple[str, int | str]] = (), bwrap: str = "bwrap",
               disable_userns: bool = True, seccomp: int | str | None = None,
               masked: Sequence[str] = ()) -> list[str]:
    """The whole command line. The runner passes the options through `--args FD` instead, so that
    environment values never show in the host's `ps`."""
    return [bwrap, *bwrap_options(step, data, disable_userns, seccomp=seccomp, masked=masked), "--", *step.argv]
