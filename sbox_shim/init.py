"""`sbox init`: write a commented starter sbox.yaml for the project in the working directory."""
from __future__ import annotations

import glob
import os

from sbox_shim.config import CONFIG_NAMES, find_config
from sbox_shim.errors import UsageError

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping

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
INSTALLS = {"npm": "npm install", "pip": "pip install", "cargo": "cargo build", "go": "go build"}
# What the two built-in phases run, for the comments of the phase profiles.
PHASE_TEXT = {
    "npm": ("npm install --ignore-scripts", "npm rebuild: install scripts"),
    "pip": ("pip download (sdists' build backends run here)", "pip install --no-index: builds"),
    "cargo": ("cargo fetch", "cargo build --offline: build scripts"),
    "go": ("go mod download", "go build with GOPROXY=off"),
}

_HEAD = """\
# sbox.yaml: this project opts in to sbox. With the shims on PATH, a plain `{example}`
# here runs through sbox. `sbox plan -- {example}` shows what would run, where, and why.
version: 1
backend: auto                 # auto | bwrap | docker

# {installs} run{s} in sbox's built-in phases: TOOL:download (scripts disabled,
# only the registries reachable: the public ones named below and those your tool config names), then
# TOOL:scripts (install scripts and builds, network off). sbox decides what each phase runs, mounts
# and may write; a profile named after a phase adds to it: `env` (NAME passes your shell's
# variable in, NAME=value sets one), `network_allow` (more hosts), `limits`. For pnpm and yarn
# the npm:* profiles apply. Each phase's profile and what it adds show in `sbox plan`.
profiles:
"""
_PHASES = """\
  {tool}:download:{pad1}# {download}; reaches {registries}
    network_allow: []         # more hosts its download needs, e.g. ["cdn.example.com"]
  {tool}:scripts:{pad2}# {scripts}, network off
    env: []                   # e.g. [{env_example}
"""
_MORE = """\
    # limits: {pids: 4096, timeout: 600, memory: 2g}   # seconds; memory on docker only
    # network: on             # a visible exception: scripts then reach network_allow: [host]
"""
ENV_EXAMPLE = {"npm": "PUPPETEER_SKIP_DOWNLOAD=1] for a package that would download a binary",
               "pip": "SETUPTOOLS_SCM_PRETEND_VERSION] (passed from your shell)",
               "cargo": "OPENSSL_DIR] (passed from your shell) for a -sys crate's build script",
               "go": "CGO_ENABLED=0]"}
_DEFAULT = """\
  # Every other command (`{other}`, `sbox run -- make`, ...) runs in this profile.
  default:
    mode: sandbox             # sandbox | host (host = explicitly unsandboxed)
    network: off              # on | off; with on, network_allow: [host, "*.example.com"]
    writable: true            # the project, but .git, sbox.yaml and the like; or a list of paths
    no_new_privileges: true
"""
OTHER = {"npm": "npm test", "pip": "python -m pytest", "cargo": "cargo fmt", "go": "go vet"}

_DISPATCH = """
# To send a command to a profile of your own instead (first matching rule wins, `*` = any text):
# dispatch:
#   publish:
#     match: ["npm publish*"]
#     profile: publisher      # e.g. mode: host, for a command that needs your credentials
"""


def example(cwd: str, ecosystem: str) -> str:
    """The install command that fits the project: its requirements file, its own package, ..."""
    if ecosystem == "npm":
        for lock, tool in (("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn")):
            if os.path.isfile(os.path.join(cwd, lock)):
                return f"{tool} install"
        return "npm install"
    if ecosystem == "pip":
        found = sorted(glob.glob(os.path.join(glob.escape(cwd), "requirements*.txt")))
        if found:
            name = "requirements.txt" if os.path.join(cwd, "requirements.txt") in found else os.path.basename(found[0])
            return f"pip install -r {name}"
        if any(os.path.isfile(os.path.join(cwd, n)) for n in ("pyproject.toml", "setup.py")):
            return "pip install -e ."
        return "pip install PACKAGE"
    return {"cargo": "cargo build", "go": "go mod download"}[ecosystem]


def detect(cwd: str) -> tuple[str, ...]:
    """The ecosystems whose files are in `cwd`, in a fixed order."""
    found = []
    for name, patterns in MARKERS:
        if any(glob.glob(os.path.join(glob.escape(cwd), p)) for p in patterns):
            found.append(name)
    return tuple(found)


def render(ecosystems: tuple[str, ...], cwd: str = ".") -> str:
    """The starter config for these ecosystems (every ecosystem's phases when none was detected)."""
    chosen = ecosystems or tuple(REGISTRIES)
    first = example(cwd, chosen[0])
    installs = ", ".join(f"`{INSTALLS[name]}`" for name in chosen)
    text = _HEAD.format(example=first, installs=installs, s="" if len(chosen) > 1 else "s")
    if not ecosystems:
        text += ("  # no package.json, requirements*.txt, pyproject.toml, setup.py, Cargo.toml or go.mod\n"
                 "  # here: every ecosystem's phases are listed; keep the ones you use\n")
    for i, name in enumerate(chosen):
        download, scripts = PHASE_TEXT[name]
        text += _PHASES.format(tool=name, download=download, scripts=scripts, env_example=ENV_EXAMPLE[name],
                               registries=", ".join(REGISTRIES[name]),
                               pad1=" " * max(1, 18 - len(name)), pad2=" " * max(1, 19 - len(name)))
        text += _MORE if i == 0 else ""
    return text + _DEFAULT.format(other=OTHER[chosen[0]]) + _DISPATCH


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
            f.write(render(ecosystems, cwd))
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
    suggested = example(cwd, ecosystems[0]) if ecosystems else "npm install"
    print(f"next: review it, then run `sbox plan -- {suggested}` to see what would run, and where")
    return 0
