"""go: `go mod download` through the allowlist, then the command itself with GOPROXY=off.

Go runs no install scripts, but `go test`, `go run` and `go generate` run the project's and its
dependencies' code: they get the network off. GOMODCACHE is sbox's own, read-only in that phase.
"""
from __future__ import annotations

import hashlib
import os

from sbox_shim.ecosystems import Context, Phase, cache_mount, local_path, url_entry
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("go",)
INSTALL = ("build", "test", "get", "install", "run", "mod", "generate", "vet", "list")
PASSTHROUGH_ENV = ("GOFLAGS", "GOPRIVATE", "GONOPROXY", "GONOSUMDB", "GONOSUMCHECK", "GOSUMDB",
                   "GOINSECURE", "CGO_ENABLED", "GOOS", "GOARCH", "GOEXPERIMENT", "GO111MODULE")
DEFAULT_PROXY = "https://proxy.golang.org,direct"


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    args = [a for a in argv[1:] if not a.startswith("-")]
    sub = args[0] if args else ""
    if sub not in INSTALL or (sub == "mod" and args[1:2] not in (["download"], ["tidy"])):
        return None
    proxy = ctx.env.get("GOPROXY") or DEFAULT_PROXY
    entries = [p for p in proxy.replace("|", ",").split(",") if p not in ("direct", "off")]
    allow = ECOSYSTEM_ALLOW["go"] + tuple(e for e in map(url_entry, entries) if e)
    readonly = tuple(Mount(p, p) for e in entries for p in [local_path(e)] if p and os.path.isdir(p))
    base = os.path.join(ctx.cache_dir, "go")
    modcache = os.path.join(base, "mod")
    key = hashlib.sha256(ctx.project_root.encode()).hexdigest()[:16]
    build_cache = os.path.join(base, "build", key)
    env = {k: ctx.env[k] for k in PASSTHROUGH_ENV if k in ctx.env}
    env.update(GOMODCACHE=modcache, GOPATH=os.path.join(base, "path"), GOCACHE=build_cache,
               GOTOOLCHAIN="local", GOENV="off", GOTELEMETRY="off")
    download = Phase(
        "download", (argv[0], "mod", "download"), True, allow, {**env, "GOPROXY": proxy},
        mounts=(cache_mount(modcache, True), cache_mount(build_cache, True), *readonly),
        reason="built-in go policy: download modules through the allowlist (no code runs)",
    )
    if sub == "mod" and args[1:2] == ["download"]:
        return (download,)
    offline = Phase(
        "scripts", argv, False, (), {**env, "GOPROXY": "off", "GOFLAGS": _flags(env.get("GOFLAGS"))},
        mounts=(cache_mount(modcache, False), cache_mount(build_cache, True), *readonly),
        reason=f"built-in go policy: then {sub} with GOPROXY=off and the network off",
    )
    return (download, offline)


def _flags(flags: str | None) -> str:
    flags = flags or ""
    return flags if "-mod=" in flags else (flags + " -mod=mod").strip()
