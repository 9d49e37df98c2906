"""`sbox init`: write a commented starter sbox.yaml for the project in the working directory."""
from __future__ import annotations

import glob
import os
from typing import Mapping

from sbox_shim.config import CONFIG_NAMES, find_config
from sbox_shim.errors import UsageError

# What marks each ecosystem, and the registries its download phase needs.
MARKERS = (
    ("npm", ("package.json",)),
    ("pip", ("requirements*.txt", "pyproject.toml", "setup.py", ".venv/pyvenv.cfg", "venv/pyvenv.cfg")),
    ("cargo", ("Cargo.toml",)),
    ("go", ("go.mod",)),
)
REGISTRIES = {
    "npm": ("*.npmjs.org", "*.yarnpkg.com"),
    "pip": ("*.pypi.org", "files.pythonhosted.org"),
    "cargo": ("*.crates.io", "static.crates.io"),
    "go": ("proxy.golang.org", "sum.golang.org"),
}
EXAMPLES = {"npm": "npm install", "pip": "pip install -r requirements.txt", "cargo": "cargo build",
            "go": "go mod download"}

_HEAD = """\
# sbox.yaml: this project opts in to sbox. With the shims on PATH, a plain `{example}`
# here runs through sbox. `sbox plan -- {example}` shows what would run, where, and why.
version: 1
backend: auto                 # auto | bwrap | docker

profiles:
  # Fetching packages: the network reaches the registries below and nothing else.
  download:
    mode: sandbox             # sandbox | host (host = explicitly unsandboxed)
    network: on
    network_allow:{allow}
    writable: {download_writes}
    no_new_privileges: true
  # Running install scripts and builds: no network at all.
  scripts:
    mode: sandbox
    network: off
    writable: {scripts_writes}
    no_new_privileges: true
"""
# What each profile may write in the project (true: all of it but .git and the other protected
# paths; false: nothing; a list: those paths only). Least privilege by default.
WRITES = {
    "npm": ("[node_modules/, package.json, package-lock.json]   # the rest of the project stays read-only",
            "[node_modules/]         # dependencies' install scripts write their own packages only"),
    "other": ("false                   # list what it may write, e.g. [target, Cargo.lock]",
              "false"),
}

_DISPATCH = """
# Rules are tried in order; the first pattern that matches the command line wins (`*` = any text).
# Install commands no rule matches get sbox's built-in two-phase policy: download with scripts
# disabled and only the registries reachable, then scripts and builds with the network off.
# Anything else runs in a profile named `default` if you define one, else with the network off.
dispatch:
  npm-download:
    match: ["npm install --ignore-scripts*"]
    profile: download
  npm-rebuild:
    match: ["npm rebuild*"]
    profile: scripts
"""

_NO_DISPATCH = """
# No dispatch rules yet. Install commands (pip install, cargo build, go mod download, ...) get
# sbox's built-in two-phase policy: download with scripts disabled and only the registries
# reachable, then scripts and builds with the network off. Anything else runs in a profile named
# `default` if you define one, else with the network off. To route a command to a profile:
# dispatch:
#   my-rule:
#     match: ["pip install --only-binary*"]   # `*` = any text; first matching rule wins
#     profile: download
"""


def detect(cwd: str) -> tuple[str, ...]:
    """The ecosystems whose files are in `cwd`, in a fixed order."""
    found = []
    for name, patterns in MARKERS:
        if any(glob.glob(os.path.join(glob.escape(cwd), p)) for p in patterns):
            found.append(name)
    return tuple(found)


def render(ecosystems: tuple[str, ...]) -> str:
    """The starter config for these ecosystems (all four registries when none was detected)."""
    chosen = ecosystems or tuple(REGISTRIES)
    lines = []
    if not ecosystems:
        lines.append("      # no package.json, requirements*.txt, pyproject.toml, setup.py, Cargo.toml")
        lines.append("      # or go.mod here: every known registry is listed; keep the ones you use")
    for name in chosen:
        for i, entry in enumerate(REGISTRIES[name]):
            quoted = f'"{entry}"'
            lines.append(f"      - {quoted:<28}# {name}" if i == 0 else f"      - {quoted}")
    download, scripts = WRITES["npm" if "npm" in chosen else "other"]
    text = _HEAD.format(allow="\n" + "\n".join(lines), example=EXAMPLES[chosen[0]],
                        download_writes=download, scripts_writes=scripts)
    return text + (_DISPATCH if "npm" in chosen else _NO_DISPATCH)


def cmd_init(cwd: str, env: Mapping[str, str]) -> int:
    above = find_config(cwd)
    if above and os.path.dirname(above) == os.path.abspath(cwd):
        raise UsageError(f"{above} already opts this project in; edit it, or remove it to start over")
    for name in CONFIG_NAMES:  # find_config skips what is not a file, such as a dangling link
        if os.path.lexists(os.path.join(cwd, name)):
            raise UsageError(f"{os.path.join(cwd, name)} already exists; remove it to start over")
    from sbox_shim.trust.boundary import check_root

    check_root(os.path.abspath(cwd), env.get("HOME") or os.path.expanduser("~"), None)
    ecosystems = detect(cwd)
    path = os.path.join(cwd, "sbox.yaml")
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(render(ecosystems))
    except FileExistsError:
        raise UsageError(f"{path} already exists; edit it, or remove it to start over") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    what = ", ".join(ecosystems) if ecosystems else "no ecosystem detected; all registries listed"
    from sbox_shim import trust
    from sbox_shim.paths import sbox_dir

    trust.record(trust.Input(os.path.abspath(path), trust.OPT_IN), sbox_dir("state", env))
    print(f"sbox: wrote {path} ({what}) and trusted it (an edit needs `sbox trust` again)")
    if above:
        print(f"sbox: it takes precedence over {above} in this directory and below")
    example = EXAMPLES[ecosystems[0] if ecosystems else "npm"]
    print(f"next: review it, then run `sbox plan -- {example}` to see what would run, and where")
    return 0
