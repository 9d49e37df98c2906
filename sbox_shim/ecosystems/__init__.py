"""Built-in policy per ecosystem, used when the project's own dispatch does not match.

Each module exposes `TOOLS` (the command names it serves) and
`phases(argv, ctx) -> tuple[Phase, ...] | None`: None passes the command through unchanged
(it runs in the project's default profile); otherwise each Phase becomes one sandboxed step.
"""
from __future__ import annotations

import os
import re

from sbox_shim.plan import Mount, Value

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import (npm's run-time
if TYPE_CHECKING:  # hook, npm_run.py, is in this package and loads before an install's first step)
    from types import ModuleType
    from typing import Collection, Mapping, Sequence

    from sbox_shim.plan import File


class Context(Value):
    """What an ecosystem may look at: all of it gathered by the caller."""

    __slots__ = ("cwd", "project_root", "home", "env", "cache_dir", "real_tool")
    cwd: str
    project_root: str
    home: str
    env: Mapping[str, str]
    cache_dir: str  # sbox's own cache root; each ecosystem takes a subdirectory
    real_tool: str | None

    def __init__(self, cwd: str, project_root: str, home: str, env: Mapping[str, str], cache_dir: str,
                 real_tool: str | None) -> None:
        self._set(cwd=cwd, project_root=project_root, home=home, env=env, cache_dir=cache_dir, real_tool=real_tool)


class Phase(Value):
    __slots__ = ("label", "argv", "network", "allow", "env", "secrets", "mounts", "files", "reason", "implied",
                 "credentials", "writable", "hook", "configs")
    label: str  # download | scripts | run
    argv: tuple[str, ...]
    network: bool
    allow: tuple[str, ...]  # the registries the user's own settings name
    env: Mapping[str, str]  # set inside (tool config, caches)
    secrets: tuple[str, ...]  # caller variables passed through in this phase only
    mounts: tuple[Mount, ...]
    files: tuple[File, ...]  # generated files, e.g. an empty file masking a credentials file
    reason: str
    implied: tuple[str, ...]  # names from project files: admitted, but never as explicit entries
    credentials: tuple[str, ...]  # credential files among the mounts, chosen by sbox for this phase
    # What of the project the phase writes: True (all but the protected paths), or its outputs,
    # project-relative, a trailing "/" for a directory (see layout.py). Only a built-in phase's
    # own value counts; a command that runs as given takes its profile's `writable`.
    writable: bool | tuple[str, ...]
    hook: tuple[str, ...]  # decided at run time, between the steps (hooks.py)
    # The machine's own configs the phase reads as they are, credentials included ("npmrc",
    # "pip.conf", "gitconfig": redact.py); every other phase reads them without credentials.
    configs: tuple[str, ...]

    def __init__(self, label: str, argv: tuple[str, ...], network: bool, allow: tuple[str, ...] = (),
                 env: Mapping[str, str] | None = None, secrets: tuple[str, ...] = (), mounts: tuple[Mount, ...] = (),
                 files: tuple[File, ...] = (), reason: str = "", implied: tuple[str, ...] = (),
                 credentials: tuple[str, ...] = (), writable: bool | tuple[str, ...] = True,
                 hook: tuple[str, ...] = (), configs: tuple[str, ...] = ()) -> None:
        self._set(label=label, argv=argv, network=network, allow=allow, env={} if env is None else env,
                  secrets=secrets, mounts=mounts, files=files, reason=reason, implied=implied,
                  credentials=credentials, writable=writable, hook=hook, configs=configs)


def read_text(path: str) -> str:
    """A config file's text, or "" when it is missing, unreadable or not a regular file."""
    from sbox_shim.trust.files import read_text as safe_read

    return safe_read(path)


def sandbox_writable(path: str, ctx: Context, *more: str) -> bool:
    """Could a sandbox have written `path`: it lies in the project, in sbox's caches or in one of
    `more` (a venv). Such a file decides nothing unless the user trusted its content."""
    from sbox_shim.lean import inside

    path = os.path.abspath(path)
    return any(inside(path, a) for a in (ctx.project_root, ctx.cache_dir, *more) if a)


def url_entry(url: str) -> str | None:
    """The allowlist entry for a registry URL the user configured: `host` or `host:port`."""
    split = url_parts(url.strip().removeprefix("sparse+"))
    if split is None:
        return None
    scheme, hostname, port = split
    host = f"[{hostname}]" if ":" in hostname else hostname.rstrip(".")
    default = 443 if scheme == "https" else 80
    entry = f"{host}:{port}" if port and port != default else host
    from sbox_shim.registries import parse_entry

    try:
        parse_entry(entry)
    except ValueError:  # not a name the allowlist can hold: nothing is admitted for it
        return None
    return entry


# the common shape of a registry URL: a name of letters, digits, dots and hyphens, a port of digits
_PLAIN_URL = re.compile(r"(https?)://([a-z0-9.-]+)(?::([0-9]+))?(?:[/?#][^\s\\]*)?", re.I | re.ASCII)


def url_parts(text: str) -> tuple[str, str, int | None] | None:
    """(scheme, host name, port) of an http(s) URL, as urllib.parse reads them; None when it
    has none of those schemes, no host, or a port out of range. A URL of the common shape is read
    here: urllib.parse and the ipaddress it loads cost several milliseconds of every plan."""
    plain = _PLAIN_URL.fullmatch(text)
    if plain is not None:
        port = None if plain[3] is None else int(plain[3])
        return None if port is not None and port > 65535 else (plain[1].lower(), plain[2].lower(), port)
    return urllib_parts(text)


def urllib_parts(text: str) -> tuple[str, str, int | None] | None:
    """url_parts by urllib.parse, for every URL."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        return parts.scheme, parts.hostname, parts.port
    except ValueError:  # "http://[::1/", a port out of range and the like: nothing to admit
        return None


def local_path(url: str) -> str | None:
    """The directory a `file://` URL or a plain path names, if it is local."""
    url = url.strip()
    if url.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(url).path) or None
    return url if url.startswith("/") else None


def subcommand(argv: Sequence[str], takes_value: Collection[str], flag_prefixes: tuple[str, ...] = ("-",)) -> str:
    """The first word after the tool that is not an option (nor the value of one in takes_value)."""
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith(flag_prefixes):
            return arg
    return ""


def cache_mount(path: str, writable: bool) -> Mount:
    """sbox's own cache directory for a tool: created by the runner before the step starts."""
    return Mount(path, path, readonly=not writable, kind="cache")


def project_cache(ctx: Context, tool: str) -> str:
    """sbox's cache of `tool` for this project alone: a subdirectory keyed by the project root's real
    path. A step that writes its cache (where sdists' build backends run) writes only what this
    project installs from, never another project's."""
    from sbox_shim.kept import digest  # the built-in SHA-256: hashlib loads OpenSSL

    key = digest(os.path.realpath(ctx.project_root).encode())[:16]
    return os.path.join(ctx.cache_dir, tool, key)


# Which module serves which tool: a table, so a command imports only its own ecosystem.
MODULES = {"npm": "npm", "npx": "npm", "pnpm": "npm", "yarn": "npm", "pip": "pip", "pip3": "pip",
           "cargo": "cargo", "go": "go", "uv": "uv"}


def _module(tool: str) -> ModuleType | None:
    if tool not in MODULES:
        return None
    import importlib

    return importlib.import_module(f"sbox_shim.ecosystems.{MODULES[tool]}")


def tools() -> tuple[str, ...]:
    return tuple(MODULES)


def inputs(argv: Sequence[str], ctx: Context) -> list[tuple[str, str, str]]:
    """The tool configuration a sandbox could have written that this command's plan would read,
    as (path, what it is, which part decides: all | options)."""
    module = _module(os.path.basename(argv[0])) if argv else None
    if module is None or not hasattr(module, "inputs"):
        return []
    return list(module.inputs(tuple(argv), ctx))


def phases(argv: Sequence[str], ctx: Context) -> tuple[Phase, ...] | None:
    if not argv:
        return None
    module = _module(os.path.basename(argv[0]))
    if module is None:
        return None
    result: tuple[Phase, ...] | None = module.phases(tuple(argv), ctx)
    return result
