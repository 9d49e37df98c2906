"""Which files a command's plan would be made from, and the gate before planning: every one a
sandbox could have written must be trusted (the store in __init__.py), or nothing runs."""
from __future__ import annotations

import dataclasses
import glob
import os

from sbox_shim import trust
from sbox_shim.trust import OPT_IN, Input

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping, Sequence

    from sbox_shim.config import Config
    from sbox_shim.host import Host
    from sbox_shim.plan import Plan

NPM_TOOLS = ("npm", "npx", "pnpm", "yarn")
# What `sbox trust` in a project looks at besides the opt-in files: each ecosystem's install.
REPRESENTATIVE = (("npm", "install"), ("yarn", "install"), ("pnpm", "install"), ("pip", "install"),
                  ("cargo", "build"), ("uv", "sync"))
REQUIREMENTS = ("requirements*.txt", "constraints*.txt", "requirements/*.txt")


def opt_in(cwd: str, explicit: str | None = None) -> list[Input]:
    """Every opt-in file from `cwd` up to `/`, and a config named with --config."""
    from sbox_shim.config import opt_in_files

    found = opt_in_files(cwd)
    if explicit:
        found.insert(0, os.path.abspath(explicit))
    return [_opt_in_input(p) for p in dict.fromkeys(found)]


def _opt_in_input(path: str) -> Input:
    if os.path.basename(path) == "pyproject.toml":
        return Input(path, f"{OPT_IN} ([tool.sbox])", "tool.sbox")
    return Input(path, OPT_IN)


def tools(argv: Sequence[str], cfg: Config, host: Host) -> list[Input]:
    """The tool configuration this command's plan would read where a sandbox could write it."""
    from sbox_shim import ecosystems
    from sbox_shim.toolpath import find_real, without_shims

    path = without_shims(host.env.get("PATH", os.defpath), host.shim_dirs)
    ctx = ecosystems.Context(host.cwd, cfg.root, host.home, host.env, host.cache_dir,
                             find_real(argv[0], path, host.shim_dirs) if argv else None)
    return [Input(p, kind, part) for p, kind, part in ecosystems.inputs(argv, ctx)]


def host_scripts(plan: Plan, cwd: str, host: Host | None = None) -> list[Input]:
    """What a host-mode tool reads and runs unsandboxed: an npm's lifecycle scripts, and any
    ecosystem tool's configuration a sandbox could write (a `.npmrc` naming a `script-shell`, say),
    whatever the subcommand."""
    out = []
    for step in plan.steps:
        if step.mode == "host" and step.command and host is not None:
            out += _host_tool_config(step.command[0], plan, host)
        if step.mode == "host" and step.command and os.path.basename(step.command[0]) in NPM_TOOLS:
            manifest = _nearest(cwd, plan.project_root, "package.json")
            if manifest:
                out.append(Input(manifest, "package.json scripts (mode: host runs them unsandboxed)", "scripts"))
                out += [Input(p, "workspace package.json scripts (mode: host runs them unsandboxed)", "scripts")
                        for p in workspaces(manifest)]
    return list(dict.fromkeys(out))


def _host_tool_config(tool: str, plan: Plan, host: Host) -> list[Input]:
    from sbox_shim.config import Config

    name = {"npx": "npm", "pip3": "pip"}.get(os.path.basename(tool), os.path.basename(tool))
    representative = next((argv for argv in REPRESENTATIVE if argv[0] == name), None)
    if representative is None:
        return []
    cfg = Config(plan.config_path, plan.project_root)
    found = tools(representative, cfg, host)
    for where in _prefixes(plan, host.cwd):  # `npm --prefix DIR` / `-C DIR` reads DIR's config and scripts
        found += tools(representative, cfg, dataclasses.replace(host, cwd=where))
        manifest = os.path.join(where, "package.json")
        if os.path.lexists(manifest):
            found.append(Input(manifest, "package.json scripts (mode: host runs them unsandboxed)", "scripts"))
    return found


def _prefixes(plan: Plan, cwd: str) -> list[str]:
    out = []
    for step in plan.steps:
        words = list(step.command)
        for i, word in enumerate(words):
            name, eq, value = word.partition("=")
            if name in ("--prefix", "-C", "--dir") and (eq or i + 1 < len(words)):
                out.append(os.path.normpath(os.path.join(cwd, value if eq else words[i + 1])))
    return out


def workspaces(manifest: str, limit: int = 500) -> list[str]:
    """The package.json of each workspace a manifest names (`npm publish --workspaces` runs their
    scripts too), read safely, links not followed."""
    import json

    from sbox_shim.trust.files import read_text

    try:
        declared = json.loads(read_text(manifest) or "{}").get("workspaces") or []
    except (ValueError, AttributeError):
        return []
    if isinstance(declared, dict):
        declared = declared.get("packages") or []
    base = os.path.dirname(manifest)
    found: list[str] = []
    for pattern in declared if isinstance(declared, list) else []:
        if not isinstance(pattern, str) or pattern.startswith("/") or ".." in pattern.split("/"):
            continue
        for d in sorted(glob.glob(os.path.join(glob.escape(base), pattern))):
            path = os.path.join(d, "package.json")
            if os.path.isfile(path) and not os.path.islink(path) and len(found) < limit:
                found.append(path)
    return found


def _nearest(cwd: str, root: str, name: str) -> str | None:
    here = cwd
    while True:
        if os.path.lexists(os.path.join(here, name)):
            return os.path.join(here, name)
        if here == root or os.path.dirname(here) == here:
            return None
        here = os.path.dirname(here)


def project(cwd: str, env: Mapping[str, str], explicit: str | None = None) -> list[Input]:
    """Everything `sbox trust` (no path) covers for the project at `cwd`: the opt-in files, the
    tool configuration of each ecosystem's install, requirements files' option lines."""
    from sbox_shim import config
    from sbox_shim.host import Host

    host = Host.current(env, cwd)
    cfg = config.load(cwd, env, explicit)
    found = opt_in(cwd, explicit)
    for argv in REPRESENTATIVE:
        found += tools(argv, cfg, host)
    for pattern in REQUIREMENTS:
        for path in sorted(glob.glob(os.path.join(glob.escape(cfg.root), pattern))):
            found.append(Input(path, "requirements file (its option lines)", "options"))
    manifest = os.path.join(cfg.root, "package.json")
    if os.path.isfile(manifest) and any(p.mode == "host" for p in cfg.profiles.values()):
        found.append(Input(manifest, "package.json scripts (mode: host runs them unsandboxed)", "scripts"))
    return list(dict.fromkeys(found))


def classify(path: str) -> Input:
    """What a file named to `sbox trust PATH` is."""
    from sbox_shim.config import CONFIG_NAMES

    name = os.path.basename(path)
    if name in CONFIG_NAMES:
        return Input(path, OPT_IN)
    if name == "pyproject.toml":
        from sbox_shim.ecosystems.uv import tool_uv
        from sbox_shim.trust.files import read_text

        text = read_text(path)
        if tool_uv(text).strip() and not trust.decisive(text.encode(), "tool.sbox").strip():
            return Input(path, "uv settings ([tool.uv])", "tool.uv")
        return Input(path, f"{OPT_IN} ([tool.sbox])", "tool.sbox")
    if name.endswith(".txt") and ("requirement" in name or "constraint" in name):
        return Input(path, "requirements file (its option lines)", "options")
    if name == "package.json":
        return Input(path, "package.json scripts (mode: host runs them unsandboxed)", "scripts")
    kinds = {".npmrc": "npm config", "pip.conf": "pip config", "config.toml": "cargo config", "config": "cargo config"}
    return Input(path, kinds.get(name, "tool config"))


# ---------------------------------------------------------------- the gate


def before_config(host: Host, explicit: str | None) -> None:
    """Before a config is even parsed: sbox's own state, caches and user config lie where no
    sandbox can write, and every opt-in file up the tree is trusted."""
    own_dirs_outside_projects(host)
    trust.require(opt_in(host.cwd, explicit), host.state_dir)


def own_dirs_outside_projects(host: Host) -> None:
    """sbox's state (trust records, kept parses, plan records), caches and user config must not
    lie in a project (or the working directory, the project of a plain `sbox run`), as written or
    resolved (a link into a dotfiles repository that opted in): a sandbox that may write there could
    plant what the next run reads as trusted."""
    from sbox_shim.config import user_config_path

    dirs_outside_projects(host.env, host.cwd, (
        ("state directory", host.state_dir), ("cache directory", host.cache_dir),
        ("user config", os.path.dirname(user_config_path(host.env)))))


def dirs_outside_projects(env: Mapping[str, str], cwd: str, dirs: Sequence[tuple[str, str]]) -> None:
    """UsageError for the first of `dirs` ((what, path)) that lies in a project or in `cwd`."""
    from sbox_shim.config import opt_in_files
    from sbox_shim.errors import UsageError
    from sbox_shim.lean import inside

    for what, d in dirs:
        for seen in dict.fromkeys((os.path.abspath(d), os.path.realpath(d))):
            holder = next(iter(opt_in_files(seen)), None) if os.path.isabs(d) else None
            if holder or inside(seen, cwd) or inside(seen, os.path.realpath(cwd)):
                where = os.path.dirname(holder) if holder else cwd
                shown = d if seen == os.path.abspath(d) else f"{d} (resolved: {seen})"
                raise UsageError(f"sbox's {what} {shown} lies inside the project {where}, which sandboxes can "
                                 "write; move it out (SBOX_STATE_DIR, SBOX_CACHE_DIR, SBOX_USER_CONFIG or XDG_*)")


def before_plan(argv: Sequence[str], cfg: Config, host: Host) -> None:
    """Before names are resolved or anything mounted: the tool configuration is trusted."""
    trust.require(tools(argv, cfg, host), host.state_dir)


def after_plan(plan: Plan, host: Host) -> None:
    """Before anything runs unsandboxed: what a host-mode step would run is trusted."""
    trust.require(host_scripts(plan, host.cwd, host), host.state_dir)
