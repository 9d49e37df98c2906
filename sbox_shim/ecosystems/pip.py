"""pip: install in two phases — download to a wheelhouse through the allowlist, then install offline.

`pip download` of a source distribution runs its build backend to learn its dependencies, so the
download phase is not script-free: it runs with the registry allowlist only, no credentials but the
index's, and an empty HOME. The install phase (where setup.py builds run for real) has no network.
The download phase is one process (pip_fetch.py: sbox's own pip, in-process), which afterwards
fetches the build requirements of the sdists it downloaded, so that they build offline.

Installing a wheel runs no package code, so an install into a venv whose pip is sbox's own first
tries one phase (pip_install.py): sbox's own pip, with the network, installs into the venv as the
venv's pip would, if every distribution the resolver picks is a wheel; it leaves before preparing
anything else, having written nothing, and the two phases run (pip_run.py decides, between steps).
A wheel-only install thus costs one pip process and one sandbox.

The environment pip runs in: when the real pip belongs to a virtual environment (its directory
holds `pyvenv.cfg`), the base interpreter named by `home =` is mounted read-only (the venv's
`python` is a link to it), and the venv itself is writable in the install phase only: it is what
`pip install` writes to. Installing into an interpreter that is not a venv would write into the
toolchain (read-only) or the sandbox's throwaway HOME: refused before running, unless it installs
into a directory of the project (`--target`, `--prefix`, `--root`).

What each phase may write of the project (layout.py): nothing, but a venv inside it (the install
phase) and, for `pip download` / `pip wheel`, the destination directory (`-d` / `-w`, else the
working directory). Installing a local project (`pip install .`, `-e .`, a path inside the
project) builds in its tree (`build/`, `*.egg-info`): those steps keep the project writable (but
the protected paths).
"""
from __future__ import annotations

import configparser
import json
import os
import shlex

from sbox_shim.ecosystems import (Context, Phase, cache_mount, local_path, project_cache, read_text, sandbox_writable,
                                  url_entry)
from sbox_shim.ecosystems.pip_args import (TARGET_OPTIONS, destination, download_args, index_args, local_project,
                                           one_phase)
from sbox_shim.ecosystems.pip_index import index_root
from sbox_shim.ecosystems.pip_run import DONE, fell_back
from sbox_shim.ecosystems.pip_venv import environment, fetcher, installer, writable_venv
from sbox_shim.configs import SYSTEM as SYSTEM_CONFIGS
from sbox_shim.layout import in_toolchain
from sbox_shim.ecosystems.pip_venv import _base_prefixes as _base_prefixes  # noqa: F401 (uv.py uses it)
from sbox_shim.errors import UsageError
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

TOOLS = ("pip", "pip3")
INSTALL = ("install", "download", "wheel")
URL_KEYS = ("index-url", "extra-index-url")
PATH_KEYS = ("find-links", "cert", "client-cert", "constraint", "requirement")
INDEX_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
# Command-line options naming an index or a local path, and the setting each one stands for.
_OPTION_KEYS = {"-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url",
                "-f": "find-links", "--find-links": "find-links", "--cert": "cert",
                "--client-cert": "client-cert", "-c": "constraint", "--constraint": "constraint",
                "-r": "requirement", "--requirement": "requirement"}


def config_files(ctx: Context, venv: str | None = None) -> list[str]:
    """The config files pip reads, as pip decides: global, user (unless PIP_CONFIG_FILE names an
    existing file, /dev/null included), site (the venv's), then PIP_CONFIG_FILE."""
    env = ctx.env
    explicit = env.get("PIP_CONFIG_FILE")
    xdg_dirs = (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs if d] + ["/etc/pip.conf"]
    if not (explicit and os.path.exists(explicit)):
        xdg = env.get("XDG_CONFIG_HOME") or os.path.join(ctx.home, ".config")
        files += [os.path.join(ctx.home, ".pip", "pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
    for prefix in dict.fromkeys(p for p in (venv, env.get("VIRTUAL_ENV")) if p):
        files.append(os.path.join(prefix, "pip.conf"))
    if explicit:
        files.append(explicit)
    return [f for f in dict.fromkeys(files) if os.path.isfile(f)]


def _from_config(path: str, found: dict[str, list[str]]) -> None:
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(read_text(path), source=path)
    except configparser.Error:
        return
    for section in parser.sections():
        for key in URL_KEYS + PATH_KEYS:
            if parser.has_option(section, key):
                found.setdefault(key, []).extend(parser.get(section, key).split())


def _from_argv(args: list[str], found: dict[str, list[str]]) -> None:
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in _OPTION_KEYS:
            if not eq:
                if i + 1 >= len(args):
                    continue
                value = args[i + 1]
            found.setdefault(_OPTION_KEYS[name], []).append(value)
        elif arg.startswith("-i") and len(arg) > 2 and not arg.startswith("--"):
            found.setdefault("index-url", []).append(arg[2:])


def _from_requirements(path: str, cwd: str, found: dict[str, list[str]], depth: int = 0,
                       files: list[str] | None = None) -> None:
    """Index options written inside a requirements file (`--index-url`, `-f`, nested `-r`); `files`
    collects each requirements file read. Read only if it is a regular file (never a FIFO or a
    device a project names), with a size cap."""
    path = os.path.join(cwd, path)
    if files is not None:
        files.append(os.path.normpath(path))
    words = []
    for line in option_lines(read_text(path)):
        try:
            words += shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote: pip would refuse the file too
            continue
    nested: dict[str, list[str]] = {}
    _from_argv(words, nested)
    for key, values in nested.items():
        if key in ("requirement", "constraint"):
            if depth < 5:
                for value in values:
                    _from_requirements(value, os.path.dirname(path), found, depth + 1, files)
            continue
        found.setdefault(key, []).extend(values)


def option_lines(text: str) -> list[str]:
    """The lines of a requirements file that are options (`-i URL`, `-r FILE`, `--find-links …`):
    what decides where pip looks, hence what needs the user's trust."""
    lines = [ln.split(" #")[0].strip().lstrip("\ufeff\u200b\u2060 \t") for ln in text.splitlines()]
    return [ln for ln in lines if ln.startswith("-")]


def settings(ctx: Context, args: Sequence[str] = (), venv: str | None = None) -> dict[str, list[str]]:
    """The URL and path settings pip would use: config files, PIP_* variables, the command line
    and the requirements files it names."""
    user, project, _ = sources(ctx, args, venv)
    return {k: user.get(k, []) + project.get(k, []) for k in dict.fromkeys([*user, *project])}


def sources(ctx: Context, args: Sequence[str] = (),
            venv: str | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(what the user's own settings say, what files a sandbox could have written say, those
    requirements files). The user's: config files outside the project, venv and sbox's caches,
    PIP_* variables, the command line. The others: a venv's pip.conf, requirements files (whose
    option lines need trust, and whose names are never explicit allow entries)."""
    user: dict[str, list[str]] = {}
    project: dict[str, list[str]] = {}
    for path in config_files(ctx, venv):
        _from_config(path, project if sandbox_writable(path, ctx, *([venv] if venv else [])) else user)
    for key in URL_KEYS + PATH_KEYS:
        value = ctx.env.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            user.setdefault(key, []).extend(value.split())
    _from_argv(list(args), user)
    files: list[str] = []
    for found in (user, dict(project)):
        for requirements in list(found.get("requirement", [])) + list(found.get("constraint", [])):
            _from_requirements(requirements, ctx.cwd, project, files=files)
    return user, project, list(dict.fromkeys(files))


def _pip_variables(ctx: Context, index: bool) -> tuple[str, ...]:
    """The caller's PIP_* settings pass through; the index URLs (which may hold credentials) and the
    config file that names them reach the download phase only."""
    skip = () if index else INDEX_ENV + ("PIP_CONFIG_FILE", "PIP_CLIENT_CERT")
    return tuple(sorted(k for k in ctx.env if k.startswith("PIP_") and k not in skip))


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    sub = next((a for a in argv[1:] if not a.startswith("-")), "")
    if sub not in INSTALL:
        return None
    rest = list(argv[argv.index(sub) + 1:])
    venv, bases = environment(ctx)
    # where the install writes: the venv, or a directory of the project it is told (`--target`, with
    # or without a venv: a venv's pip given --target wrote nothing, its directory read-only)
    into = _outside_venv(rest, ctx) if sub == "install" and not venv else _into(rest, ctx) if sub == "install" else ()
    user, project, _ = sources(ctx, rest, venv)
    found = {k: user.get(k, []) + project.get(k, []) for k in dict.fromkeys([*user, *project])}
    urls = [u for k in URL_KEYS for u in found.get(k, [])]
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["pip"] + _entries(user)))
    implied = tuple(e for e in dict.fromkeys(_entries(project)) if e not in allow)
    local = [p for k in PATH_KEYS for v in found.get(k, []) for p in [local_path(v)] if p]
    local += [index_root(p, ctx.home, ctx.project_root) for u in urls for p in [local_path(u)] if p and os.path.isdir(p)]
    readonly = [Mount(p, p) for p in dict.fromkeys(local) if os.path.exists(p) and not in_toolchain(p)]
    readonly += bases
    # A client certificate holds its private key: a credential, for the network phases alone.
    keys = {p for v in found.get("client-cert", []) for p in [local_path(v)] if p}
    offline_readonly = [m for m in readonly if m.source not in keys]
    # the machine's own are the phase's `configs` (configs.SYSTEM): those in /etc copied in, not bound
    configs = [Mount(f, f) for f in config_files(ctx, venv) if not in_toolchain(f) and f not in SYSTEM_CONFIGS]
    # The wheelhouse is this run's own (scratch.py): made empty for it, removed after it, so a wheel
    # a hostile sdist planted in one run's download phase is never installed by a later run.
    wheelhouse = os.path.join(ctx.cache_dir, "pip", "runs")
    cache = os.path.join(project_cache(ctx, "pip"), "http")  # writable where sdists build: this project's alone
    env = {"PIP_CACHE_DIR": cache, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    target = [Mount(venv, venv, readonly=True)] if venv else []
    fetch, own, fetch_env = fetcher(venv, argv[0], ctx)
    if sub == "download":  # already download-only: one phase with the allowlist
        return (Phase("download", (*fetch, *argv[1:]), True, allow, {**env, **fetch_env},
                      secrets=_pip_variables(ctx, True), implied=implied,
                      mounts=(cache_mount(cache, True), *readonly, *configs, *target, *own),
                      reason="built-in pip policy: download runs with the registry allowlist",
                      writable=destination(rest, ("-d", "--dest", "--destination-dir"), ctx),
                      configs=("pip.conf",)),)
    if venv:  # sbox's fetch step also fetches the build requirements of the sdists it downloaded
        fetch_env["SBOX_PIP_BUILD_ARGS"] = json.dumps(index_args(rest, binary=True))
    download = Phase(
        "download", (*fetch, "download", "--dest", wheelhouse, *download_args(rest)), True, allow,
        {**env, **fetch_env}, secrets=_pip_variables(ctx, True), implied=implied,
        mounts=(cache_mount(cache, True), Mount(wheelhouse, wheelhouse, readonly=False, kind="run"), *readonly,
                *configs, *target, *own),
        reason="built-in pip policy: download to a wheelhouse through the allowlist "
               "(with the build requirements of the sdists, when the index has them)",
        writable=(), configs=("pip.conf",),
    )
    if venv and sub == "install":
        target = list(writable_venv(venv))  # the install's destination
    # an install into the venv compiles its bytecode there, as pip does directly (build.py turns
    # pip's compiling off elsewhere in a sandbox)
    compiles = {"PIP_COMPILE": ctx.env.get("PIP_COMPILE", "true")} if venv and sub == "install" and not into else {}
    offline = Phase(
        "scripts", (argv[0], sub, "--no-index", "--find-links", wheelhouse, *rest), False, (),
        {**env, **compiles, "PIP_NO_INDEX": "1"}, secrets=_pip_variables(ctx, False),
        # pip's cache, empty and thrown away: some pips fail a build where PIP_CACHE_DIR cannot be made
        mounts=(Mount(wheelhouse, wheelhouse, kind="run"), Mount("", cache, readonly=False, kind="tmpfs"),
                *offline_readonly, *target),
        reason=f"built-in pip policy: then {sub} offline from the wheelhouse (builds run with the network off)",
        writable=True if local_project(rest, ctx) else
        destination(rest, ("-w", "--wheel-dir"), ctx) if sub == "wheel" else into,
    )
    one = installer(venv, ctx) if venv and sub == "install" and one_phase(rest, ctx) else None
    if one is None:
        return (download, offline)
    # Every distribution a wheel: sbox's own pip installs them into the venv in this one network
    # phase (no package code runs there); else it leaves, and the two phases run (pip_run.py).
    step, own, step_env = one
    hook, when = ("pip", wheelhouse, fell_back(ctx, argv)), "; only if step 1 did not install"
    first = Phase(
        "download", (*step, sub, *rest), True, allow,
        {**env, **step_env, **compiles, "SBOX_PIP_DONE": os.path.join(wheelhouse, DONE)},
        secrets=_pip_variables(ctx, True),
        implied=implied, mounts=(cache_mount(cache, True), Mount(wheelhouse, wheelhouse, readonly=False, kind="run"),
                                 *readonly, *configs, *target, *own),
        reason="built-in pip policy: sbox's own pip installs in this one phase when every distribution is a "
               "wheel (no package code runs); else the two phases below",
        writable=(), hook=hook, configs=("pip.conf",),
    )
    return (first, download.replace(hook=hook, reason=download.reason + when),
            offline.replace(hook=hook, reason=offline.reason + when))


def _outside_venv(rest: list[str], ctx: Context) -> tuple[str, ...]:
    """An install without a venv writes into the sandbox's throwaway HOME (`--user`, a pyenv
    interpreter's own site-packages are read-only): refused before it runs, unless it installs into
    a directory of the project (`--target`, `--prefix`, `--root`), which is then what it may write.
    `--dry-run` writes nothing."""
    if "--dry-run" in rest:
        return ()
    into = destination(rest, TARGET_OPTIONS, ctx) if any(a.split("=", 1)[0] in TARGET_OPTIONS for a in rest) else ()
    if into is True or not into:
        raise UsageError("pip install outside a virtual environment would install into the sandbox's throwaway "
                         "HOME, not your Python: create and activate a venv (python3 -m venv .venv && "
                         ". .venv/bin/activate), or install with --target DIR inside the project")
    return into


def _into(rest: list[str], ctx: Context) -> tuple[str, ...]:
    """The project directory `--target`, `--prefix` or `--root` names, if one does."""
    if not any(a.split("=", 1)[0] in TARGET_OPTIONS for a in rest):
        return ()
    into = destination(rest, TARGET_OPTIONS, ctx)
    return into if isinstance(into, tuple) else ()


def _entries(found: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(e for k in URL_KEYS for u in found.get(k, []) for e in [url_entry(u)] if e)


def inputs(argv: tuple[str, ...], ctx: Context) -> list[tuple[str, str, str]]:
    """The files this command's plan would be made from that a sandbox could have written, as
    (path, what it is, which part decides): a venv's pip.conf, requirements files' option lines."""
    sub = next((a for a in argv[1:] if not a.startswith("-")), "")
    if sub not in INSTALL:
        return []
    rest = list(argv[argv.index(sub) + 1:])
    venv, _ = environment(ctx)
    extra = [venv] if venv else []
    out = [(f, "pip config", "all") for f in config_files(ctx, venv) if sandbox_writable(f, ctx, *extra)]
    out += [(f, "requirements file (its option lines)", "options") for f in sources(ctx, rest, venv)[2]
            if sandbox_writable(f, ctx, *extra)]
    return out
