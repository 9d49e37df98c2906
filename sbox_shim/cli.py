"""The `sbox` command: one parser, each subcommand a plain function returning an exit code."""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from sbox_shim import __version__
from sbox_shim.errors import CommandNotFound, SboxError, UsageError

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping, Sequence
    import argparse

BACKENDS = ("auto", "docker", "bwrap")
PLAN_OPTIONS = ("--profile", "--backend", "--config")
RESTORE_HELP = (
    "Move a quarantine's entries back where they were (paths relative to the project root). With PATHs, only "
    "those entries; an entry inside a quarantined directory comes back only with it (name the directory). "
    "Without PATH, everything, unless an entry is or holds a .git, .envrc or HEAD, a setuid file, a socket or "
    "a FIFO (or a tree too deep to look into): then nothing is restored and sbox names those entries, which "
    "come back only when named as PATHs. An existing file is never overwritten without --force. Nothing is "
    "restored through a link, nor a file whose sha256 differs from the manifest's.")


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="sbox", description="Run package-manager commands in a sandbox.")
    parser.add_argument("--version", action="version", version=f"sbox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_plan_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", help="use this profile instead of dispatch")
        p.add_argument("--backend", choices=BACKENDS, help="override the config's backend")
        p.add_argument("--config", help="use this config file instead of searching upward")
        p.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    with_plan_options(sub.add_parser("run", help="run a command in the sandbox"))
    plan = sub.add_parser("plan", help="show what would run, where, with which network, and why")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    with_plan_options(plan)
    shims = sub.add_parser("shims", help="manage the npm/pip/cargo/go shims")
    shims.add_argument("action", choices=("install", "uninstall", "list", "verify"))
    shims.add_argument("--dir", help="shims directory (default: sbox's user data dir)")
    activate = sub.add_parser("activate", help="print shell code that puts the shims first on PATH")
    activate.add_argument("shell", choices=("bash", "zsh", "fish", "sh"))
    activate.add_argument("--dir", help="shims directory")
    trust = sub.add_parser("trust", help="trust the current content of a project's config files")
    trust.add_argument("--list", action="store_true", help="list what is trusted")
    trust.add_argument("paths", nargs="*", metavar="PATH", help="files, or project directories (default: here)")
    untrust = sub.add_parser("untrust", help="forget the trust of files or of a project's inputs")
    untrust.add_argument("paths", nargs="*", metavar="PATH")
    sub.add_parser("init", help="write a starter sbox.yaml for this project")
    doctor = sub.add_parser("doctor", help="check backends, shims and config")
    doctor.add_argument("--dir", help="shims directory")
    quarantine = sub.add_parser("quarantine", help="list or restore what the persistence guard moved away")
    actions = quarantine.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each quarantine and its entries: kind, created/changed, why",
                       description="Each quarantine and each of its entries (paths relative to the project root): "
                       "created or changed, kind, why it was moved; '!!' marks one restored only when named.")
    restoring = actions.add_parser("restore", help="move a quarantine's entries back", description=RESTORE_HELP)
    restoring.add_argument("id", metavar="ID", help="the quarantine to restore (see sbox quarantine list)")
    restoring.add_argument("paths", nargs="*", default=[], metavar="PATH",
                         help="restore only these entries, as sbox quarantine list prints them")
    restoring.add_argument("--force", action="store_true",
                         help="restore over existing files, moving each into the quarantine's displaced/ first")
    return parser


def _quick(raw: Sequence[str]) -> SimpleNamespace | None:
    """`run` and `plan` read without argparse (importing and building it costs milliseconds on
    every command); None for anything else or anything unusual, which argparse then reads, so
    help and errors are argparse's own."""
    if not raw or raw[0] not in ("run", "plan"):
        return None
    args = SimpleNamespace(command=raw[0], json=False, profile=None, backend=None, config=None, argv=[])
    i = 1
    while i < len(raw):
        word = raw[i]
        name, eq, value = word.partition("=")
        if word == "--json" and raw[0] == "plan":
            args.json = True
        elif name in PLAN_OPTIONS and (eq or i + 1 < len(raw)):
            if not eq:
                i, value = i + 1, raw[i + 1]
            if name == "--backend" and value not in BACKENDS:
                return None
            setattr(args, name[2:], value)
        elif word == "--" or not word.startswith("-"):
            args.argv = list(raw[i:])
            return args
        else:
            return None
        i += 1
    return args


def _command(argv: list[str]) -> list[str]:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("no command given; usage: sbox run -- COMMAND [ARGS...]")
    return argv


def _load(args: argparse.Namespace | SimpleNamespace, env: Mapping[str, str], argv: Sequence[str]):  # type: ignore[no-untyped-def]
    """The config and host facts, through the trust gate: every opt-in file up the tree is trusted
    before it is parsed, the tool configuration before the plan reads it."""
    from sbox_shim import config
    from sbox_shim.trust import gate
    from sbox_shim.host import Host

    host = Host.current(env)
    gate.before_config(host, args.config)
    cfg = config.load(host.cwd, env, args.config)
    gate.before_plan(argv, cfg, host)
    return cfg, host


def cmd_plan(args: argparse.Namespace | SimpleNamespace, env: Mapping[str, str]) -> int:
    from sbox_shim import report
    from sbox_shim.trust import gate
    from sbox_shim.build import build_plan

    argv = _command(args.argv)
    cfg, host = _load(args, env, argv)
    plan = build_plan(argv, cfg, host, profile=args.profile, backend=args.backend)
    gate.after_plan(plan, host)
    backend = _describe_backend(plan.backend, host.cache_dir, env)
    cache = _describe_cache(plan, host, env)
    trusted = _describe_trust(args, argv, plan, host)
    text = report.plan_json(plan, backend, cache, trusted) if args.json else report.plan_text(plan, backend, cache, trusted)
    print(text)
    return 0


def _describe_trust(args, argv: Sequence[str], plan, host) -> list[str]:  # type: ignore[no-untyped-def]
    """The trust status of every input the plan was made from (all trusted, or it would not exist)."""
    from sbox_shim import trust
    from sbox_shim.trust import gate
    from sbox_shim.config import Config

    cfg = Config(plan.config_path, plan.project_root)
    items = gate.opt_in(host.cwd, args.config) + gate.tools(argv, cfg, host) + gate.host_scripts(plan, host.cwd, host)
    return trust.describe(trust.check(items, host.state_dir))


def _describe_cache(plan, host, env: Mapping[str, str]) -> str:  # type: ignore[no-untyped-def]
    """Would `sbox run` store this plan for the warm path, and if not, why not."""
    from sbox_shim import recorder
    from sbox_shim.backends.select import pick

    try:
        module = pick(plan.backend, host.cache_dir, env) if any(s.mode == "sandbox" for s in plan.steps) else None
    except SboxError:
        module = None
    why = recorder.cacheable(plan, module, host)
    if host.env.get("SBOX_PLAN_CACHE") == "0":
        why = "off (SBOX_PLAN_CACHE=0)"
    return "yes: repeating this command skips planning" if why is None else f"no: {why}"


def _describe_backend(name: str, cache_dir: str, env: Mapping[str, str]) -> str:
    from sbox_shim.backends.select import pick

    try:
        return str(pick(name, cache_dir, env).NAME) + (" (auto)" if name == "auto" else "")
    except SboxError as exc:
        return f"{name} (not usable: {exc.args[0]})"


def cmd_run(args: argparse.Namespace | SimpleNamespace, env: Mapping[str, str], raw: Sequence[str] = ()) -> int:
    """`raw` is sbox's own argv as typed: the plan cache's key."""
    if args.backend == "docker":  # the Docker SDK loads in a helper while sbox plans
        _docker_early(env)
    from sbox_shim import recorder, runner
    from sbox_shim.backends.select import pick
    from sbox_shim.build import build_plan

    from sbox_shim.trust import gate

    from sbox_shim import probe

    argv = _command(args.argv)
    with probe.watching(os.getcwd()) as probes:  # what planning looks at: the plan cache's facts
        cfg, host = _load(args, env, argv)
        if args.backend is None and cfg.backend == "docker":
            _docker_early(env)
        run_dir = runner.make_run_dir(env)
        try:
            plan = build_plan(argv, cfg, host, profile=args.profile, backend=args.backend, run_dir=run_dir)
            gate.after_plan(plan, host)
            _check_tool(plan, host)
            sandboxed = any(s.mode == "sandbox" for s in plan.steps)
            backend = pick(plan.backend, host.cache_dir, env) if sandboxed else None
        except BaseException:
            runner.remove_run_dir(run_dir)
            raise
    try:
        if backend is not None and raw:
            recorder.store(raw, plan, backend, host, args.config, runner.announce(plan.steps[0], 0, 1, backend),
                           probes.facts(), run_dir)
    except BaseException:
        runner.remove_run_dir(run_dir)
        raise
    return runner.execute(plan, backend, run_dir, env, host.state_dir)


def _docker_early(env: Mapping[str, str]) -> None:
    from sbox_shim.backends import docker

    docker.start_early(dict(env))


def _check_tool(plan, host) -> None:  # type: ignore[no-untyped-def]
    """A command that does not exist fails as a shell would (127), before any sandbox starts."""
    from sbox_shim.toolpath import find_real, without_shims

    path = without_shims(host.env.get("PATH", os.defpath), host.shim_dirs)
    for name in dict.fromkeys(step.command[0] for step in plan.steps):  # each tool once
        if find_real(name, path, host.shim_dirs) is None:
            raise CommandNotFound(f"{name}: command not found (PATH outside the sbox shims)")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _quick(raw) or _parser().parse_args(raw)
    try:
        if args.command == "run":
            return cmd_run(args, env, raw)
        if args.command == "plan":
            return cmd_plan(args, env)
        if args.command == "shims":
            from sbox_shim import shims

            return shims.cmd_shims(args.action, args.dir, env)
        if args.command == "activate":
            from sbox_shim import activate

            return activate.cmd_activate(args.shell, args.dir, env)
        if args.command in ("trust", "untrust"):
            from sbox_shim.trust import cmd as trustcmd

            if args.command == "untrust":
                return trustcmd.cmd_untrust(args.paths, env)
            return trustcmd.cmd_trust(args.paths, args.list, env)
        if args.command == "init":
            from sbox_shim import init

            return init.cmd_init(os.getcwd(), env)
        if args.command == "doctor":
            from sbox_shim import doctor

            return doctor.cmd_doctor(args.dir, env)
        if args.command == "quarantine":
            from sbox_shim import paths
            from sbox_shim.guard import restore

            if args.action == "list":
                return restore.cmd_list(paths.sbox_dir("state", env))
            return restore.cmd_restore(paths.sbox_dir("state", env), args.id, args.force, args.paths)
        _parser().print_help()
        return 2
    except (SboxError, OSError) as exc:
        from sbox_shim.errors import reported

        return reported(exc)
    except KeyboardInterrupt:
        return 130
