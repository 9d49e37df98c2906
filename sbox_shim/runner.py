"""Execute a Plan step by step: the egress proxy where needed, the backend, the report."""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Mapping, TextIO

    from sbox_shim.plan import Plan, Step

NETWORK_WORDS = {"off": "network off", "proxy": "network: allowlist (proxy)",
                 "dns": "network: allowlist (dns)", "open": "network: on"}


def make_run_dir(env: Mapping[str, str] | None = None) -> str:
    """A private directory for one run: generated /etc files and the egress socket.

    Made by hand rather than with tempfile, whose imports cost milliseconds on every command.
    """
    base = _base((env or os.environ).get("TMPDIR") or "/tmp")
    sweep_stale_run_dirs(base)
    for _ in range(100):
        path = os.path.join(base, f"{RUN_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot create a run directory in {base}")


RUN_PREFIX = "sbox-run-"


def _base(tmpdir: str) -> str:
    """Where run directories go: TMPDIR, unless it lies in a project (as written or resolved),
    where a sandbox writing that project could reach a run's files, its egress socket or its gate
    (a `TMPDIR=$PWD/.tmp` in an .envrc); then /tmp."""
    from sbox_shim.compiled import in_a_project

    if not tmpdir.startswith("/") or in_a_project(os.path.join(tmpdir, "x")):  # TMPDIR itself counts
        return "/tmp"
    return tmpdir


def sweep_stale_run_dirs(base: str) -> None:
    """Remove run directories left by an sbox that was killed (its pid no longer runs)."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(RUN_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(RUN_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            path = os.path.join(base, name)
            if os.path.isdir(path) and not os.path.islink(path) and os.stat(path).st_uid == os.getuid():
                remove_run_dir(path)


def remove_run_dir(path: str) -> None:
    """Remove the run directory (files, the egress socket, subdirectories), ignoring errors. Each
    directory is opened below the one before it, never through a link: one swapped for a link
    while this runs is removed as a link, and nothing it points to is touched."""
    try:
        fd = os.open(path, _BELOW)
    except OSError:
        return
    try:
        _empty(fd, 0)
    finally:
        os.close(fd)
    _ignore_errors(os.rmdir, path)


_BELOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _empty(fd: int, depth: int) -> None:
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir and depth < 64:
            try:
                below = os.open(name, _BELOW, dir_fd=fd)
            except OSError:  # no longer a directory (a link now): removed as what it is
                _ignore_errors(lambda n: os.unlink(n, dir_fd=fd), name)
                continue
            try:
                _empty(below, depth + 1)
            finally:
                os.close(below)
            _ignore_errors(lambda n: os.rmdir(n, dir_fd=fd), name)
        else:
            _ignore_errors(lambda n: os.unlink(n, dir_fd=fd), name)


def _ignore_errors(remove: Callable[[str], None], path: str) -> None:
    try:
        remove(path)
    except OSError:
        pass


def prestart(plan: Plan, backend: ModuleType, run_dir: str, state_dir: str | None) -> Any:
    """The first step's sandbox, started held before the runner's own work for it (then the plan
    cache's facts, the step's hook and the guard's snapshot run while bwrap sets it up); None when
    the step needs something made before bwrap starts (outputs staged or created, a cache
    directory, run directories), or runs otherwise than on its own (the bridge, the lookups of an
    offline phase). `execute` uses it only for the very step it was started for, with every pinned
    source still where it was; else it is killed unrun. `state_dir`: as `_run_step`'s `kept_in`."""
    step = plan.steps[0]
    if (getattr(backend, "NAME", "") != "bwrap" or step.mode != "sandbox" or step.staged or step.create
            or step.optional or step.rebuilt or (step.network.policy == "off" and step.label == "scripts")
            or any(m.kind == "run" or (m.kind == "cache" and not os.path.isdir(m.source)) for m in step.mounts)):
        return None
    egress = step.network.policy == "proxy"
    if egress:
        from sbox_shim.egress import netns

        if not netns.usable():
            return None
    from sbox_shim.errors import SboxError

    try:
        return backend.start(step, run_dir, 0, state_dir, egress=egress)
    except SboxError:
        return None  # the step's own run says why


def execute(plan: Plan, backend: ModuleType | None, run_dir: str, env: Mapping[str, str],
            state_dir: str, err: TextIO = sys.stderr, started: Any = None) -> int:
    """Run the plan's steps; `started`: its first step's sandbox, from `prestart`."""
    from sbox_shim.guard.run import guarded  # here: the warm path starts bwrap before this import

    quiet = env.get("SBOX_QUIET") == "1"
    hooks = None
    scratch: list[str] = []
    first = plan.steps[0] if plan.steps else None
    if any(s.hook for s in plan.steps):
        from sbox_shim.hooks import Hooks

        hooks = Hooks(err)
    try:
        if any(m.kind == "run" for s in plan.steps for m in s.mounts):  # this run's own (pip's wheelhouse)
            from sbox_shim import scratch as run_dirs

            plan, scratch = run_dirs.instantiate(plan, run_dir)
        for index, step in enumerate(plan.steps):
            if hooks is not None:
                chosen, why = hooks.before(step)
                if chosen is None:
                    if started is not None:  # started for this step, which is skipped
                        started.abandon()
                        started = None
                    if not quiet:
                        err.write(f"sbox: step {index + 1}/{len(plan.steps)} [{step.label}] skipped: {why}\n")
                    continue
                step = chosen
            if started is not None and (index != 0 or step != first or not started.still_pinned()):
                started.abandon()  # another step than it was started for, or a source moved since
                started = None
            following = plan.steps[index + 1] if index + 1 < len(plan.steps) else None
            # docker: the next step's container starts while this one runs; one whose command a hook
            # decides when this one has ended (npm's scripts phase) only if it will likely run; bwrap:
            # npm's scripts phase alone, its driver loading npm while this one runs (bwrapahead.py)
            if backend is not None and following is not None and hasattr(backend, "ahead") and (
                    not following.hook or (hooks is not None and hooks.likely(following))):
                backend.ahead(following, run_dir, index + 1,
                              state_dir=state_dir if env.get("SBOX_PLAN_CACHE") != "0" else None)
            if not quiet:
                err.write(announce(step, index, len(plan.steps), backend) + "\n")
                err.flush()
            began = time.time_ns()
            code = guarded(step, plan.project_root, state_dir, err, lambda: _run_step(
                step, backend, run_dir, index, state_dir, err, keep=env.get("SBOX_PLAN_CACHE") != "0",
                started=started))
            started = None  # taken by the backend's run
            if code != 0:
                if len(plan.steps) > 1 and not quiet:
                    err.write(f"sbox: step {index + 1} [{step.label}] exited {code}; stopping\n")
                if (step.network.policy == "off" and step.label == "run" and step.argv
                        and os.path.basename(step.argv[0]) == "npx" and code not in (124, 130)):
                    err.write(f"sbox: npx ran with the network off (profile {step.profile}): it runs what the "
                              f"project has installed, and cannot fetch a package; npm install it first, or "
                              f"give npx a dispatch rule to a profile with network_allow: [registry.npmjs.org]\n")
                if code not in (124, 130):
                    from sbox_shim.layout import pinned

                    held = pinned(step.mounts, plan.project_root, since=began)
                    if held:
                        err.write(f"sbox: {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}: on the way to a "
                                  f"git repository of the project, which no sandbox can move or remove (Device or "
                                  f"resource busy); do that on the host\n")
                if hooks is not None:
                    hooks.failed()
                return code
        if hooks is not None:
            hooks.done()
        return 0
    except BaseException:
        if hooks is not None:
            hooks.failed()
        raise
    finally:
        if started is not None:  # unless the backend took it: its step was skipped, or failed before
            started.abandon()
        if backend is not None and hasattr(backend, "discard"):
            backend.discard()
        if scratch:
            from sbox_shim import scratch as run_dirs

            run_dirs.remove(scratch)
        remove_run_dir(run_dir)


def announce(step: Step, index: int, total: int, backend: ModuleType | None) -> str:
    where = "unsandboxed (mode: host)" if step.mode == "host" else f"sandbox ({backend.NAME if backend else '?'})"
    words = step.command
    if step.hook and len(words) > 8:  # `npm rebuild DIR...`, chosen at run time: its first few
        words = (*words[:6], f"... ({len(words) - 6} more)")
    what = " ".join(words)
    count = f" step {index + 1}/{total} [{step.label}]" if total > 1 else ""
    return f"sbox:{count} {what} -> {where}, profile {step.profile}, {NETWORK_WORDS[step.network.policy]}"


def _run_step(step: Step, backend: ModuleType | None, run_dir: str, index: int, state_dir: str,
              err: TextIO, keep: bool = True, started: Any = None) -> int:
    """Run one step; `keep`: the backend may keep what it learns in the state directory;
    `started`: its sandbox, from `prestart` (none is: it makes nothing first)."""
    kept_in = state_dir if keep else None
    if step.mode == "host":
        # Explicitly unsandboxed: the caller's own environment, but PATH without the shims, so
        # the real tool runs instead of the shim handing the command back to sbox.
        from sbox_shim import process

        env = dict(os.environ, PATH=step.environ["PATH"])
        return process.run_foreground(step.command, env, cwd=step.cwd, timeout=step.limits.timeout)
    assert backend is not None
    step = present(step)
    for mount in step.mounts:
        if mount.kind == "cache":
            os.makedirs(mount.source, mode=0o700, exist_ok=True)
    if step.create or step.staged:
        from sbox_shim import outputs

        outputs.make_dirs(step.project, step.create)
        staged = outputs.stage(step.project, step.staged)
        try:
            return _run_staged(step, backend, run_dir, index, state_dir, err, kept_in)
        finally:
            outputs.unstage(step.project, staged, err)
    return _run_staged(step, backend, run_dir, index, state_dir, err, kept_in, started)


def present(step: Step) -> Step:
    """The step as the project is now (layout.py): without its optional outputs that do not exist
    (not bound, not made, not staged), with its rebuilt top's entries."""
    from sbox_shim.layout import rebuilt_top

    absent = {p for p in step.optional if not os.path.lexists(p)}
    if absent:
        step = step.replace(mounts=tuple(m for m in step.mounts if m.target not in absent),
                            create=tuple(p for p in step.create if p not in absent),
                            staged=tuple(s for s in step.staged if s[1] not in absent))
    mounts = step.mounts
    for top in step.rebuilt if step.mode == "sandbox" else ():
        mounts = rebuilt_top(mounts, step.project, top)
    return step if mounts == step.mounts else step.replace(mounts=mounts)


def _run_staged(step: Step, backend: ModuleType, run_dir: str, index: int, state_dir: str,
                err: TextIO, kept_in: str | None, started: Any = None) -> int:
    held = {"started": started} if started is not None else {}  # bwrap's, started by `prestart`
    if step.network.policy == "off" and step.label == "scripts":
        return _run_offline(step, backend, run_dir, index, state_dir, err, kept_in)
    if step.network.policy != "proxy":
        return int(backend.run(step, run_dir, index, kept_in, **held))
    from sbox_shim.egress import netns
    from sbox_shim.egress.starting import for_step

    # The proxy is imported and started while the sandbox starts (egress/starting.py). On bwrap it
    # listens in the sandbox's own network namespace, made once bwrap has set it up, and the bridge
    # does not run (egress/netns.py; as an ordinary user through a child in bwrap's user namespace,
    # egress/userns.py); otherwise the bridge inside hands each connection to the proxy's unix
    # socket, made first.
    proxy = for_step(step, os.path.join(run_dir, "egress.sock"))
    bwrap = getattr(backend, "NAME", "") == "bwrap"
    in_netns = bwrap and netns.enterable(state_dir)
    if not in_netns:
        proxy.listen_unix(serve=not bwrap)  # bwrap: once the command is let go (`going`)
    try:
        if in_netns:
            code = int(backend.run(step, run_dir, index, kept_in, egress=proxy.ready, meanwhile=proxy.begin, **held))
        elif bwrap:
            code = int(backend.run(step, run_dir, index, kept_in, going=proxy.serve, **held))
        else:
            code = int(backend.run(step, run_dir, index, kept_in, **held))
    finally:
        denials, problem = proxy.stop()
    if in_netns and proxy.refusal and not netns.usable():  # an ordinary user's child could not enter
        netns.refused_here(state_dir, proxy.refusal)
        err.write("sbox: allowlisted steps run with the bridge inside the sandbox on this machine from now on\n")
        return _run_staged(step, backend, run_dir, index, state_dir, err, kept_in)
    if problem:
        err.write(problem + "\n")
        code = code or 125
    if denials:
        from sbox_shim.report import denial_summary

        log = write_denials(state_dir, step, denials)
        for line in denial_summary(denials, log):
            err.write(line + "\n")
    return code


def _run_offline(step: Step, backend: ModuleType, run_dir: str, index: int, state_dir: str,
                 err: TextIO, kept_in: str | None) -> int:
    """A built-in offline phase: when sbox can (egress/lookups.py says where), it hears the names
    the phase looks up and, if the phase fails, says which it tried to reach (printable ASCII
    only: the parser keeps nothing else)."""
    from sbox_shim.egress import netns

    name = getattr(backend, "NAME", "")
    if name != "bwrap" and (name != "docker" or not netns.usable()):  # docker's root daemon: root only
        code = int(backend.run(step, run_dir, index, kept_in))
        if code not in QUIET_EXITS:  # its lookups unheard: it may have wanted the network
            err.write(offline_remedy(step) + "\n")
        return code
    from sbox_shim.egress.lookups import Lookups

    lookups = Lookups()
    try:
        code = int(backend.run(step, run_dir, index, kept_in, egress=lookups.listen))
    finally:
        heard, names = lookups.heard, lookups.stop()
    if code in QUIET_EXITS:
        return code
    if names:
        log = write_record(state_dir, step, "lookups", {"looked_up": names})
        err.write(f"sbox: the {step.label} phase tried to reach {', '.join(names)} "
                  f"(looked up with the network off, refused){f'; record: {log}' if log else ''}\n")
        err.write(offline_remedy(step) + "\n")
    elif heard:  # no plain remedy that turns the network on for a failure that did not need it
        err.write(f"sbox: the {step.label} phase looked up no host name before it failed: the network being off "
                  f"there is likely not why (a connection to an address by number is not heard; a profile "
                  f"{step.profile} with network: on and network_allow admits one)\n")
    else:
        err.write(offline_remedy(step) + "\n")
    return code


QUIET_EXITS = (0, 124, 130)  # success, sbox's timeout, ^C: nothing to explain


def offline_remedy(step: Step) -> str:
    """The line that says scripts run offline, and how a profile lets one have what it needs."""
    skip = "PUPPETEER_SKIP_DOWNLOAD" if step.profile.startswith("npm") else "NAME"
    return (f"sbox: install scripts and builds run with the network off: one that downloads (a prebuilt binary, "
            f"headers) fails here; in sbox.yaml, a profile {step.profile} with env: [{skip}] (the package's skip "
            f"variable) passes it in, or network: on with network_allow: [host] admits what it needs")


def write_denials(state_dir: str, step: Step, denials: list[dict[str, Any]]) -> str | None:
    """Keep a JSON record of every refused attempt; return its path (None if it cannot be written)."""
    return write_record(state_dir, step, "", {"denials": denials})


def write_record(state_dir: str, step: Step, kind: str, data: dict[str, Any]) -> str | None:
    """A JSON record of a step's denials (or, `kind` quarantine, what the guard moved) under
    `<state>/denials/`; its path, or None if it cannot be written."""
    directory = os.path.join(state_dir, "denials")
    suffix = f"-{kind}" if kind else ""
    path = os.path.join(directory, f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{step.label}{suffix}.json")
    import json

    record = {"command": list(step.command), "profile": step.profile, "cwd": step.cwd, **data}
    try:
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        return path
    except OSError:
        return None
