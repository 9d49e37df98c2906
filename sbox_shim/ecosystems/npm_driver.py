"""The command of npm's scripts phase after an install: sbox's driver of npm's own modules
(npm_scripts.js, written into the sandbox), which runs the install scripts of the packages the
hook names (npm_run.py) as the install would have, with npm's configuration loaded from the
user's command line as far as it is safe offline.
"""
from __future__ import annotations

import os

from sbox_shim.environment import is_secret
from sbox_shim.ecosystems.npm import _GLOBAL_VALUES as GLOBAL_VALUES
from sbox_shim.ecosystems.npm import _NOT_OFFLINE as NOT_OFFLINE
from sbox_shim.plan import NPM_DRIVER, File

# Where the scripts phase finds the driver: written into the sandbox, never read from the host's
# sbox installation (which may be out of the sandbox's sight).
SCRIPTS_JS = NPM_DRIVER


def command(argv: tuple[str, ...], sub: str) -> tuple[str, ...]:
    """`env node`, as npm's own #! line, so that sbox's checks of the step's program read env, not
    node's 100 MB; the hook appends `-- DIR...`."""
    return ("env", "node", SCRIPTS_JS, argv[0], sub, *offline_flags(argv, sub))


def file() -> File:
    with open(os.path.join(os.path.dirname(__file__), "npm_scripts.js"), encoding="utf-8") as f:
        return File(SCRIPTS_JS, f.read())


def offline_flags(argv: tuple[str, ...], sub: str) -> tuple[str, ...]:
    """The user's command line after the subcommand, for npm's scripts phase to load its
    configuration from as npm did (npm exports options to the scripts as npm_config_*:
    `--foreground-scripts`, `--build-from-source`), but any option naming a registry, a proxy, a
    credential or a program (with its value), and any word with a credential in it."""
    out: list[str] = []
    words = iter(w for w in argv[1:] if w != sub)
    for arg in words:
        if arg == "--":  # positionals follow, which configure nothing; the driver's own `--` comes last
            break
        if is_secret(arg) or "${" in arg or "://" in arg and "@" in arg:
            continue
        name, eq, _ = arg[2:].partition("=")
        key = name[3:] if name.startswith("no-") else name
        if arg.startswith("--") and key != "prefix" and (
                key in NOT_OFFLINE or key == "ignore-scripts" or is_secret(key) or key.startswith(("/", "@", "_"))):
            if not eq and arg in GLOBAL_VALUES:
                next(words, "")  # its value
            continue
        out.append(arg)
    return tuple(out)
