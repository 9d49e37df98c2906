"""npm, pnpm, yarn: install in two phases — download with scripts disabled, then rebuild offline.

The registry the user configured (.npmrc files, npm_config_registry) joins the allowlist; its
credentials (the user's ~/.npmrc, *_TOKEN variables) reach the download phase only.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from sbox_shim.ecosystems import Context, Phase, cache_mount, url_entry
from sbox_shim.plan import File, Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("npm", "npx", "pnpm", "yarn")
INSTALL = {"install", "i", "in", "ins", "inst", "insta", "instal", "isnt", "isnta", "isntal", "isntall",
           "ci", "clean-install", "add", "update", "up", "upgrade", "udpate"}
REBUILD = {"rebuild", "rb"}
SECRETS = ("NPM_TOKEN", "NODE_AUTH_TOKEN", "npm_config__authToken", "npm_config__auth", "YARN_NPM_AUTH_TOKEN")
_REGISTRY_LINE = re.compile(r"^\s*(?:@[\w.-]+:)?registry\s*=\s*(\S+)", re.M)
_CAFILE_LINE = re.compile(r"^\s*cafile\s*=\s*(\S+)", re.M)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


def config_files(ctx: Context) -> list[str]:
    """npm's config files, lowest priority first: global, user, project."""
    env = ctx.env
    files = ["/etc/npmrc", "/usr/etc/npmrc", "/usr/local/etc/npmrc"]
    if env.get("npm_config_globalconfig"):
        files.append(env["npm_config_globalconfig"])
    files.append(env.get("npm_config_userconfig") or os.path.join(ctx.home, ".npmrc"))
    files.append(os.path.join(ctx.project_root, ".npmrc"))
    return [f for f in dict.fromkeys(files) if os.path.isfile(f)]


def registries(ctx: Context, texts: Iterable[str]) -> tuple[str, ...]:
    urls = [m for text in texts for m in _REGISTRY_LINE.findall(text)]
    urls += [v for k, v in ctx.env.items() if k.lower() == "npm_config_registry" or k.lower().endswith(":registry")]
    return tuple(dict.fromkeys(e for e in map(url_entry, urls) if e))


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    tool = os.path.basename(argv[0])
    sub = next((a for a in argv[1:] if not a.startswith("-")), "install" if tool == "yarn" else "")
    if tool == "npx" or (sub not in INSTALL and sub not in REBUILD):
        return None
    files = config_files(ctx)
    texts = [_read(f) for f in files]
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["npm"] + registries(ctx, texts)))
    cache = os.path.join(ctx.cache_dir, "npm")
    env = {"npm_config_cache": cache, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    local = [m for text in texts for m in _CAFILE_LINE.findall(text) if m.startswith("/")]
    if ctx.env.get("npm_config_cafile", "").startswith("/"):
        local.append(ctx.env["npm_config_cafile"])
    readonly = tuple(Mount(p, p) for p in dict.fromkeys(local) if not p.startswith(("/etc/", "/usr/")))
    user_rc = os.path.join(ctx.home, ".npmrc")
    credentials = (Mount(user_rc, user_rc),) if user_rc in files else ()
    rebuild = ("npm", "rebuild") if tool == "yarn" else (argv[0], "rebuild")
    if sub in REBUILD:
        return (_scripts(argv, env, cache, readonly, ctx, "rebuild runs install scripts with the network off"),)
    download = Phase(
        "download", _ignore_scripts(argv, tool), True, allow, env, secrets=SECRETS,
        mounts=(cache_mount(cache, True), *readonly, *credentials),
        reason=f"built-in {tool} policy: install downloads with scripts disabled",
    )
    return (download, _scripts(rebuild, env, cache, readonly, ctx, "then runs install scripts with the network off"))


def _ignore_scripts(argv: tuple[str, ...], tool: str) -> tuple[str, ...]:
    return argv if "--ignore-scripts" in argv else (*argv, "--ignore-scripts")


def _scripts(argv: tuple[str, ...], env: dict[str, str], cache: str, readonly: tuple[Mount, ...],
             ctx: Context, why: str) -> Phase:
    """The offline phase: no credentials; a project .npmrc (which may hold a token) reads as empty."""
    masks = ()
    project_rc = os.path.join(ctx.project_root, ".npmrc")
    if os.path.isfile(project_rc):
        masks = (File(project_rc, ""),)
    return Phase("scripts", argv, False, (), {**env, "npm_config_offline": "true"},
                 mounts=(cache_mount(cache, False), *readonly), files=masks,
                 reason=f"built-in {os.path.basename(argv[0])} policy: {why}")
