"""The Plan: pure data describing what runs, where, with which network, and why.

Immutable values without `dataclasses`: importing it (inspect, ast, dis...) and generating a
dataclass's methods cost about 20 ms, on the plan cache's warm path too (replay.py decodes a
recorded Plan before the first step starts). `replace` and `asdict` do what dataclasses' do.
"""
from __future__ import annotations

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Self

DNS_SINKHOLE = "192.0.2.1"  # TEST-NET-1: never routed, so unlisted names never resolve
PROXY_PORT = 3128  # the bridge's HTTP proxy port on the sandbox's own loopback
SANDBOX_DIR = "/.sbox"  # sbox's own read-only files inside the sandbox
# Where npm's scripts phase finds sbox's driver (ecosystems/npm_scripts.js), written into the sandbox.
NPM_DRIVER = "/etc/sbox-npm-scripts.js"
YARN_STATE = "/etc/sbox-yarn-state.js"  # yarn_state.js


class Value:
    """Fields named in __slots__, set once by __init__; compared, hashed and shown by them."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (dataclasses.replace)."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        return type(self)(**{**self.fields(), **changes})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"


def replace(value: Any, **changes: Any) -> Any:
    """`value.replace(**changes)`, as a function (dataclasses.replace's shape)."""
    return value.replace(**changes)


def asdict(value: Any) -> Any:
    """Values as dicts, recursively; tuples stay tuples (dataclasses.asdict)."""
    if isinstance(value, Value):
        return {name: asdict(v) for name, v in value.fields().items()}
    if isinstance(value, tuple):
        return tuple(asdict(v) for v in value)
    return value


class Mount(Value):
    __slots__ = ("source", "target", "readonly", "kind")
    source: str  # host path; "" for tmpfs; the link's text for a symlink
    target: str  # path inside the sandbox
    readonly: bool
    # bind | tmpfs | symlink | cache (a bind whose source sbox creates) | copy (a small host file,
    # read-only: bwrap copies its content in, which is cheaper than a mount; docker binds it) |
    # run (a directory made empty for each run below `source`, removed after it: scratch.py)
    kind: str

    def __init__(self, source: str, target: str, readonly: bool = True, kind: str = "bind") -> None:
        self._set(source=source, target=target, readonly=readonly, kind=kind)


class File(Value):
    """A file sbox writes for the sandbox (resolv.conf, hosts, passwd, ...)."""

    __slots__ = ("target", "content")
    target: str
    content: str

    def __init__(self, target: str, content: str) -> None:
        self._set(target=target, content=content)


class Network(Value):
    __slots__ = ("policy", "patterns", "pins", "unresolved", "explicit", "ports", "forwards")
    policy: str  # off | proxy | dns | open
    patterns: tuple[str, ...]
    pins: tuple[tuple[str, tuple[str, ...]], ...]  # allowed name -> addresses
    unresolved: tuple[tuple[str, str], ...]  # name -> why
    explicit: tuple[str, ...]  # names listed literally (may be private/loopback)
    ports: tuple[tuple[str, tuple[int, ...]], ...]  # name -> ports, when an entry names one
    forwards: tuple[tuple[str, int], ...]  # loopback registries the bridge forwards

    def __init__(self, policy: str, patterns: tuple[str, ...] = (),
                 pins: tuple[tuple[str, tuple[str, ...]], ...] = (), unresolved: tuple[tuple[str, str], ...] = (),
                 explicit: tuple[str, ...] = (), ports: tuple[tuple[str, tuple[int, ...]], ...] = (),
                 forwards: tuple[tuple[str, int], ...] = ()) -> None:
        self._set(policy=policy, patterns=patterns, pins=pins, unresolved=unresolved, explicit=explicit,
                  ports=ports, forwards=forwards)

    @property
    def isolated(self) -> bool:
        """True when the sandbox gets a network namespace with nothing (or only the proxy) in it."""
        return self.policy in ("off", "proxy")


DEFAULT_PIDS = 4096  # a brake on fork bombs; a `limits.pids` of another value is one the user set


class Limits(Value):
    __slots__ = ("pids", "memory", "timeout")
    pids: int | None
    memory: int | None
    timeout: float | None

    def __init__(self, pids: int | None = None, memory: int | None = None, timeout: float | None = None) -> None:
        self._set(pids=pids, memory=memory, timeout=timeout)


class Step(Value):
    """One sandboxed (or, for mode: host, plain) execution."""

    __slots__ = ("label", "argv", "profile", "reason", "mode", "cwd", "env", "network", "mounts", "files",
                 "writable", "no_new_privileges", "image", "uid", "gid", "home", "limits", "create", "staged",
                 "project", "declared", "hook", "optional", "rebuilt")
    label: str  # "run", "download", "scripts"
    argv: tuple[str, ...]
    profile: str
    reason: str  # why this profile: dispatch rule and pattern, built-in policy, default
    mode: str  # sandbox | host
    cwd: str
    env: tuple[tuple[str, str], ...]
    network: Network
    mounts: tuple[Mount, ...]
    files: tuple[File, ...]
    writable: bool | tuple[str, ...]  # the project: all, none, or these relative paths
    no_new_privileges: bool
    image: str | None
    uid: int
    gid: int
    home: str
    limits: Limits
    create: tuple[str, ...]  # output directories sbox makes on the host before the step
    staged: tuple[tuple[str, str], ...]  # (run-dir file, project file): copied back after it
    project: str  # the project root: binds at or under it are pinned by fd (backends/pinned.py)
    declared: tuple[str, ...]  # the variables its profile names, as `sbox plan` shows them
    # A run-time decision between steps (hooks.py): the module's name first, then its data.
    hook: tuple[str, ...]
    # outputs bound only if they exist as the step starts (layout.optional): of the mounts, `create`
    # and `staged`, the runner drops those of one that does not
    optional: tuple[str, ...]
    rebuilt: tuple[str, ...]  # directories whose top is a throwaway layer, their entries bound at run time

    def __init__(self, label: str, argv: tuple[str, ...], profile: str, reason: str, mode: str, cwd: str,
                 env: tuple[tuple[str, str], ...], network: Network, mounts: tuple[Mount, ...] = (),
                 files: tuple[File, ...] = (), writable: bool | tuple[str, ...] = True,
                 no_new_privileges: bool = True, image: str | None = None, uid: int = 0, gid: int = 0,
                 home: str = "/tmp/home", limits: Limits | None = None, create: tuple[str, ...] = (),
                 staged: tuple[tuple[str, str], ...] = (), project: str = "", declared: tuple[str, ...] = (),
                 hook: tuple[str, ...] = (), optional: tuple[str, ...] = (), rebuilt: tuple[str, ...] = ()) -> None:
        self._set(label=label, argv=argv, profile=profile, reason=reason, mode=mode, cwd=cwd, env=env,
                  network=network, mounts=mounts, files=files, writable=writable,
                  no_new_privileges=no_new_privileges, image=image, uid=uid, gid=gid, home=home,
                  limits=Limits() if limits is None else limits, create=create, staged=staged, project=project,
                  declared=declared, hook=hook, optional=optional, rebuilt=rebuilt)

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


class Plan(Value):
    __slots__ = ("steps", "backend", "config_path", "project_root", "warnings")
    steps: tuple[Step, ...]
    backend: str  # auto | docker | bwrap (as configured or overridden)
    config_path: str | None
    project_root: str
    warnings: tuple[str, ...]

    def __init__(self, steps: tuple[Step, ...], backend: str, config_path: str | None, project_root: str,
                 warnings: tuple[str, ...] = ()) -> None:
        self._set(steps=steps, backend=backend, config_path=config_path, project_root=project_root,
                  warnings=warnings)
