"""npm, pnpm, yarn: install in two phases — download with scripts disabled, then rebuild offline.

The registry the user configured (.npmrc files, npm_config_*registry, --registry) joins the
allowlist; its credentials (the user's and global npmrc, *_TOKEN variables) reach the download
phase only, and the project's .npmrc reads as empty in the scripts phase. `npm rebuild` runs the
dependencies' install scripts and the project's preinstall/install/postinstall; a bare
`npm install`/`npm ci` also runs the project's `prepare`, so that becomes a third, offline step
when package.json has one. For npm itself, what the scripts phase rebuilds is decided at run time,
after the download (npm_run.py): the packages the install added or changed, as npm would, or no
phase at all; and a failed install is rolled back. A `file:` dependency outside the project root
stops the command before it runs (npm_local.py).

What each phase may write of the project (layout.py): the download, `node_modules/`, package.json
and the lockfiles (those that exist, and the one the tool would create); the install scripts of the
dependencies (`rebuild`), `node_modules/` only; the project's own `prepare`, the whole project
but for the protected paths, as the project's own code run by `npm run` would be.
"""
from __future__ import annotations

import os
import re

from sbox_shim.ecosystems import Context, Phase, cache_mount, project_cache, read_text, sandbox_writable, subcommand
from sbox_shim.ecosystems import url_entry
from sbox_shim.ecosystems import yarn
from sbox_shim.environment import is_secret
from sbox_shim.configs import SYSTEM as SYSTEM_CONFIGS
from sbox_shim.layout import in_toolchain
from sbox_shim.plan import File, Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable

TOOLS = ("npm", "npx", "pnpm", "yarn")
INSTALL = {"install", "i", "in", "ins", "inst", "insta", "instal", "isnt", "isnta", "isntal", "isntall",
           "ci", "clean-install", "add", "update", "up", "upgrade", "udpate"}
REBUILD = {"rebuild", "rb"}
SECRETS = ("NPM_TOKEN", "NODE_AUTH_TOKEN", "npm_config__authToken", "npm_config__auth", "YARN_NPM_AUTH_TOKEN")
# Settings that name a program npm runs: in a phase with the network and the registry token they
# are sbox's, whatever a config file says (the environment outranks every .npmrc).
EXECUTABLES = {"npm_config_git": "git", "npm_config_script_shell": "/bin/sh", "npm_config_shell": "/bin/sh",
               "npm_config_node_options": ""}
# Project files npm, pnpm and yarn read that decide what runs or where it connects.
PROJECT_FILES = (".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", ".pnpmfile.mjs", "pnpm-workspace.yaml")
_REGISTRY_LINE = re.compile(r"^\s*(?:@[\w.-]+:)?registry\s*=\s*(\S+)", re.M)
_CAFILE_LINE = re.compile(r"^\s*cafile\s*=\s*(\S+)", re.M)


def config_files(ctx: Context) -> list[str]:
    """npm's config files, lowest priority first: global, user, project."""
    env = ctx.env
    files = ["/etc/npmrc", "/usr/etc/npmrc", "/usr/local/etc/npmrc"]
    if env.get("npm_config_globalconfig"):
        files.append(env["npm_config_globalconfig"])
    files.append(env.get("npm_config_userconfig") or os.path.join(ctx.home, ".npmrc"))
    files.append(os.path.join(ctx.project_root, ".npmrc"))
    here = ctx.cwd  # npm's project config is the .npmrc of its local prefix, which may be below the root
    while here != ctx.project_root and here.startswith(ctx.project_root.rstrip("/") + "/"):
        files.append(os.path.join(here, ".npmrc"))
        here = os.path.dirname(here)
    return [f for f in dict.fromkeys(files) if os.path.isfile(f)]


def registries(ctx: Context, texts: Iterable[str], argv: tuple[str, ...] | None = ()) -> tuple[str, ...]:
    """Every registry npm may use: config files, npm_config_*registry variables and the command
    line (with `argv` None: the config files alone)."""
    urls = [m for text in texts for m in _REGISTRY_LINE.findall(text)]
    if argv is None:
        return tuple(dict.fromkeys(e for e in map(url_entry, urls) if e))
    urls += [v for k, v in ctx.env.items() if k.lower() == "npm_config_registry" or k.lower().endswith(":registry")]
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == "--registry" or (name.startswith("--@") and name.endswith(":registry")):
            urls.append(value if eq else argv[i + 1] if i + 1 < len(argv) else "")
    return tuple(dict.fromkeys(e for e in map(url_entry, urls) if e))


def passthrough(ctx: Context, download: bool) -> tuple[str, ...]:
    """The caller's npm_config_* variables (npm reads them case-insensitively). The download phase
    gets them all and the tokens; the scripts phase neither credentials nor config-file paths."""
    names = [k for k in ctx.env if k.lower().startswith("npm_config_")]
    if download:
        return tuple(dict.fromkeys([*sorted(names), *SECRETS]))
    drop = {"npm_config_userconfig", "npm_config_globalconfig"}
    return tuple(sorted(k for k in names if k.lower() not in drop and not is_secret(k)))


def inputs(argv: tuple[str, ...], ctx: Context) -> list[tuple[str, str, str]]:
    """The configuration a sandbox could have written that an install would read: .npmrc files in
    the project (or sbox's caches), yarn's and pnpm's project files."""
    tool = os.path.basename(argv[0])
    sub = _subcommand(argv) or ("install" if tool == "yarn" else "")
    if tool == "npx" or (sub not in INSTALL and sub not in REBUILD):
        return []
    npmrcs = [f for f in config_files(ctx) if sandbox_writable(f, ctx)]
    out = [(f, "npm config", "all") for f in npmrcs]
    programs = {p: "a pnpmfile (pnpm runs it, registry token and all)" for rc in npmrcs for p in pnpmfiles(rc)}
    here = ctx.cwd
    while True:
        found = [p for n in PROJECT_FILES + yarn.rc_names(ctx.env) for p in [os.path.join(here, n)]
                 if os.path.lexists(p)]
        out += [(p, f"{'pnpm' if 'pnpm' in os.path.basename(p) else 'yarn'} project config", "all") for p in found]
        for rc in found:
            yarnrc = ".yarnrc" in rc or os.path.basename(rc) in yarn.rc_names(ctx.env)
            kind = "yarn release or plugin" if yarnrc else "a pnpmfile"
            for p in (yarn_programs(rc) if yarnrc else pnpmfiles(rc)):
                programs.setdefault(p, f"{kind} ({rc.rsplit('/', 1)[-1]} names it: it runs, registry token and all)")
        if here == ctx.project_root or os.path.dirname(here) == here:
            return out + [(p, kind, "program") for p, kind in programs.items()
                          if sandbox_writable(p, ctx) and os.path.lexists(p)]
        here = os.path.dirname(here)


_PNPMFILE = re.compile(r"""^\s*["']?(?:global-?)?pnpmfile["']?\s*[=:]\s*["']?([^"'\s#]+)""", re.M | re.I)


def pnpmfiles(config: str) -> list[str]:
    """The pnpmfiles a project's `.npmrc` (`pnpmfile=`, `global-pnpmfile=`) or `pnpm-workspace.yaml`
    (`pnpmfile:`, `globalPnpmfile:`) names, which pnpm loads in its download phase (red team 32: a
    step pointed the workspace file at its own hooks). Relative to the config's directory."""
    if not config.endswith((".npmrc", "pnpm-workspace.yaml")):
        return []
    base = os.path.dirname(config)
    return [os.path.normpath(os.path.join(base, n)) for n in _PNPMFILE.findall(read_text(config))]


_YARN_PATH = re.compile(r"""^\s*["']?yarn-path["']?\s+["']?([^"'\s]+)""", re.M)  # classic .yarnrc
# any path to a script in a .yarnrc.yml, whatever YAML form holds it (a comment after it, a quoted
# key, a flow mapping, a tag, `${PWD}/`: red team 32): more than yarn runs is asked, never less
_YML_PROGRAM = re.compile(r"""([^\s"'{}\[\],#!|>]+\.[cm]?js)(?![\w.])""")


def yarn_programs(rc: str) -> list[str]:
    """The files a yarn config makes yarn run (red team 30: a step rewrote `.yarn/releases/yarn-*.cjs`,
    which the trusted .yarnrc names, and the next install's download phase ran it): a classic
    `.yarnrc`'s `yarn-path`; a `.yarnrc.yml`'s `yarnPath` and plugin paths (any `.js`, `.cjs` or
    `.mjs` it names as a value or a list item). Relative to the config's directory."""
    text = read_text(rc).replace("${PWD}/", "").replace("$PWD/", "")  # yarn runs in the project
    names = _YARN_PATH.findall(text) if os.path.basename(rc) == ".yarnrc" else _YML_PROGRAM.findall(text)
    base = os.path.dirname(rc)
    named = [os.path.normpath(os.path.join(base, n)) for n in names]
    # and every file of yarn's own program directories: a `yarnPath: scripts/run-yarn.js` wrapper
    # requires `.yarn/releases/yarn-*.cjs`, which a step rewrote (red team 31)
    kept = [os.path.join(d, f) for sub in YARN_PROGRAM_DIRS if _real_dir(base, sub)
            for d, _, files in os.walk(os.path.join(base, sub)) for f in sorted(files)] if names else []
    return list(dict.fromkeys(named + kept[:MAX_YARN_PROGRAMS]))


YARN_PROGRAM_DIRS = (".yarn/releases", ".yarn/plugins")


def _real_dir(base: str, rel: str) -> bool:
    """Is `rel` below `base` a directory reached without a link (sbox follows none a project holds)?"""
    from sbox_shim.lean import open_along

    try:
        os.close(open_along(base, rel))
    except OSError:
        return False
    return True


MAX_YARN_PROGRAMS = 200


def _held(argv: tuple[str, ...], ctx: Context) -> tuple[File, ...]:
    """The project's files the tool reads that decide what it runs or where it connects (its
    configs, yarn's releases and plugins: `inputs`), put in as the trust gate read them: a sandbox
    racing this one that swaps one after the check changes nothing this phase reads (red team 31:
    4 of 12 yarn installs ran a release swapped between the check and yarn's start)."""
    from sbox_shim import trust

    held = [(path, trust.checked(path)) for path, _, _ in inputs(argv, ctx)]
    return tuple(File(path, data.decode("utf-8", "surrogateescape")) for path, data in held if data is not None)


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    tool = os.path.basename(argv[0])
    sub = _subcommand(argv) or ("install" if tool == "yarn" else "")
    berry = False
    if tool == "yarn":  # yarn 2+: its `--cwd`, and what installs besides (yarn.py)
        ctx = ctx.replace(cwd=yarn.cwd_of(argv, ctx))
        berry = yarn.is_berry(ctx, _package_dir(ctx))
        if berry:
            sub = yarn.installing(argv, sub)
    if tool == "npx" or (sub not in INSTALL and sub not in REBUILD):
        return None
    if sub in INSTALL:
        from sbox_shim.ecosystems import npm_local

        npm_local.check(_package_dir(ctx), ctx.project_root, _package_args(argv, sub))
    files = config_files(ctx)
    texts = [read_text(f) for f in files]
    users = [t for f, t in zip(files, texts) if not sandbox_writable(f, ctx)]
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["npm"] + registries(ctx, users, argv)))
    # Names from the project's own .npmrc are admitted, but never as explicit entries: the proxy
    # refuses them loopback, private and metadata addresses.
    ours = [t for f, t in zip(files, texts) if sandbox_writable(f, ctx)]
    implied = tuple(e for e in registries(ctx, ours, None) if e not in allow)
    cache = os.path.join(ctx.cache_dir, "npm")
    env = {"npm_config_cache": cache, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    local = [m for text in texts for m in _CAFILE_LINE.findall(text) if m.startswith("/")]
    local += [v for k, v in ctx.env.items() if k.lower() == "npm_config_cafile" and v.startswith("/")]
    readonly = tuple(Mount(p, p) for p in dict.fromkeys(local) if os.path.exists(p) and not in_toolchain(p))
    # The user's and the global config files may hold tokens: the download phase only. The project's
    # own .npmrc is part of the project; the scripts phase reads it as empty.
    # (the machine's own, configs.SYSTEM, are the phase's `configs`)
    credentials = tuple(Mount(f, f) for f in files if f != os.path.join(ctx.project_root, ".npmrc")
                        and not in_toolchain(f) and f not in SYSTEM_CONFIGS)
    if berry:
        return _berry(argv, sub in REBUILD, ctx, env, allow, implied, readonly, credentials)
    rebuild: tuple[str, ...] = ("npm", "rebuild") if tool == "yarn" else (argv[0], "rebuild")
    if sub in REBUILD:
        return (_scripts(argv, env, cache, readonly, ctx, "rebuild runs install scripts with the network off"),)
    logs = _logs_dir(ctx, "download")  # npm's log pointer leads somewhere
    hook = _hook(argv, tool, sub, ctx)
    download = Phase(
        "download", _ignore_scripts(argv, tool), True, allow, {**env, **EXECUTABLES, "npm_config_logs_dir": logs},
        implied=implied, secrets=passthrough(ctx, True), credentials=tuple(m.source for m in credentials),
        mounts=(cache_mount(cache, True), cache_mount(logs, True), *readonly, *credentials),
        reason=f"built-in {tool} policy: install downloads with scripts disabled",
        writable=outputs(ctx, tool), hook=hook, configs=("npmrc", "gitconfig"), files=_held(argv, ctx),
    )
    if "--ignore-scripts" in argv or "--ignore-scripts=true" in argv:  # the user's own: no scripts to run
        return (download.replace(hook=(), reason=f"built-in {tool} policy: install downloads; "
                                                  "--ignore-scripts, so no scripts phase"),)
    why = ("then runs the install scripts of what it added or changed, with the network off" if hook
           else "then runs install scripts with the network off")
    if hook:  # npm: sbox's driver of npm's own modules builds what the hook names (npm_scripts.js);
        # `env node`, as npm's own #! line: sbox's checks of the step's program read env, not node's 100 MB
        from sbox_shim.ecosystems import npm_driver

        rebuild = npm_driver.command(argv, sub)
    steps: tuple[Phase, ...] = (download, _scripts(rebuild, env, cache, readonly, ctx, why, hook=hook))
    # A bare `npm install` / `npm ci` also runs the project's own `prepare` (husky and the like);
    # `npm rebuild` runs its preinstall/install/postinstall but not that one.
    if sub in ROOT_LIFECYCLE and not _package_args(argv, sub) and "prepare" in _root_scripts(ctx):
        runner = "npm" if tool == "yarn" else argv[0]
        steps += (_scripts((runner, "run", "prepare"), env, cache, readonly, ctx,
                           "then runs the project's prepare script with the network off", True),)
    return steps


def _berry(argv: tuple[str, ...], rebuild: bool, ctx: Context, env: dict[str, str], allow: tuple[str, ...],
           implied: tuple[str, ...], readonly: tuple[Mount, ...], credentials: tuple[Mount, ...]) -> tuple[Phase, ...]:
    """yarn 2 and later (yarn.py): `--mode=skip-build` with the network, then a second `yarn install`
    offline, which builds what the first one added or changed; berry's registries and the user's
    `~/.yarnrc.yml` in the download phase; its cache sbox's, this project's own. `yarn rebuild`:
    the scripts phase alone, the command as given."""
    package = _package_dir(ctx)
    here = yarn.project_dir(ctx, package)
    git = tuple(dict.fromkeys(yarn.git_dependencies(package) + yarn.git_dependencies(here)))  # for the hint
    users = yarn.user_config(ctx)
    allow = tuple(dict.fromkeys(allow + tuple(
        e for e in map(url_entry, yarn.registries([read_text(f) for f in users], ctx.env)) if e)))
    ours = yarn.registries([read_text(f) for f in yarn.project_configs(ctx, here)], None)
    implied = tuple(dict.fromkeys(implied + tuple(e for e in map(url_entry, ours) if e and e not in allow)))
    cache = project_cache(ctx, "yarn")
    berry_env = {"YARN_GLOBAL_FOLDER": cache}
    prefix = os.path.relpath(here, ctx.project_root)
    prefix = "" if prefix == "." else prefix + "/"
    logs = _logs_dir(ctx, "download")
    # the project writable but for the protected paths: berry makes and removes its Plug'n'Play
    # files at the top as it goes, which a bind of each cannot allow; only yarn runs here
    download = Phase(
        "download", yarn.download(argv), True, allow,
        {**env, **EXECUTABLES, **yarn.DOWNLOAD_ENV, **berry_env, **yarn.constraints_off(ctx, here),
         "npm_config_logs_dir": logs},
        implied=implied, secrets=passthrough(ctx, True) + yarn.passthrough(ctx, True),
        credentials=tuple(m.source for m in credentials) + tuple(users),
        mounts=(cache_mount(cache, True), cache_mount(logs, True), *readonly, *credentials,
                *(Mount(f, f) for f in users)),
        reason="built-in yarn policy (yarn 2+): install downloads and links with the build step skipped",
        writable=True, configs=("npmrc", "gitconfig"), files=_held(argv, ctx) + (yarn.classic_off(ctx.home),),
        hook=("yarn", "download", *git),
    )
    if not yarn.builds(argv) and not rebuild:
        return (download.replace(hook=download.hook if git else ()),)
    scripts = _scripts(argv if rebuild else yarn.scripts(argv), {**env, **berry_env}, os.path.join(ctx.cache_dir, "npm"),
                       readonly, ctx, "rebuild runs install scripts with the network off" if rebuild
                       else "then `yarn install` offline builds what the install added or changed")
    local = tuple(w for w in scripts.writable if not w.endswith("node_modules/")) \
        if isinstance(scripts.writable, tuple) else ()
    # what berry's second install writes, each where the first one left it (layout.py: optional):
    # its own files, node_modules at its root and in each workspace (where a version that cannot be
    # hoisted goes); and its root's top in a throwaway layer (layout.TOP): yarn removes what it does
    # not need there, at times what is not there (`rmdir node_modules`: EROFS, not ENOENT)
    from sbox_shim.layout import TOP

    modules = [os.path.relpath(w, ctx.project_root) + "/node_modules/" for w in yarn.workspace_dirs(here)
               if (w + "/").startswith(ctx.project_root.rstrip("/") + "/")]
    built = (prefix + TOP, *(prefix + n + "?" for n in ("node_modules/", *yarn.BUILT)), *(m + "?" for m in modules))
    # the state step (yarn.py): the install state as the download wrote it, with only the scripts
    # phase's build record merged in, from a copy in this run's own directory (scratch.py)
    run = os.path.join(ctx.cache_dir, "yarn-state")
    moved = yarn.moved_state(ctx, here)
    if moved:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{moved} moves yarn's install state, where `yarn run` on this host finds each "
                         f"package's commands, and which sbox keeps from the install scripts only at "
                         f"{yarn.STATE}: remove the setting, or install without sbox")
    hook, merge, script = yarn.state_step(ctx, here, run, noted=not rebuild)
    scripts = scripts.replace(
        env={**scripts.env, **yarn.SCRIPTS_ENV}, secrets=scripts.secrets + yarn.passthrough(ctx, False),
        mounts=(*scripts.mounts, cache_mount(cache, False)), writable=built + local, hook=hook)
    state = Phase("state", merge, False, env={}, mounts=(Mount(run, run, kind="run"),), files=(script,),
                  reason="then, offline, keeps yarn's install state as the download wrote it, with only the "
                         "scripts phase's record of what it built",
                  writable=(prefix + yarn.STATE + "?",), hook=("yarn", "state", *hook[2:]))
    return (scripts, state) if rebuild else (download, scripts, state)


def _logs_dir(ctx: Context, phase: str) -> str:
    """npm's logs of one phase of this project's installs: never another project's (a phase writes
    them, and a log names the commands and paths of the install that wrote it)."""
    from sbox_shim.kept import digest  # the built-in SHA-256: hashlib loads OpenSSL

    project = digest(ctx.project_root.encode("utf-8", "surrogateescape"))[:16]
    return os.path.join(ctx.cache_dir, "npm-logs", project, phase)


LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml")


def outputs(ctx: Context, tool: str) -> tuple[str, ...]:
    """What a download writes, relative to the project root: node_modules, package.json, the
    lockfiles there are, and the one the tool makes when there is none. A lockfile that does not
    exist is not offered otherwise: npm updates a yarn.lock or an npm-shrinkwrap.json it finds, so
    an empty placeholder for one would change which file npm writes."""
    base = os.path.relpath(_package_dir(ctx), ctx.project_root)
    prefix = "" if base == "." else base + "/"
    here = os.path.join(ctx.project_root, prefix)
    present = [f for f in ("package.json", *LOCKFILES) if os.path.lexists(os.path.join(here, f))]
    own = {"yarn": "yarn.lock", "pnpm": "pnpm-lock.yaml"}.get(tool, "package-lock.json")
    if tool not in ("yarn", "pnpm") and "npm-shrinkwrap.json" in present:
        own = "npm-shrinkwrap.json"
    names = ["node_modules/", *present, own]
    if prefix and "node_modules/" in names:  # hoisted workspaces install at the root as well
        names.append("../" * prefix.count("/") + "node_modules/")
    return tuple(dict.fromkeys(os.path.normpath(prefix + n) + ("/" if n.endswith("/") else "") for n in names))


def _package_dir(ctx: Context) -> str:
    """The directory of the nearest package.json from cwd up to the root, where npm installs."""
    root = ctx.project_root
    here = ctx.cwd if (ctx.cwd + "/").startswith(root.rstrip("/") + "/") else root
    while here != root and not os.path.isfile(os.path.join(here, "package.json")):
        here = os.path.dirname(here)
    return here


ROOT_LIFECYCLE = INSTALL - {"add", "update", "up", "upgrade", "udpate"}


def _package_args(argv: tuple[str, ...], sub: str) -> list[str]:
    """The packages named after the subcommand (`npm install left-pad`), options left out."""
    rest = argv[argv.index(sub) + 1:] if sub in argv else ()
    out, skip = [], False
    for arg in rest:
        if skip:
            skip = False
        elif arg in _GLOBAL_VALUES:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _root_scripts(ctx: Context) -> dict[str, str]:
    """The `scripts` of the project's package.json: the nearest one from cwd up to the root."""
    import json

    here = ctx.cwd
    while True:
        path = os.path.join(here, "package.json")
        if os.path.isfile(path):
            try:
                scripts = json.loads(read_text(path) or "{}").get("scripts") or {}
            except (ValueError, AttributeError):
                return {}
            return scripts if isinstance(scripts, dict) else {}
        if here == ctx.project_root or os.path.dirname(here) == here:
            return {}
        here = os.path.dirname(here)


# Options that take a separate value and may come before the subcommand (`npm --prefix dir install`).
# Options whose value is the next word, so that it is taken for neither the subcommand nor a
# package (those that take a path above all: `--script-shell /bin/zsh` names no local package).
_GLOBAL_VALUES = {"--registry", "--prefix", "-C", "--workspace", "-w", "--userconfig", "--globalconfig",
                  "--cache", "--loglevel", "--cafile", "--dir", "--filter", "--script-shell", "--shell",
                  "--nodedir", "--python", "--git", "--logs-dir", "--init-module", "--editor", "--viewer",
                  "--tmp", "--node-gyp", "--cwd"}  # --cwd: yarn's


def _subcommand(argv: tuple[str, ...]) -> str:
    return subcommand(argv, _GLOBAL_VALUES)


def _ignore_scripts(argv: tuple[str, ...], tool: str) -> tuple[str, ...]:
    return argv if "--ignore-scripts" in argv else (*argv, "--ignore-scripts")


def _hook(argv: tuple[str, ...], tool: str, sub: str, ctx: Context) -> tuple[str, ...]:
    """npm's run-time decisions (npm_run.py): roll a failed install back, and run the scripts of
    what the install added or changed. pnpm and yarn keep their lockfiles otherwise: a plain rebuild."""
    if tool != "npm" or sub not in INSTALL:
        return ()
    kind = "ci" if sub in ("ci", "clean-install") else "install"
    if sub not in ROOT_LIFECYCLE or _package_args(argv, sub):
        kind = "named"  # `npm install <pkg>`, `npm update`: npm runs none of the project's own scripts
    return ("npm", kind, _package_dir(ctx))


def _scripts(argv: tuple[str, ...], env: dict[str, str], cache: str, readonly: tuple[Mount, ...],
             ctx: Context, why: str, own: bool = False, hook: tuple[str, ...] = ()) -> Phase:
    """The offline phase: no credentials; a project .npmrc (which may hold a token) reads as empty."""
    masks: tuple[File, ...] = ()
    project_rc = os.path.join(ctx.project_root, ".npmrc")
    if os.path.isfile(project_rc):
        masks = (File(project_rc, ""),)
    if argv[:1] == ("env",):
        from sbox_shim.ecosystems import npm_driver

        masks += (npm_driver.file(),)
    # sbox's npm cache is not shown to package code: the download phase's logs and cache index
    # hold registry URLs as configured, credentials included, from every project. An empty one.
    empty_cache = Mount("", cache, readonly=False, kind="tmpfs")
    # Its own logs, kept where npm's "complete log" line points (never the download phase's).
    logs = _logs_dir(ctx, "scripts")
    settings = plain_settings(ctx)  # node-gyp's nodedir, python, ...: every phase; credentials: never here
    return Phase("scripts", argv, False, (), {**settings, **env, "npm_config_offline": "true",
                                              "npm_config_logs_dir": logs},
                 secrets=passthrough(ctx, False), mounts=(empty_cache, cache_mount(logs, True), *readonly),
                 files=masks,
                 reason=f"built-in {os.path.basename(argv[0])} policy: {why}",
                 writable=True if own else _modules(ctx), hook=hook)


_SETTING = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*=\s*(.*?)\s*$", re.M)
_NOT_OFFLINE = {"registry", "proxy", "https-proxy", "noproxy", "cafile", "ca", "cert", "key", "userconfig",
                "globalconfig", "cache", "logs-dir", "offline", "prefer-online", "script-shell", "shell", "git",
                "node-options", "onload-script", "editor", "browser", "viewer", "prefix"}


def plain_settings(ctx: Context) -> dict[str, str]:
    """The non-secret settings of the user's, global and (trusted) project npmrc, as npm_config_*
    variables for the offline phase, which reads no npmrc with a token in it: node-gyp's `nodedir`
    and `python` among them. Nothing credential-like, nothing naming a program or a registry."""
    out: dict[str, str] = {}
    for path in config_files(ctx):
        for key, value in _SETTING.findall(read_text(path)):
            if key in _NOT_OFFLINE or is_secret(key) or "${" in value or "://" in value and "@" in value:
                continue
            out["npm_config_" + key.replace("-", "_")] = value.strip("\"'")
    return out


def _modules(ctx: Context) -> tuple[str, ...]:
    """Dependencies' install scripts write their own package's directory: node_modules, and a
    local (`file:`) dependency's own directory inside the project, which npm links and runs in place."""
    from sbox_shim.ecosystems import npm_local

    local = npm_local.inside_dirs(_package_dir(ctx), ctx.project_root)
    return tuple(n for n in outputs(ctx, "npm") if n.endswith("node_modules/")) + local
