"""Build a Plan from argv, config and host facts. Pure but for name resolution and stat()."""
from __future__ import annotations

import os

from sbox_shim import checkout, configs, dispatch, ecosystems, layout, skeleton, tree
from sbox_shim.trust import boundary
from sbox_shim.trust.written import network_path, written_by_sandbox
from sbox_shim.config import Config, Profile
from sbox_shim.environment import has_url_credentials, scrub
from sbox_shim.errors import UsageError
from sbox_shim.host import Host
from sbox_shim.lean import inside
from sbox_shim.network import build_network
from sbox_shim.plan import PROXY_PORT, SANDBOX_DIR, Limits, Mount, Plan, Step
from sbox_shim.toolpath import find_real, without_shims

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence

    from sbox_shim.resolve import Resolver

DEFAULT_PROFILE = Profile(name="default", network=False, writable=True)
AS_IS = "run"  # the label of a step that runs the command as given (no ecosystem phases)
BRIDGE = f"{SANDBOX_DIR}/bridge.py"
RUN_DIR = f"{SANDBOX_DIR}/run"
EGRESS_SOCKET = f"{RUN_DIR}/egress.sock"


def choose(config: Config, argv: Sequence[str], override: str | None,
           ctx: ecosystems.Context) -> list[tuple[Profile, ecosystems.Phase]]:
    """Which profile each step runs in: --profile, dispatch, the ecosystem's policy, `default`."""
    if override:
        if override not in config.profiles:
            known = ", ".join(sorted(config.profiles)) or "none defined"
            raise UsageError(f"--profile {override}: no such profile in {config.path or 'the config'} ({known})")
        return [(config.profiles[override], _as_is(argv, f"--profile {override}"))]
    found = dispatch.match(config, argv)
    if found:
        reason = f"dispatch rule {found.rule.name!r} matched {found.pattern!r}"
        return [(config.profiles[found.rule.profile], _as_is(argv, reason))]
    builtin = ecosystems.phases(argv, ctx)
    if builtin:
        tool = os.path.basename(argv[0])
        return [_builtin_profile(tool, phase, config) for phase in builtin]
    profile = config.profiles.get("default", DEFAULT_PROFILE)
    why = "profile 'default'" if "default" in config.profiles else "built-in default (network off)"
    return [(profile, _as_is(argv, f"no dispatch rule matched; {why}"))]


def _as_is(argv: Sequence[str], reason: str) -> ecosystems.Phase:
    return ecosystems.Phase(AS_IS, tuple(argv), network=False, reason=reason)


def _builtin_profile(tool: str, phase: ecosystems.Phase,
                     config: Config) -> tuple[Profile, ecosystems.Phase]:
    """sbox's profile for a built-in phase, with what the config's profile of that name adds
    (`pnpm:scripts`, else its ecosystem's `npm:scripts`): variables, allow entries, limits, and an
    explicit `network: on`. The command, outputs, mounts and credentials stay the phase's."""
    name = f"{tool}:{phase.label}"
    extra = config.phases.get(name) or config.phases.get(f"{ecosystems.MODULES.get(tool, tool)}:{phase.label}")
    if extra is None:
        return Profile(name=name, network=phase.network, network_allow=phase.allow, writable=phase.writable), phase
    where = f"{config.path}:{extra.line}" if config.path and extra.line else config.path or "the user config"
    merged = Profile(name=name, network=phase.network or extra.network,
                     network_allow=tuple(dict.fromkeys(phase.allow + extra.network_allow)),
                     writable=phase.writable, env=extra.env, env_set=extra.env_set, limits=extra.limits)
    turned = ", which turns the network on" if extra.network and not phase.network else ""
    return merged, phase.replace(reason=f"{phase.reason}; with profile {extra.name} ({where}){turned}")


def build_plan(
    argv: Sequence[str],
    config: Config,
    host: Host,
    *,
    profile: str | None = None,
    backend: str | None = None,
    run_dir: str = "<run-dir>",
    resolver: Resolver | None = None,
    which: Callable[[str, str, Sequence[str]], str | None] = find_real,
) -> Plan:
    if not argv:
        raise UsageError("no command given; usage: sbox run -- COMMAND [ARGS...]")
    boundary.check_root(config.root, host.home, config.path)
    path = without_shims(host.env.get("PATH", os.defpath), host.shim_dirs)
    real = which(argv[0], path, host.shim_dirs)
    ctx = ecosystems.Context(host.cwd, config.root, host.home, host.env, host.cache_dir, real)
    chosen_profiles = choose(config, argv, profile, ctx)
    writable = sandbox_written(config.root, host)
    if any(prof.mode == "host" for prof, _ in chosen_profiles):
        # Unsandboxed: nothing a sandbox could write may pick the program (a planted
        # ./node_modules/.bin/npm, an `npm` a wheel put in a venv's bin).
        real_before = real
        path = host_path(path, config.root, host.cwd, writable)
        real = which(argv[0], path, host.shim_dirs)
        # One the project holds is passed over for the next on PATH (as before); one in a venv or
        # sbox's cache is refused: the next one on PATH would be another Python's pip, say.
        if (real_before and real_before != real
                and not inside(os.path.realpath(os.path.join(host.cwd, real_before)), os.path.realpath(config.root))):
            raise UsageError(f"mode: host would run {real_before}, which lies where sandboxes write (a venv, "
                             "sbox's cache); run a tool installed elsewhere")
        if real and inside(os.path.realpath(real), os.path.realpath(config.root)):
            raise UsageError(f"mode: host would run {real}, which lies inside the project (sandboxes can write "
                             "it); run a tool installed outside the project")
        if real and os.sep in argv[0] and written_by_sandbox(os.path.join(host.cwd, real), writable):
            raise UsageError(f"mode: host would run {real}, which lies where sandboxes write (a venv, "
                             "sbox's cache); run a tool installed elsewhere")
        for i, word in enumerate(argv):  # `pip --python .venv/bin/python`: an interpreter the project holds
            name, eq, value = word.partition("=")
            if name == "--python" and (eq or i + 1 < len(argv)):
                chosen = os.path.realpath(os.path.join(host.cwd, value if eq else argv[i + 1]))
                if inside(chosen, os.path.realpath(config.root)):
                    raise UsageError(f"mode: host would run {chosen}, which lies inside the project (sandboxes "
                                     "can write it); run it sandboxed, or name an interpreter outside the project")
    warnings: list[str] = [f"{prof.name}: scripts run with the network on, as its profile in {config.path} says"
                           for prof, phase in chosen_profiles if prof.network and not phase.network
                           and phase.label != AS_IS]
    steps = []
    for index, (prof, phase) in enumerate(chosen_profiles):
        stage_dir = os.path.join(run_dir, "out", str(index))
        step, notes = _step(prof, phase, config, host, path, real, run_dir, resolver, stage_dir, writable, which)
        steps.append(step)
        warnings += [n for n in notes if n not in warnings]
    if any(s.network.policy == "dns" for s in steps):
        warnings.append(
            "under network_enforce: dns the sandbox shares the host network: services on the host's "
            "loopback and abstract unix sockets are reachable"
        )
    chosen = backend or config.backend
    memory = [s.limits for s in steps if s.limits.memory]
    if chosen != "docker" and memory:
        from sbox_shim.backends import cgroups

        why = cgroups.unusable(memory[0].memory, memory[0].pids)
        if why:
            warnings.append(f"limits.memory is not enforced by bubblewrap here ({why}); the docker backend enforces it")
    return Plan(tuple(steps), chosen, config.path, config.root, tuple(warnings))


def _step(prof: Profile, phase: ecosystems.Phase, config: Config, host: Host, path: str,
          real: str | None, run_dir: str, resolver: Resolver | None,
          stage_dir: str, writable: tuple[str, ...] = (),
          which: Callable[[str, str, Sequence[str]], str | None] = find_real) -> tuple[Step, tuple[str, ...]]:
    net, notes = build_network(prof.network, prof.network_allow, prof.network_enforce,
                               static=config.hosts, resolver=resolver, implied=phase.implied)
    if net.policy != "off" and prof.mode == "sandbox":
        # A step with the network (and, in a download phase, your registry credentials) runs no
        # program a sandbox could have written: not the tool, not the `node` its #! line names.
        path = network_path(path, writable)
        tool = phase.argv[0] if phase.argv else ""
        if tool and os.sep not in tool and which(tool, path, host.shim_dirs) is None:
            planted = which(tool, without_shims(host.env.get("PATH", os.defpath), host.shim_dirs),
                            host.shim_dirs)
            if planted:
                raise UsageError(f"{tool}: the only one on PATH is {planted}, where sandboxes write (the project, "
                                 f"a venv, sbox's cache); a step with the network will not run it: install "
                                 f"{tool} outside them (the system's, ~/.local/bin, pipx)")
        elif tool.startswith("/") and written_by_sandbox(tool, writable):
            raise UsageError(f"{tool} lies where sandboxes write (the project, a venv, sbox's cache); a step with "
                             "the network will not run it")
    # every sandbox sees nested repositories' configs redacted, one that writes nothing too
    outputs, optional, tops = layout.optional_outputs(prof.writable)
    inspected = tree.inspect(config.root, outputs, every=prof.mode == "sandbox")
    project = layout.project_layout(config.root, outputs, config.path, inspected, stage_dir, tops=tops,
                                    optional=optional)
    notes += tuple(f"{prof.name}: {why}" for why in project.refused)
    # A phase's `secrets` are caller variables passed through in that phase only (tokens, index URLs).
    env = scrub(host.env, extra=prof.env + phase.secrets, allow_secrets=prof.env + phase.secrets)
    if net.policy == "off":  # package code runs offline: no credential rides along in a URL
        named = prof.env if phase.label == AS_IS else ()  # a profile's own choice; never a built-in phase's
        env = {k: v for k, v in env.items() if k in named or not has_url_credentials(v)}
    env.update(prof.env_set)  # the config's NAME=value; sbox's own settings for the phase win
    env.update(phase.env)
    if net.policy == "off" and phase.label == AS_IS and phase.argv and os.path.basename(phase.argv[0]) == "npx":
        env.setdefault("npm_config_offline", "true")  # fail at once, not after a minute of retries
    # PYTHONDONTWRITEBYTECODE, PIP_COMPILE=false (pip's --no-compile): Python and pip in a sandbox
    # write no bytecode, so that any the step leaves in the project is its code's doing, which the
    # guard quarantines (guard.bytecode); but pip's install phases into a venv, which compile there
    # as pip does directly (ecosystems/pip.py: bytecode in site-packages is what was installed)
    env.update(PATH=path, HOME=host.home, USER=host.user, LOGNAME=host.user, SHELL="/bin/sh",
               TMPDIR="/tmp", SBOX_ACTIVE="1", SBOX_PROFILE=prof.name, PYTHONDONTWRITEBYTECODE="1",
               PIP_COMPILE=phase.env.get("PIP_COMPILE", "false"))
    mounts: list[Mount] = layout.toolchain_mounts()
    prefix = layout.tool_prefix(real, host.home)
    if prefix:
        mounts.append(Mount(prefix, prefix))
    # npm's, pip's and git's system-wide configs: without their credentials, but those a download
    # phase reads itself
    mounts += configs.system_configs(prefix, phase.configs, config.root)
    mounts.append(Mount("", host.home, readonly=False, kind="tmpfs"))
    mounts += project.mounts
    mounts += layout.phase_parts(config.root, phase.mounts, inspected, config.path)  # before the rebuilt gits
    # a linked worktree's or a submodule's git directory, outside the project: git works there
    from sbox_shim.paths import sbox_dir

    outside, why = checkout.outside_git_dir(config.root, writable, sbox_dir("state", host.env)) \
        if prof.mode == "sandbox" else ((), "")
    notes += (f"{prof.name}: {why}",) if why else ()
    mounts += [Mount(d, d) for d in outside]
    shown = configs.git_configs(config.root, inspected.gits + outside)  # without their credentials
    if any(m.kind == "tmpfs" for m in shown):
        notes += (f"{prof.name}: more than {configs.MAX_REDACTED} git configs: the submodules' git directories are "
                  "hidden in the sandbox (git does not work inside submodules there), the rest shown without "
                  "their credentials",)
    mounts += shown
    mounts += skeleton.around(shown, config.root)  # so that no rename on the host shows them as they are
    mounts += phase.mounts
    argv = phase.argv
    if net.policy == "proxy":
        argv, bridge_mounts = _bridge(argv, net.forwards, host, run_dir)
        mounts += bridge_mounts
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                     "npm_config_proxy", "npm_config_https_proxy", "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY"):
            env[name] = proxy
        env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    if prof.mode == "sandbox":  # mode: host mounts nothing
        mounts += boundary.check_mounts(mounts, config.root, host.home, host.own_dirs, phase.credentials)
    mounts += layout.own_mounts(mounts, host.own_dirs)
    cwd = host.cwd if inside(host.cwd, config.root) else config.root
    limits = Limits(prof.limits.pids, prof.limits.memory, prof.limits.timeout)
    step = Step(
        label=phase.label, argv=tuple(argv), profile=prof.name, reason=phase.reason, mode=prof.mode,
        cwd=cwd, env=tuple(sorted(env.items())), network=net, mounts=layout.dedupe(mounts),
        files=tuple(layout.etc_files(host.user, host.uid, host.gid, host.home, net)) + phase.files,
        writable=outputs, no_new_privileges=prof.no_new_privileges, image=prof.image,
        uid=host.uid, gid=host.gid, home=host.home, limits=limits, project=config.root,
        declared=_declared(prof, host.env),
        create=project.create, staged=project.staged, hook=phase.hook,
        optional=tuple(os.path.join(config.root, o.rstrip("/")) for o in optional),
        rebuilt=tuple(os.path.join(config.root, t) if t else config.root for t in tops),
    )
    return step, notes


def _declared(prof: Profile, caller: Mapping[str, str]) -> tuple[str, ...]:
    """The variables the profile names, for `sbox plan` (names only, never values)."""
    return (*(f"{n} (passed)" if n in caller else f"{n} (passed; not set)" for n in prof.env),
            *(f"{n} (set)" for n, _ in prof.env_set))


def _bridge(argv: Sequence[str], forwards: Sequence[tuple[str, int]], host: Host,
            run_dir: str) -> tuple[tuple[str, ...], list[Mount]]:
    """Wrap argv in the egress bridge, which runs inside and listens on the sandbox's loopback."""
    wrapped = [host.python, "-I", "-S", BRIDGE, "--socket", EGRESS_SOCKET,
               "--listen", f"127.0.0.1:{PROXY_PORT}"]
    for name, port in forwards:
        wrapped += ["--forward", f"127.0.0.1:{port}={name}:{port}"]
    mounts = [
        Mount(os.path.join(host.package_dir, "egress", "bridge.py"), BRIDGE),
        Mount(run_dir, RUN_DIR),
    ]
    if not host.python_prefix.startswith(("/usr/", "/bin", "/lib")) and host.python_prefix != "/usr":
        mounts.append(Mount(host.python_prefix, host.python_prefix))
    return tuple(wrapped + ["--", *argv]), mounts


def sandbox_written(root: str, host: Host) -> tuple[str, ...]:
    """Where a sandbox may have written programs: the project, sbox's caches, the active venv."""
    places = [root, host.cache_dir, host.env.get("VIRTUAL_ENV", "")]
    return tuple(os.path.realpath(p) for p in places if p.startswith("/"))


def host_path(path: str, root: str, cwd: str, writable: Sequence[str] = ()) -> str:
    """PATH for an unsandboxed command: no relative entries (they name the working directory) and
    none a sandbox could have filled (the project, a venv's bin, sbox's caches)."""
    keep = [d for d in path.split(os.pathsep)
            if d.startswith("/") and not inside(os.path.realpath(d), os.path.realpath(root))
            and not written_by_sandbox(d, writable)]
    return os.pathsep.join(keep)


