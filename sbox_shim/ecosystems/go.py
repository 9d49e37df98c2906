"""go: `go mod download` through the allowlist, then the command itself with GOPROXY=off.

Go runs no install scripts, but `go test`, `go run` and `go generate` run the project's and its
dependencies' code: they get the network off. GOMODCACHE is sbox's own, read-only in that phase.
Those three also get a build cache of their own (GOCACHE), which no other command reads: go trusts
what its cache holds, and a test-only dependency's code in `go test` rewrote the cache's entries
for the project's packages, so that the next `go build` linked its payload into the binary the
host runs (red team 15). `go build`, `go install`, `go vet` and `go list` run no module code: the
cache they share is written by the toolchain alone.
`go get`, `go mod tidy`, `go mod download` and `go install pkg@version` run no module code and
exist to reach the proxy: they are one step, the command itself, through the allowlist.

What each phase may write of the project (layout.py): the module's `go.mod` and `go.sum` (and
`go.work.sum` when there is a go.work), the caches being sbox's own, but `go test` and `go run`
not go.mod: a test-only dependency's code in `go test` pointed its `replace` at a lookalike module
of its own in the tree, and the next `go build` linked it into the binary the host ran (red team
18). Directly, those commands leave go.mod as it is too (-mod=readonly); `go mod vendor` also
`vendor/`, `go build -o PATH` that path when it exists. `go build` without `-o` writes a binary
named after the package into the working directory, a first `go build -o PATH` creates an
executable (a staged file would not keep its mode), and `go generate` exists to write source
files: those keep the whole project writable (but the protected paths).
"""
from __future__ import annotations

import os

from sbox_shim.ecosystems import Context, Phase, cache_mount, local_path, url_entry
from sbox_shim.kept import digest
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("go",)
# Commands that build or run code: `go mod download`, then the command with GOPROXY=off, offline.
BUILD = ("build", "test", "install", "run", "generate", "vet", "list")
MOD_BUILD = ("vendor", "verify", "graph", "why")
# Commands that resolve and download but run no module code: one step, the command itself, through
# the allowlist (offline they could not reach the new versions they exist to find).
MOD_DOWNLOAD = ("download", "tidy")
INSTALL = BUILD + ("get", "mod")
RUNS_CODE = ("test", "run", "generate")  # run module code: a build cache no other command reads
PASSTHROUGH_ENV = ("GOFLAGS", "GOPRIVATE", "GONOPROXY", "GONOSUMDB", "GOSUMDB",
                   "GOINSECURE", "CGO_ENABLED", "GOOS", "GOARCH", "GOEXPERIMENT", "GO111MODULE",
                   "GOAMD64", "GOARM", "GOWORK")
DEFAULT_PROXY = "https://proxy.golang.org,direct"
_GLOBAL_VALUES = ("-C",)


def _args(argv: tuple[str, ...]) -> list[str]:
    """The words that are not options (the value of `go -C dir` skipped)."""
    out: list[str] = []
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in _GLOBAL_VALUES and not out:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def user_gobin(ctx: Context) -> str:
    """Where `go install` puts binaries for the caller: GOBIN, else the first GOPATH's bin."""
    if ctx.env.get("GOBIN"):
        return ctx.env["GOBIN"]
    gopath = (ctx.env.get("GOPATH") or os.path.join(ctx.home, "go")).split(os.pathsep)[0]
    return os.path.join(gopath, "bin")


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    args = _args(argv)
    sub = args[0] if args else ""
    modsub = args[1] if sub == "mod" and len(args) > 1 else ""
    if sub not in INSTALL or (sub == "mod" and modsub not in MOD_DOWNLOAD + MOD_BUILD):
        return None
    proxy = ctx.env.get("GOPROXY") or DEFAULT_PROXY
    entries = [p for p in proxy.replace("|", ",").split(",") if p not in ("direct", "off")]
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["go"] + tuple(e for e in map(url_entry, entries) if e)))
    # GOPROXY=off: go fetches nothing, so the download phase needs no network (nor its names resolved)
    online = any(p != "off" for p in proxy.replace("|", ",").split(","))
    allow = allow if online else ()
    readonly = tuple(Mount(p, p) for e in entries for p in [local_path(e)] if p and os.path.isdir(p))
    base = os.path.join(ctx.cache_dir, "go")
    modcache = os.path.join(base, "mod")
    key = digest(ctx.project_root.encode())[:16]
    # (sbox before red team 15 kept one shared cache in build/KEY: left unread, as it may be poisoned)
    build_cache = os.path.join(base, "running" if sub in RUNS_CODE else "building", key)
    env = {k: ctx.env[k] for k in PASSTHROUGH_ENV if k in ctx.env}
    env.update(GOMODCACHE=modcache, GOPATH=os.path.join(base, "path"), GOCACHE=build_cache,
               GOTOOLCHAIN="local", GOENV="off", GOTELEMETRY="off")
    # `go install` writes the caller's binaries: into the caller's GOBIN, writable for that step only.
    gobin: tuple[Mount, ...] = ()
    if sub == "install":
        env["GOBIN"] = user_gobin(ctx)
        gobin = (Mount(env["GOBIN"], env["GOBIN"], readonly=False, kind="cache"),)
    remote = sub == "install" and any("@" in a for a in args[1:])
    if sub == "get" or modsub in MOD_DOWNLOAD or remote:
        what = "go get" if sub == "get" else "go install pkg@version" if remote else f"go mod {modsub}"
        return (Phase(
            "download", argv, online, allow, {**env, "GOPROXY": proxy},
            mounts=(cache_mount(modcache, True), cache_mount(build_cache, True), *readonly, *gobin),
            reason=f"built-in go policy: {what} resolves and downloads through the allowlist (no module code runs)",
            writable=outputs(ctx), configs=("gitconfig",),
        ),)
    download = Phase(
        "download", (argv[0], "mod", "download"), online, allow, {**env, "GOPROXY": proxy},
        mounts=(cache_mount(modcache, True), cache_mount(build_cache, True), *readonly),
        reason="built-in go policy: download modules through the allowlist (no code runs)",
        writable=outputs(ctx), configs=("gitconfig",),
    )
    what = f"mod {modsub}" if sub == "mod" else sub
    vendored = os.path.isfile(os.path.join(ctx.project_root, "vendor", "modules.txt"))
    flags = env.get("GOFLAGS", "") if vendored else _flags(env.get("GOFLAGS"))
    offline = Phase(
        "scripts", argv, False, (), {**env, "GOPROXY": "off", "GOFLAGS": flags},
        mounts=(cache_mount(modcache, False), cache_mount(build_cache, True), *readonly, *gobin),
        reason=f"built-in go policy: then {what} with GOPROXY=off and the network off",
        writable=_built(argv, sub, modsub, ctx),
    )
    return (download, offline)


def outputs(ctx: Context) -> tuple[str, ...]:
    """go.mod, go.sum (go.work.sum) of the module that holds cwd, project-relative."""
    here = ctx.cwd
    while here != ctx.project_root and here.startswith(ctx.project_root) \
            and not os.path.isfile(os.path.join(here, "go.mod")):
        here = os.path.dirname(here)
    if not here.startswith(ctx.project_root):
        here = ctx.project_root
    names = ["go.mod", "go.sum"]
    if os.path.isfile(os.path.join(here, "go.work")):
        names.append("go.work.sum")
    return tuple(os.path.relpath(os.path.join(here, n), ctx.project_root) for n in names)


def _built(argv: tuple[str, ...], sub: str, modsub: str, ctx: Context) -> bool | tuple[str, ...]:
    """The scripts phase's outputs: see the module's docstring."""
    if sub == "generate":
        return True
    if modsub == "vendor":
        return outputs(ctx) + ("vendor/",)
    if sub == "build":
        out = next((argv[i + 1] if a == "-o" and i + 1 < len(argv) else a[3:]
                    for i, a in enumerate(argv) if a == "-o" or a.startswith("-o=")), None)
        if out is None:
            return True
        path = os.path.normpath(os.path.join(ctx.cwd, out))
        if not path.startswith(ctx.project_root.rstrip("/") + "/"):
            return outputs(ctx)
        if not os.path.lexists(path):
            return True  # a staged file would lose the executable mode go gives a new binary
        relative = os.path.relpath(path, ctx.project_root)
        return outputs(ctx) + (relative + "/" if out.endswith("/") else relative,)
    if sub in RUNS_CODE:  # go.sum may gain hashes (-mod=mod), go.mod stays as it is (red team 18)
        return tuple(p for p in outputs(ctx) if os.path.basename(p) != "go.mod")
    return outputs(ctx)


def _flags(flags: str | None) -> str:
    """-mod=mod unless the caller chose: go.sum may gain the hashes the download phase fetched."""
    flags = flags or ""
    return flags if "-mod=" in flags else (flags + " -mod=mod").strip()
