"""yarn 2 and later ("berry"): where its two phases differ from npm's and yarn classic's.

Berry refuses `--ignore-scripts`; its download phase is `--mode=skip-build` (resolve, fetch, link,
no build step: neither the dependencies' scripts nor the project's own). Its scripts phase is a
second `yarn install`, offline: berry keeps its own record of what it has built
(`.yarn/install-state.gz`), so that install builds what the first one added or changed and
nothing else, the project's `postinstall` included, as a plain `yarn install` would have.

Which yarn runs is decided by what the project says: a `packageManager: yarn@2…` or later, a
`.yarnrc.yml`, or a yarn.lock in berry's format. Nothing else tells them apart without running the
tool, so a project that says none of these gets yarn classic's flags (berry refuses them at once:
the install stops, nothing runs). The other way round, classic would take `--mode` silently and
run the scripts: so the download phase's HOME holds a `.yarnrc` (which classic reads and berry does
not) with `ignore-scripts true`. (Not `YARN_IGNORE_SCRIPTS`: yarn 3 refuses an unknown setting.)
Classic itself refuses a `packageManager: yarn@2…` project.

Berry also packs a git dependency from its sources while it downloads: it clones it and runs its
`yarn install` and `yarn pack`, the dependency's own scripts with them, which `--mode=skip-build`
does not reach (nor `enableScripts`). That would be third-party code with the network and the
registry token, so git has no transport in the download phase (GIT_ALLOW_PROTOCOL): such an
install fails there, and when the project names one, one line says why (the download phase's
hook: `failed`).

Berry reads its settings from `.yarnrc.yml` files (the project's: trust inputs; the user's
`~/.yarnrc.yml`, which may hold `npmAuthToken`: the download phase only) and YARN_* variables. Its
cache (the "global folder") is sbox's, one per project: written by the download phase, read-only to
the scripts phase.
"""
from __future__ import annotations

import os
import re

from sbox_shim.ecosystems import Context, read_text
from sbox_shim.plan import File

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterator, Mapping, TextIO

    from sbox_shim.plan import Step

# the download phase: no telemetry; git with no transport (a git dependency's scripts would run)
DOWNLOAD_ENV = {"YARN_ENABLE_TELEMETRY": "0", "GIT_ALLOW_PROTOCOL": "none"}
# the scripts phase: the network off in yarn itself too (a clear error, not a connection refused),
# the lockfile and the cache as the download left them
SCRIPTS_ENV = {"YARN_ENABLE_TELEMETRY": "0", "YARN_ENABLE_NETWORK": "0",
               "YARN_ENABLE_IMMUTABLE_INSTALLS": "1", "YARN_ENABLE_IMMUTABLE_CACHE": "1"}
# what berry's scripts phase writes besides node_modules/ (each only if the download phase left it
# there: layout.py): the packages it unpacks to build them, its record of what it built. Not
# Plug'n'Play's loader (`.pnp.cjs`, which `yarn run` loads on the host): the download phase wrote
# it, and a build changes nothing in it, so yarn leaves it as it is
BUILT = (".yarn/install-state.gz", ".yarn/unplugged/", ".yarn/build-state.yml")

_PACKAGE_MANAGER = re.compile(r"^yarn@(\d+)")
_REGISTRY = re.compile(r"""["']?npm(?:Publish)?RegistryServer["']?\s*:\s*["']?([^"'\s#,}]+)""")


def _upward(start: str, stop: str) -> Iterator[str]:
    """`start` and each directory above it, up to `stop` (or `/`)."""
    here = start
    while True:
        yield here
        if here == stop or os.path.dirname(here) == here:
            return
        here = os.path.dirname(here)


def is_berry(ctx: Context, package_dir: str) -> bool:
    """Does the project say it uses yarn 2 or later: `packageManager`, a `.yarnrc.yml` from the
    package's directory up to the root, or a yarn.lock in berry's format?"""
    for here in _upward(package_dir, ctx.project_root):
        manager = _package_manager(os.path.join(here, "package.json"))
        if manager is not None:
            return manager >= 2
        if os.path.isfile(os.path.join(here, ".yarnrc.yml")):
            return True
        if "\n__metadata:" in "\n" + read_text(os.path.join(here, "yarn.lock"))[:4096]:
            return True
    return False


def project_dir(ctx: Context, package_dir: str) -> str:
    """The directory berry takes for the project from `package_dir`: the nearest one up to the
    root with a yarn.lock; with none, the highest with a package.json (a workspace's root)."""
    highest = package_dir
    for here in _upward(package_dir, ctx.project_root):
        if os.path.isfile(os.path.join(here, "yarn.lock")):
            return here
        if os.path.isfile(os.path.join(here, "package.json")):
            highest = here
    return highest


_CONSTRAINTS = re.compile(r"""["']?enableConstraintsChecks["']?\s*:\s*["']?(?:true|1)""", re.I)


def rc_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """berry's configuration files under another name than `.yarnrc.yml` (YARN_RC_FILENAME)."""
    name = env.get("YARN_RC_FILENAME", "")
    return (name,) if name and "/" not in name and name not in (".yarnrc", ".yarnrc.yml") else ()


def constraints_off(ctx: Context, project: str) -> dict[str, str]:
    """The download phase's override of yarn 4's constraints checks, where they could be on. With
    `enableConstraintsChecks`, `yarn install` loads the project's `yarn.config.cjs`, and what it
    requires (`@yarnpkg/types`, as yarn's docs begin it: a package in node_modules, which the last
    scripts phase could write), in its own process: in the download phase, the network and the
    registry token with it (red team 33). So they run in the scripts phase alone, offline. Set only
    where the setting is on (in a configuration from the project up to `/`, the user's, the
    environment) or the project says yarn 4 or later: yarn 3 refuses a setting it does not know."""
    names = (".yarnrc.yml", *rc_names(ctx.env))
    texts = [read_text(os.path.join(d, n)) for d in (*_upward(project, "/"), ctx.home) for n in names]
    value = next((v for k, v in ctx.env.items() if k.upper() == "YARN_ENABLE_CONSTRAINTS_CHECKS"), "")
    on = value.lower() in ("1", "true") or any(_CONSTRAINTS.search(t) for t in texts)
    major = _package_manager(os.path.join(project, "package.json"))
    return {"YARN_ENABLE_CONSTRAINTS_CHECKS": "0"} if on or (major or 0) >= 4 else {}


def workspace_dirs(root: str) -> list[str]:
    """The workspaces the package.json of berry's project names (trust.gate reads them so)."""
    from sbox_shim.trust.gate import workspaces

    return [os.path.dirname(p) for p in workspaces(os.path.join(root, "package.json"))]


def _package_manager(path: str) -> int | None:
    text = read_text(path)
    if "packageManager" not in text:
        return None
    import json  # only for a package.json that names one

    try:
        value = json.loads(text).get("packageManager")
    except (ValueError, AttributeError):
        return None
    found = _PACKAGE_MANAGER.match(value) if isinstance(value, str) else None
    return int(found.group(1)) if found else None


def download(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The user's command with the build step skipped: any `--mode` of theirs but `update-lockfile`
    (which links nothing, so builds nothing) gives way to `--mode=skip-build`."""
    if _mode(argv) == "update-lockfile":
        return argv
    out: list[str] = []
    words = iter(argv)
    for arg in words:
        if arg == "--mode":
            next(words, "")
        elif not arg.startswith("--mode="):
            out.append(arg)
    return (*out, "--mode=skip-build")


def _mode(argv: tuple[str, ...]) -> str:
    """The user's `--mode`, `--mode=X` or `--mode X` (the last one, as yarn takes it)."""
    found = ""
    for i, arg in enumerate(argv):
        if arg.startswith("--mode="):
            found = arg[len("--mode="):]
        elif arg == "--mode" and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def builds(argv: tuple[str, ...]) -> bool:
    """Is there a build step for the scripts phase to run: not when the user skips it themselves
    (`--mode skip-build`) or links nothing (`--mode update-lockfile`)?"""
    return _mode(argv) not in ("skip-build", "update-lockfile")


def classic_off(home: str) -> File:
    """yarn classic's scripts off, in a file berry does not read: the sandbox's `~/.yarnrc`."""
    return File(os.path.join(home, ".yarnrc"), "ignore-scripts true\n")


def scripts(tool: str) -> tuple[str, ...]:
    return (tool, "install")


def user_config(ctx: Context) -> list[str]:
    """The user's `~/.yarnrc.yml` (berry's home configuration, where `npmAuthToken` lives)."""
    paths = [os.path.join(ctx.home, n) for n in (".yarnrc.yml", *rc_names(ctx.env))]
    return [p for p in paths if os.path.isfile(p)]


def project_configs(ctx: Context, package_dir: str) -> list[str]:
    """The `.yarnrc.yml` files berry reads in the project, from the package's directory up."""
    names = (".yarnrc.yml", *rc_names(ctx.env))
    paths = [os.path.join(d, n) for d in _upward(package_dir, ctx.project_root) for n in names]
    return [p for p in paths if os.path.isfile(p)]


def registries(texts: list[str], env: Mapping[str, str] | None) -> list[str]:
    """The registry URLs berry's settings name (`npmRegistryServer`, scoped or not, and
    `npmPublishRegistry`); with `env`, YARN_NPM_REGISTRY_SERVER too."""
    urls = [m for text in texts for m in _REGISTRY.findall(text)]
    if env is not None:
        urls += [v for k, v in env.items() if k.upper() in ("YARN_NPM_REGISTRY_SERVER", "YARN_NPM_PUBLISH_REGISTRY")]
    return urls


def passthrough(ctx: Context, download: bool) -> tuple[str, ...]:
    """The caller's YARN_* variables: all of them in the download phase, none naming a credential in
    the scripts phase."""
    from sbox_shim.environment import is_secret

    names = sorted(k for k in ctx.env if k.upper().startswith("YARN_"))
    return tuple(names if download else (k for k in names if not is_secret(k) and "AUTH" not in k.upper()))


_GIT = re.compile(r"^(?:git\+|git://|git@|github:|gitlab:|bitbucket:|[\w.-]+/[\w.-]+(?:#.*)?$)|\.git(?:#.*)?$")
_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "resolutions")


def git_dependencies(package_dir: str) -> list[str]:
    """The dependencies of `package_dir`'s package.json whose range names a git repository (berry
    builds them from their sources, their scripts with it, as it downloads)."""
    import json

    try:
        manifest = json.loads(read_text(os.path.join(package_dir, "package.json")) or "{}")
    except ValueError:
        return []
    out: list[str] = []
    for field in _FIELDS:
        deps = manifest.get(field) if isinstance(manifest, dict) else None
        if isinstance(deps, dict):
            out += [n for n, r in deps.items() if isinstance(r, str) and _GIT.search(r) and not r.startswith("npm:")]
    return list(dict.fromkeys(out))


# The download phase's hook (hooks.py): nothing to decide, one line to say if it fails.
def before(state: object, step: Step, err: TextIO) -> tuple[object, Step, str]:
    return step.hook[1:], step, ""


def failed(state: object, err: TextIO) -> None:
    if isinstance(state, tuple) and state:
        err.write(f"sbox: {', '.join(state[:3])}: a git dependency, which yarn 2+ builds from its sources while it "
                  f"downloads, running its own scripts with the network and your registry token: sbox gives git no "
                  f"transport there; depend on a published version or vendor it (a `portal:` or `file:` "
                  f"dependency), or install it once without sbox if you trust its scripts\n")


def done(state: object) -> None:
    pass
