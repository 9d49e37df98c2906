"""pip: install in two phases — download to a wheelhouse through the allowlist, then install offline.

`pip download` of a source distribution runs its build backend to learn its dependencies, so the
download phase is not script-free: it runs with the registry allowlist only, no credentials but the
index's, and an empty HOME. The install phase (where setup.py builds run for real) has no network.
"""
from __future__ import annotations

import configparser
import hashlib
import os

from sbox_shim.ecosystems import Context, Phase, cache_mount, local_path, url_entry
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("pip", "pip3")
INSTALL = ("install", "download", "wheel")
URL_KEYS = ("index-url", "extra-index-url")
PATH_KEYS = ("find-links", "cert", "client-cert", "constraint", "requirement")
INDEX_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
BUILD_REQUIREMENTS = ("setuptools", "wheel")


def config_files(ctx: Context) -> list[str]:
    env = ctx.env
    if env.get("PIP_CONFIG_FILE"):
        return [env["PIP_CONFIG_FILE"]] if os.path.isfile(env["PIP_CONFIG_FILE"]) else []
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(ctx.home, ".config")
    files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.join(ctx.home, ".pip", "pip.conf"),
             os.path.join(xdg, "pip", "pip.conf")]
    if env.get("VIRTUAL_ENV"):
        files.append(os.path.join(env["VIRTUAL_ENV"], "pip.conf"))
    return [f for f in files if os.path.isfile(f)]


def settings(ctx: Context) -> dict[str, list[str]]:
    """The URL and path settings pip would use, from its config files and PIP_* variables."""
    found: dict[str, list[str]] = {}
    for path in config_files(ctx):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in parser.sections():
            for key in URL_KEYS + PATH_KEYS:
                if parser.has_option(section, key):
                    found.setdefault(key, []).extend(parser.get(section, key).split())
    for key in URL_KEYS + PATH_KEYS:
        value = ctx.env.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found.setdefault(key, []).extend(value.split())
    return found


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    sub = next((a for a in argv[1:] if not a.startswith("-")), "")
    if sub not in INSTALL:
        return None
    found = settings(ctx)
    urls = [u for k in URL_KEYS for u in found.get(k, [])]
    allow = ECOSYSTEM_ALLOW["pip"] + tuple(e for e in map(url_entry, urls) if e)
    local = [p for k in PATH_KEYS for v in found.get(k, []) for p in [local_path(v)] if p]
    local += [p for u in urls for p in [local_path(u)] if p]
    readonly = tuple(Mount(p, p) for p in dict.fromkeys(local)
                     if os.path.exists(p) and not p.startswith(("/usr/", "/etc/")))
    key = hashlib.sha256(ctx.project_root.encode()).hexdigest()[:16]
    wheelhouse = os.path.join(ctx.cache_dir, "pip", "wheelhouse", key)
    cache = os.path.join(ctx.cache_dir, "pip", "http")
    env = {"PIP_CACHE_DIR": cache, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    rest = list(argv[argv.index(sub) + 1:])
    if sub == "download":  # already download-only: one phase with the allowlist
        return (Phase("download", argv, True, allow, env, secrets=INDEX_ENV,
                      mounts=(cache_mount(cache, True), *readonly),
                      reason="built-in pip policy: download runs with the registry allowlist"),)
    # setuptools and wheel join the wheelhouse so that source distributions can build offline.
    fetch = (argv[0], "download", "--dest", wheelhouse, *_download_args(rest), *BUILD_REQUIREMENTS)
    download = Phase(
        "download", fetch, True, allow, env,
        secrets=INDEX_ENV, mounts=(cache_mount(cache, True), cache_mount(wheelhouse, True), *readonly),
        reason="built-in pip policy: download to a wheelhouse through the allowlist",
    )
    offline = Phase(
        "scripts", (argv[0], sub, "--no-index", "--find-links", wheelhouse, *rest), False, (),
        {**env, "PIP_NO_INDEX": "1"}, mounts=(cache_mount(wheelhouse, False), *readonly),
        reason=f"built-in pip policy: then {sub} offline from the wheelhouse (builds run with the network off)",
    )
    return (download, offline)


# Options of `pip install` that `pip download` does not take (they concern the install itself).
_INSTALL_ONLY = {"--user", "--upgrade", "-U", "--force-reinstall", "--ignore-installed", "-I",
                 "--no-warn-script-location", "--no-warn-conflicts", "--compile", "--no-compile",
                 "--break-system-packages", "--editable", "-e", "--target", "-t", "--prefix", "--root",
                 "--upgrade-strategy", "--dry-run", "--report", "--require-virtualenv"}
_TAKES_VALUE = {"--target", "-t", "--prefix", "--root", "--upgrade-strategy", "--report"}


def _download_args(rest: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _INSTALL_ONLY:
            skip = name in _TAKES_VALUE and "=" not in arg
            if name in ("-e", "--editable"):  # a local project: fetch its dependencies
                out.append(rest[i + 1] if "=" not in arg and i + 1 < len(rest) else arg.split("=", 1)[1])
                skip = "=" not in arg
            continue
        out.append(arg)
    return out
