"""uv: `uv pip install|sync`, `uv sync`, `uv add`, `uv remove`, `uv lock` and `uv run`.

uv has no download-only mode: it resolves, downloads, builds and installs in one process. So each
install-family command is one sandboxed step with the registry allowlist (PyPI, plus the indexes
the user configured), the way pip's download phase runs: sdists' build backends run there, with no
credentials but the index's and an empty HOME.
`uv run` syncs that way, then runs its command with the network off (`--no-sync --offline`).
uv replaces `uv.lock` and `pyproject.toml` through a temporary file beside them, so its project
commands write the project (but the protected paths: `.git`, `sbox.yaml`, ...); `uv pip install`
writes only the venv (and a local project it builds).

The index: UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_DEFAULT_INDEX, UV_INDEX, UV_FIND_LINKS, the
command line, the user's uv.toml (`~/.config/uv/uv.toml`, `/etc/uv/uv.toml`, UV_CONFIG_FILE);
those join the allowlist. The project's own `uv.toml` and `[tool.uv]` of its `pyproject.toml` are
files a sandbox could write: their names are admitted as implied entries only, and the files need
the user's trust (`inputs`). uv does not read pip's configuration.

sbox's uv cache (`UV_CACHE_DIR`) is one per project (`project_cache`): a step, where sdists' build
backends run, writes only its own project's cache, never one another project installs from. It is
writable in the network step only, and uv copies from it
(`UV_LINK_MODE=copy`): a hard link would let a later sandbox that writes the venv change the cache
every project installs from. uv never downloads a Python here (`UV_PYTHON_DOWNLOADS=never`).
"""
from __future__ import annotations

import os
import re

from sbox_shim.ecosystems import (Context, Phase, cache_mount, local_path, project_cache, read_text,
                                  sandbox_writable, subcommand, url_entry)
from sbox_shim.ecosystems.pip_venv import writable_venv
from sbox_shim.environment import is_secret
from sbox_shim.errors import UsageError
from sbox_shim.layout import in_toolchain
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

TOOLS = ("uv",)
PROJECT = {"sync", "add", "remove", "lock"}
PIP = {"install", "sync"}
INDEX_ENV = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS")
# Options that take a value, before or after the subcommand.
_VALUES = {"--directory", "--project", "--config-file", "--cache-dir", "--python", "-p", "--color",
           "--index-url", "-i", "--extra-index-url", "--default-index", "--index", "--find-links", "-f",
           "--with", "--with-requirements", "--with-editable", "--group", "--only-group", "--extra", "--package",
           "-r", "--requirement", "-c", "--constraint", "--override", "--target", "--prefix", "-o", "--output-file",
           "--index-strategy", "--keyring-provider", "--resolution", "--prerelease", "--exclude-newer",
           "--link-mode", "--config-setting", "-C", "--python-platform", "--python-version", "--env-file",
           "--upgrade-package", "-P", "--reinstall-package", "--no-build-package", "--no-binary-package",
           "--only-binary", "--no-binary", "--optional", "--dev-group", "--script", "--tag", "--branch", "--rev",
           "--marker", "-m", "--bounds", "--module"}
_INDEX_OPTIONS = {"--index-url": "index", "-i": "index", "--extra-index-url": "index", "--default-index": "index",
                  "--index": "index", "--find-links": "links", "-f": "links"}
# `uv run` options that decide what its sync installs: passed on to the `uv sync` step.
_SYNC_FLAGS = {"--frozen", "--locked", "--all-extras", "--no-dev", "--all-groups", "--no-default-groups",
               "--all-packages", "--no-editable", "--exact", "--only-dev", "--isolated"}
_SYNC_VALUES = {"--extra", "--group", "--only-group", "--package", "--python", "-p"}
_URL = re.compile(r"""^\s*(?:(?:extra-)?index-url|default-index|url|git|find-links)\s*=\s*["']([^"']+)["']""", re.M)


def _words(argv: Sequence[str]) -> list[str]:
    """The words that are not options nor an option's value: the subcommands and positionals."""
    out, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in _VALUES:
            skip = True
        elif arg == "--":
            break
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def config_files(ctx: Context) -> tuple[list[str], list[str]]:
    """(the user's uv.toml files, the project's uv.toml and pyproject.toml from cwd up to the root)."""
    env = ctx.env
    user = [os.path.join(d, "uv", "uv.toml") for d in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    user += ["/etc/uv/uv.toml", os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(ctx.home, ".config"),
                                             "uv", "uv.toml")]
    if env.get("UV_CONFIG_FILE"):
        user.append(env["UV_CONFIG_FILE"])
    project, here = [], ctx.cwd
    while True:
        project += [os.path.join(here, n) for n in ("uv.toml", "pyproject.toml")]
        if here == ctx.project_root or os.path.dirname(here) == here or not here.startswith(ctx.project_root):
            break
        here = os.path.dirname(here)
    if env.get("UV_NO_CONFIG"):
        user, project = user[-1:] if env.get("UV_CONFIG_FILE") else [], []
    ours = [f for f in user + project if os.path.isfile(f) and sandbox_writable(f, ctx)]
    return [f for f in dict.fromkeys(user) if os.path.isfile(f) and f not in ours], list(dict.fromkeys(ours))


def _file_urls(path: str) -> list[str]:
    """The index, find-links and source URLs a uv.toml or a pyproject's [tool.uv] names."""
    text = read_text(path)
    if path.endswith("pyproject.toml"):
        text = tool_uv(text)
    return _URL.findall(text)


def tool_uv(text: str) -> str:
    """The [tool.uv…] tables of a pyproject.toml: what in it decides where uv connects."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("["):
            name = line.strip().lstrip("[").split("]")[0].strip()
            inside = name == "tool.uv" or name.startswith("tool.uv.")
        if inside:
            out.append(line)
    return "\n".join(out)


def _user_urls(argv: Sequence[str], ctx: Context, files: list[str]) -> list[str]:
    urls = [u for f in files for u in _file_urls(f)]
    for name in INDEX_ENV:
        urls += [w.split("=", 1)[-1] if "=" in w and "://" in w.split("=", 1)[-1] else w
                 for w in ctx.env.get(name, "").split()]
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in _INDEX_OPTIONS:
            value = value if eq else argv[i + 1] if i + 1 < len(argv) else ""
            urls.append(value.split("=", 1)[-1] if "=" in value and "://" in value.split("=", 1)[-1] else value)
    return urls


def _entries(urls: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e for e in map(url_entry, urls) if e))


def inputs(argv: tuple[str, ...], ctx: Context) -> list[tuple[str, str, str]]:
    """The project's uv settings a sandbox could have written: its uv.toml, its [tool.uv]."""
    if _kind(argv) is None:
        return []
    _, ours = config_files(ctx)
    return [(f, "uv settings ([tool.uv])", "tool.uv") if f.endswith("pyproject.toml") else (f, "uv config", "all")
            for f in ours]


def _kind(argv: Sequence[str]) -> str | None:
    words = _words(argv)
    if not words:
        return None
    if words[0] == "pip" and len(words) > 1 and words[1] in PIP:
        return "pip"
    if words[0] in PROJECT or words[0] == "run":
        return words[0]
    return None


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    kind = _kind(argv)
    if kind is None:
        return None
    user, ours = config_files(ctx)
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["pip"] + _entries(_user_urls(argv, ctx, user))))
    implied = tuple(e for e in _entries([u for f in ours for u in _file_urls(f)]) if e not in allow)
    local = [p for u in _user_urls(argv, ctx, user) for p in [local_path(u)] if p and os.path.exists(p)]
    readonly = [Mount(p, p) for p in dict.fromkeys(local) if not in_toolchain(p)]
    readonly += [Mount(f, f) for f in user if not in_toolchain(f)]
    cache = project_cache(ctx, "uv")
    env = {"UV_CACHE_DIR": cache, "UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    pythons = ctx.env.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        ctx.env.get("XDG_DATA_HOME") or os.path.join(ctx.home, ".local", "share"), "uv", "python")
    if os.path.isdir(pythons) and not sandbox_writable(pythons, ctx):  # uv-managed interpreters, read-only
        env["UV_PYTHON_INSTALL_DIR"] = pythons
        readonly.append(Mount(pythons, pythons))
    venv = _pip_venv(argv, ctx) if kind == "pip" else _project_venv(ctx)
    writes: list[str] = []
    if venv:
        readonly += _bases(venv, ctx)
        if sandbox_writable(venv, ctx) and venv.startswith(ctx.project_root.rstrip("/") + "/"):
            writes.append(os.path.relpath(venv, ctx.project_root) + "/")
        else:
            readonly += writable_venv(venv)
        if kind == "pip":
            env["VIRTUAL_ENV"] = venv
    # uv replaces uv.lock and pyproject.toml through a temporary file beside them: a project command
    # writes the project (but the protected paths); `uv pip install` the venv, or a local project it builds.
    whole = kind != "pip" or _local_project(argv, ctx)
    variables = tuple(sorted(k for k in ctx.env if k.startswith("UV_")))
    fetch = (argv[0], "sync", "--inexact", *_sync_options(argv)) if kind == "run" else argv
    download = Phase(
        "download", fetch, True, allow, env, secrets=variables, implied=implied,
        mounts=(cache_mount(cache, True), *readonly),
        reason="built-in uv policy: uv resolves, downloads and builds in one step (it has no download-only "
               "mode), with only the registries reachable",
        writable=True if whole else tuple(dict.fromkeys(writes)),
    )
    if kind != "run":
        return (download,)
    offline = _run(argv, env, readonly, ctx)
    return (offline,) if _no_sync(argv, ctx) else (download, offline)


def _run(argv: tuple[str, ...], env: dict[str, str], readonly: list[Mount], ctx: Context) -> Phase:
    """`uv run`'s command, offline: the synced venv as it is, an empty cache, no index settings."""
    plain = tuple(sorted(k for k in ctx.env if k.startswith("UV_") and k not in INDEX_ENV
                         and not k.startswith("UV_INDEX") and not is_secret(k) and k != "UV_CONFIG_FILE"))
    at = argv.index("run")
    command = (*argv[:at + 1], "--no-sync", "--offline", *argv[at + 1:])
    # The interpreters and a venv outside the project (read-only now); not the user's uv.toml.
    mounts = tuple(Mount(m.source, m.target) for m in readonly if not m.source.endswith("uv.toml"))
    return Phase("scripts", command, False, (), {**env, "UV_OFFLINE": "1"}, secrets=plain,
                 mounts=(Mount("", env["UV_CACHE_DIR"], readonly=False, kind="tmpfs"), *mounts),
                 reason="built-in uv policy: then runs the command with the network off (uv run --no-sync)",
                 writable=True)


def _run_options(argv: Sequence[str]) -> list[str]:
    """The options of `uv run` before its command."""
    out, skip = [], False
    for arg in argv[argv.index("run") + 1:]:
        if not skip and not arg.startswith("-"):
            break
        out.append(arg)
        skip = not skip and arg in _VALUES
    return out


def _no_sync(argv: Sequence[str], ctx: Context) -> bool:
    """`uv run` that syncs nothing: told so, a script's own environment, or no uv project here."""
    options = _run_options(argv)
    return (any(a in ("--no-sync", "--no-project") or a.startswith("--script") for a in options)
            or not os.path.isfile(os.path.join(_uv_project(ctx), "pyproject.toml")))


def _sync_options(argv: Sequence[str]) -> list[str]:
    """The options of `uv run` (before its command) that decide what its sync installs."""
    out, words = [], list(argv[argv.index("run") + 1:])
    i = 0
    while i < len(words):
        arg = words[i]
        name = arg.split("=", 1)[0]
        if not arg.startswith("-"):
            break
        if arg in _SYNC_FLAGS:
            out.append(arg)
        elif name in _SYNC_VALUES:
            out += [arg] if "=" in arg else words[i:i + 2]
        if arg in _VALUES:
            i += 1
        i += 1
    return out


def _uv_project(ctx: Context) -> str:
    """The uv project: the nearest directory with a pyproject.toml from cwd up to the root."""
    here = ctx.cwd
    while here != ctx.project_root and here.startswith(ctx.project_root.rstrip("/") + "/") \
            and not os.path.isfile(os.path.join(here, "pyproject.toml")):
        here = os.path.dirname(here)
    return here if here.startswith(ctx.project_root) else ctx.project_root


def _project_venv(ctx: Context) -> str:
    chosen = ctx.env.get("UV_PROJECT_ENVIRONMENT")
    root = _uv_project(ctx)
    return os.path.normpath(os.path.join(root, chosen)) if chosen else os.path.join(root, ".venv")


def _pip_venv(argv: Sequence[str], ctx: Context) -> str | None:
    """The environment `uv pip` installs into, as uv finds it: `--python` naming a venv's
    interpreter (or the venv), VIRTUAL_ENV, else the nearest `.venv`. None when --target/--prefix
    says where; no venv: refused, with what to do."""
    if any(a.split("=", 1)[0] in ("--target", "--prefix") for a in argv):
        return None
    candidates = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--python", "-p"):
            value = value if eq else argv[i + 1] if i + 1 < len(argv) else ""
            path = os.path.join(ctx.cwd, value)
            found = [c for c in (path, os.path.dirname(os.path.dirname(path)))
                     if "/" in value and os.path.isfile(os.path.join(c, "pyvenv.cfg"))]
            if not found:
                raise UsageError(f"uv pip --python {value}: sbox installs into a virtual environment only (the "
                                 "toolchain is read-only in the sandbox); name a venv's python, or create one: uv venv")
            candidates.append(found[0])
    if "--system" in argv:
        raise UsageError("uv pip --system: sbox installs into a virtual environment only (the toolchain is "
                         "read-only in the sandbox); activate one, or create it: uv venv")
    if ctx.env.get("VIRTUAL_ENV"):
        candidates.append(ctx.env["VIRTUAL_ENV"])
    here = ctx.cwd
    while True:
        candidates.append(os.path.join(here, ".venv"))
        if os.path.dirname(here) == here:
            break
        here = os.path.dirname(here)
    for venv in candidates:
        if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
            return os.path.normpath(venv)
    raise UsageError("uv pip install: no virtual environment here (VIRTUAL_ENV or a .venv); create one "
                     "with `uv venv`, as uv itself asks")


def _bases(venv: str, ctx: Context) -> tuple[Mount, ...]:
    cfg = os.path.join(venv, "pyvenv.cfg")
    if not os.path.isfile(cfg):
        return ()
    from sbox_shim.ecosystems.pip import _base_prefixes

    return _base_prefixes(cfg, ctx)


def _local_project(argv: Sequence[str], ctx: Context) -> bool:
    """`uv pip install .` / `-e .` / a directory of the project: its build writes its tree."""
    for arg in argv:
        word = arg.split("=", 1)[1] if arg.startswith("--editable=") else arg
        if word.startswith("-") or not word.startswith((".", "/")):
            continue
        path = os.path.normpath(os.path.join(ctx.cwd, word.split("[", 1)[0]))
        if (path + "/").startswith(ctx.project_root.rstrip("/") + "/") and os.path.isdir(path):
            return True
    return False
