"""The Plan: pure data describing what runs, where, with which network, and why."""
from __future__ import annotations

from dataclasses import dataclass, field

DNS_SINKHOLE = "192.0.2.1"  # TEST-NET-1: never routed, so unlisted names never resolve
PROXY_PORT = 3128  # the bridge's HTTP proxy port on the sandbox's own loopback
SANDBOX_DIR = "/.sbox"  # sbox's own read-only files inside the sandbox


@dataclass(frozen=True)
class Mount:
    source: str  # host path; "" for tmpfs; the link's text for a symlink
    target: str  # path inside the sandbox
    readonly: bool = True
    # bind | tmpfs | symlink | cache (a bind whose source sbox creates) | copy (a small host file,
    # read-only: bwrap copies its content in, which is cheaper than a mount; docker binds it) |
    # run (a directory made empty for each run below `source`, removed after it: scratch.py)
    kind: str = "bind"


@dataclass(frozen=True)
class File:
    """A file sbox writes for the sandbox (resolv.conf, hosts, passwd, ...)."""

    target: str
    content: str


@dataclass(frozen=True)
class Network:
    policy: str  # off | proxy | dns | open
    patterns: tuple[str, ...] = ()
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()  # allowed name -> addresses
    unresolved: tuple[tuple[str, str], ...] = ()  # name -> why
    explicit: tuple[str, ...] = ()  # names listed literally (may be private/loopback)
    ports: tuple[tuple[str, tuple[int, ...]], ...] = ()  # name -> ports, when an entry names one
    forwards: tuple[tuple[str, int], ...] = ()  # loopback registries the bridge forwards

    @property
    def isolated(self) -> bool:
        """True when the sandbox gets a network namespace with nothing (or only the proxy) in it."""
        return self.policy in ("off", "proxy")


@dataclass(frozen=True)
class Limits:
    pids: int | None = None
    memory: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Step:
    """One sandboxed (or, for mode: host, plain) execution."""

    label: str  # "run", "download", "scripts"
    argv: tuple[str, ...]
    profile: str
    reason: str  # why this profile: dispatch rule and pattern, built-in policy, default
    mode: str  # sandbox | host
    cwd: str
    env: tuple[tuple[str, str], ...]
    network: Network
    mounts: tuple[Mount, ...] = ()
    files: tuple[File, ...] = ()
    writable: bool | tuple[str, ...] = True  # the project: all, none, or these relative paths
    no_new_privileges: bool = True
    image: str | None = None
    uid: int = 0
    gid: int = 0
    home: str = "/tmp/home"
    limits: Limits = field(default_factory=Limits)
    create: tuple[str, ...] = ()  # output directories sbox makes on the host before the step
    staged: tuple[tuple[str, str], ...] = ()  # (run-dir file, project file): copied back after it
    project: str = ""  # the project root: binds at or under it are pinned by fd (backends/pinned.py)
    declared: tuple[str, ...] = ()  # the variables its profile names, as `sbox plan` shows them
    # A run-time decision between steps (hooks.py): the module's name first, then its data.
    hook: tuple[str, ...] = ()

    def pinned(self) -> list[tuple[str, str]]:
        """(source, target) of the binds at or under the project root, in mount order."""
        from sbox_shim.backends.pinned import inside

        return [(m.source, m.target) for m in self.mounts
                if m.kind in ("bind", "cache") and inside(m.source, self.project)]

    @property
    def environ(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def command(self) -> tuple[str, ...]:
        """The command as the user sees it: argv without the egress bridge that wraps it."""
        if self.network.policy == "proxy" and "--" in self.argv:
            return self.argv[self.argv.index("--") + 1:]
        return self.argv


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    backend: str  # auto | docker | bwrap (as configured or overridden)
    config_path: str | None
    project_root: str
    warnings: tuple[str, ...] = ()
