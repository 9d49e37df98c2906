"""npm and its siblings: install runs in two phases, download without scripts, then rebuild offline."""
from __future__ import annotations

import os

from sbox_shim.ecosystems import Context, Phase
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("npm", "npx", "pnpm", "yarn")
INSTALL = ("install", "i", "ci", "add", "update", "up", "isntall", "in")


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    tool = os.path.basename(argv[0])
    sub = next((a for a in argv[1:] if not a.startswith("-")), "")
    cache = os.path.join(ctx.cache_dir, "npm")
    env = {"npm_config_cache": cache, "npm_config_update_notifier": "false"}
    if tool == "npm" and sub in INSTALL:
        download = Phase(
            "download", (*argv, "--ignore-scripts"), True, ECOSYSTEM_ALLOW["npm"], env,
            mounts=(Mount(cache, cache, readonly=False),),
            reason="built-in npm policy: install downloads with scripts disabled",
        )
        scripts = Phase(
            "scripts", (argv[0], "rebuild"), False, (), env, mounts=(Mount(cache, cache),),
            reason="built-in npm policy: then runs install scripts with the network off",
        )
        return (download, scripts)
    if tool == "npm" and sub == "rebuild":
        return (Phase("scripts", argv, False, (), env, mounts=(Mount(cache, cache),),
                      reason="built-in npm policy: rebuild runs scripts with the network off"),)
    return None
