"""Writing plan-cache records: the cold path's side of compiled.py.

After the cold path has built a plan, `store` checks that the warm path could run it exactly as
the cold path would (`cacheable`) and writes the finished bwrap options, the facts to check again
and the files to copy in. Environment values become references to the caller's variables.
"""
from __future__ import annotations

import os
from types import ModuleType

from sbox_shim import kept
from sbox_shim.compiled import FORMAT, PACKAGE, REF, directory, fact, key, record_path
from sbox_shim.host import Host
from sbox_shim.lean import inside
from sbox_shim.plan import DEFAULT_PIDS, Plan, Step

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence


def store(argv: Sequence[str], plan: Plan, backend: ModuleType, host: Host, explicit_config: str | None,
          announce: str, probed: Sequence[tuple[str, str]] | None = None, run_dir: str = "") -> str | None:
    """Record a plan the warm path can run; return the record's path, or None (and why not is
    `cacheable`'s answer). Failing to write is not an error: the next run is just cold again.
    A plan compiled.py cannot run alone is kept whole (replay.py) when `probed` says what its
    planning looked at (probe.py)."""
    if host.env.get("SBOX_PLAN_CACHE") == "0" or cacheable(plan, backend, host) is not None:
        return None
    if backend.NAME == "docker" or not alone(plan, host):
        if probed is None or not run_dir:
            return None
        from sbox_shim.recorder_plan import store_plan

        return store_plan(argv, plan, host, explicit_config, probed, run_dir, backend.NAME)
    from sbox_shim.backends import bwrap, seccomp
    from sbox_shim.backends.bwrapargs import bwrap_options
    from sbox_shim.errors import SandboxError

    step = plan.steps[0]
    if step.network.policy == "proxy":  # run without the bridge (cacheable: netns.enterable())
        step = bwrap.unbridged(step)
        plan = plan.replace(steps=(step,))
    path = bwrap.bwrap_path()
    if path is None:
        return None
    target = prepared(host, argv, (step,))
    if target is None:
        return None
    try:
        bpf = seccomp.kept_filter(host.state_dir)
    except SandboxError:
        return None
    env = [(name, REF + "env" + REF + name if host.env.get(name) == value else value) for name, value in step.env]
    files, redacted = _redacted_now(bwrap.data_files(step), step.project)
    data = [(target, REF + "fd" + REF + str(i)) for i, (target, _, _) in enumerate(files)]
    filter_ref = REF + "fd" + REF + str(len(files))  # the filter's memfd comes after the files' (compiled.fds)
    # then the pinned binds' fds, reopened on each use (compiled.record_fds)
    pinned = {target: REF + "fd" + REF + str(len(files) + 1 + i) for i, (_, target) in enumerate(step.pinned())}
    record = {
        "format": FORMAT,
        "facts": [(kind, p, fact(kind, p, host.state_dir))
                  for kind, p in dict.fromkeys(_watched(plan, host, explicit_config, path) + redacted)],
        "bwrap": path,
        "options": bwrap_options(step, data, "--disable-userns" in bwrap.options_of(path, host.state_dir), env=env,
                                 seccomp=filter_ref, masked=bwrap.masked_proc(), pinned=pinned),
        "argv": list(step.argv),
        "files": files,
        "seccomp": bpf,
        "pins": [step.project, [source for source, _ in step.pinned()], [target for _, target in step.pinned()]],
        "host_dns": step.network.policy == "open",
        "makedirs": [m.source for m in step.mounts if m.kind == "cache"],
        "announce": "" if host.env.get("SBOX_QUIET") == "1" else announce,
        "guard": _guard(plan, host),
        "egress": _egress(step, host),
        "nproc": bwrap.nproc(step.limits.pids),  # the default brake: RLIMIT_NPROC, not for root
    }
    try:
        kept.write_private(target, record)
    except (OSError, ValueError):
        return None
    return target


def _guard(plan: Plan, host: Host) -> dict[str, object] | None:
    """What the warm path needs to run the persistence guard around a step that can write the
    project (guard/run.py: guarded_warm); None when it cannot."""
    from sbox_shim.guard import writable_parts

    step = plan.steps[0]
    if not writable_parts(step.mounts, plan.project_root):
        return None
    # the binds, and the tmpfs mounts: skeleton.py's over a git directory puts it out of the step's
    # reach (guard.readonly_targets); without them, the host's `git commit` while a warm step ran
    # made the project's `.git` one the step had changed, and it was moved whole (red team 18)
    mounts = [(m.source, m.target, m.readonly, m.kind) for m in step.mounts if m.kind in ("bind", "cache", "tmpfs")]
    return {"root": plan.project_root, "state": host.state_dir, "mounts": mounts, "label": step.label,
            "command": list(step.command), "profile": step.profile, "cwd": step.cwd}


def cacheable(plan: Plan, backend: ModuleType | None, host: Host) -> str | None:
    """None if the warm path can run this plan exactly as the cold path would; else why not."""
    from sbox_shim.environment import is_secret

    if any(step.mode != "sandbox" for step in plan.steps) or backend is None or backend.NAME not in ("bwrap", "docker"):
        return "the warm path runs sandboxes only"
    if backend.NAME == "docker" and plan.backend != "docker":
        return "docker is kept only when named (backend: docker): `auto` chooses anew on each run"
    if any(is_secret(name) and host.env.get(name) != value for step in plan.steps for name, value in step.env):
        return "a credential-like value sbox computed would be written to disk"
    plans = os.path.realpath(directory(host.env))
    if any(not m.readonly and m.kind in ("bind", "cache") and inside(plans, os.path.realpath(m.source))
           for step in plan.steps for m in step.mounts):
        return "the plan cache would be writable inside the sandbox"
    return None


def alone(plan: Plan, host: Host) -> bool:
    """Can compiled.py run this plan from finished bwrap options, without the runner? One step as
    given, no allowlist (but one that egress/warm.py runs: `_egress_cacheable`), no limits sbox
    must watch or a cgroup holds (the default `pids` is an RLIMIT_NPROC, set on bwrap's start), no
    staged outputs. Else replay.py runs it."""
    from sbox_shim.build import AS_IS

    if len(plan.steps) != 1 or plan.steps[0].label != AS_IS:
        return False
    step = plan.steps[0]
    network = step.network.policy in ("off", "open") or (step.network.policy == "proxy"
                                                          and _egress_cacheable(step, host.state_dir) is None)
    limits = step.limits
    return (network and not step.staged and not step.image
            and not (limits.timeout or limits.memory or (limits.pids is not None and limits.pids != DEFAULT_PIDS)))


def _egress_cacheable(step: Step, state_dir: str | None = None) -> str | None:
    """None if compiled.py may run this allowlisted step alone (egress/warm.py): sbox listens in
    the sandbox's network namespace (no bridge to start), and every allowed name is pinned to
    loopback, as `hosts:` in a watched config file or /etc/hosts (watched too) pins it. Any other
    allowlisted step is replayed through the runner (replay.py)."""
    from sbox_shim.egress import netns

    net = step.network
    if not netns.enterable(state_dir):
        return "an allowlisted step runs the egress bridge inside"
    if net.unresolved or not net.pins or not all(
            address.startswith("127.") or address == "::1" for _, addresses in net.pins for address in addresses):
        return "an allowlist that names more than loopback registries"
    return None


def _egress(step: Step, host: Host) -> dict[str, object] | None:
    if step.network.policy != "proxy":
        return None
    from sbox_shim.egress import warm

    return warm.record(step, host.state_dir)


def _redacted_now(files: list[tuple[str, str, str]], project: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The record's files with each config shown without its credentials (redact.py) redacted now
    and kept as content, so that the warm path neither reads nor redacts it before bwrap starts;
    and the facts that vouch for it (what the file holds, and that it is still no link), checked
    while bwrap works."""
    from sbox_shim import redact
    from sbox_shim.backends.bwrapio import REDACTED

    out, facts = [], []
    for target, content, source in files:
        if content == REDACTED:
            out.append((target, redact.read(source, project).decode("utf-8", "surrogateescape"), ""))
            facts += [("type", source), ("content", source)]
        else:
            out.append((target, content, source))
    return out, facts


def _watched(plan: Plan, host: Host, explicit_config: str | None, bwrap_path: str,
             step_index: int = 0) -> list[tuple[str, str]]:
    """The paths whose state built this plan's step, with what to compare (see `fact`)."""
    from sbox_shim import config, configs, layout, trust
    from sbox_shim.backends.bwrapargs import MASKED_PROC
    from sbox_shim.toolpath import searched, without_shims

    step = plan.steps[step_index]
    path_var = without_shims(host.env.get("PATH", os.defpath), host.shim_dirs)
    watched = [("code", PACKAGE)] + ([("stat", bwrap_path)] if bwrap_path else [])  # "": docker
    if step.network.policy == "proxy":
        from sbox_shim.egress import netns

        watched.append(("stat", "/etc/hosts"))  # names pinned to loopback may come from there
        # an ordinary user's child found it cannot enter bwrap's user namespace: the bridge from then on
        watched.append(("exists", os.path.join(host.state_dir, "egress", netns.REFUSED)))
    watched += [("stat", p) for p in config.consulted(host.cwd, host.env, explicit_config)]
    watched.append(("stat", trust.directory(host.state_dir)))  # a trust recorded or withdrawn
    watched += [("type", p) for p in layout.TOOLCHAIN + layout.ETC] + [("link", p) for p in layout.TOOLCHAIN]
    # /etc links recreated as links (a file that becomes a link changes its type)
    watched += [("link", p) for p in layout.ETC if os.path.islink(p)]
    watched += configs.config_facts(step.mounts, plan.project_root)
    watched += configs.git_config_facts(plan.project_root, step.mounts)
    watched += [("exists", p) for p in MASKED_PROC]
    watched += [("exists", p) for p in layout.protected_paths(plan.project_root, plan.config_path)]
    watched += [("exists", p) for p in host.own_dirs]
    watched += _layout_facts(plan.project_root, step.writable, step.mode)
    for p in searched(step.argv[0], path_var, host.shim_dirs):
        watched += [("stat", p), ("lstat", p)]
    return list(dict.fromkeys(watched))


def _layout_facts(root: str, writable: bool | tuple[str, ...], mode: str = "sandbox") -> list[tuple[str, str]]:
    """What tree.inspect looked at: each output's kind (and of every directory on its way), the
    .git entries of the writable parts, git's hooks path, the sockets near the top."""
    from sbox_shim import tree

    facts = [("sockets", root)]
    facts += [("gits", d) for d in tree.writable_dirs(root, tree.walked(writable, mode))]
    if writable:
        facts += [("stat", os.path.join(root, ".git", "config")), ("type", os.path.join(root, ".git"))]
        hooks = tree.configured_hooks(root)
        if hooks:
            facts += _components(root, os.path.relpath(hooks, root))
    if isinstance(writable, tuple):
        for relative in writable:
            facts += _components(root, relative)
    return facts


def _components(root: str, relative: str) -> list[tuple[str, str]]:
    here, out = root, []
    for part in [p for p in relative.split("/") if p]:
        here = os.path.join(here, part)
        out.append(("type", here))
    return out


def prepared(host: Host, argv: Sequence[str], steps: Sequence[Step]) -> str | None:
    """The record's path, once what the run creates anyway exists (its caches, its outputs):
    created before the facts are taken, else they would go stale at once."""
    from sbox_shim import outputs
    from sbox_shim.errors import SboxError

    target = record_path(host.env, key(argv, host.env, host.cwd))
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        for step in steps:
            for m in step.mounts:
                if m.kind == "cache":
                    os.makedirs(m.source, mode=0o700, exist_ok=True)
            outputs.make_dirs(step.project, [p for p in step.create if p not in step.optional])
    except (OSError, SboxError):
        return None
    return target
