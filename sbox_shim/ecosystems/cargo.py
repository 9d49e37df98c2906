"""cargo: `cargo fetch` through the allowlist, then the command itself with `--offline`.

Build scripts (build.rs) and proc macros run only in the offline phase. CARGO_HOME is sbox's own:
the user's config.toml is carried in read-only, credentials.toml only into the fetch phase.

What each phase may write of the project (layout.py): `target/` (or CARGO_TARGET_DIR /
`--target-dir` when inside the project) and `Cargo.lock`, at the workspace root (the nearest
directory up from the manifest whose Cargo.toml has `[workspace]`, else the manifest's own).
"""
from __future__ import annotations

import os
import re
import stat

from sbox_shim.ecosystems import (Context, Phase, cache_mount, local_path, read_text, sandbox_writable,
                                  subcommand, url_entry)
from sbox_shim.errors import UsageError
from sbox_shim.lean import inside
from sbox_shim.plan import Mount
from sbox_shim.registries import ECOSYSTEM_ALLOW

TOOLS = ("cargo",)
# Commands that compile, so run build scripts and proc macros: `cargo fetch`, then offline.
BUILD = ("build", "b", "check", "c", "test", "t", "run", "r", "bench", "doc", "d", "clippy", "rustc",
         "rustdoc", "fix")
# Commands that resolve and download but compile nothing: one step, the command itself, through
# the allowlist (offline they would quietly use a stale index).
DOWNLOAD = ("fetch", "update", "generate-lockfile", "vendor", "tree", "metadata")
INSTALL = BUILD + DOWNLOAD
# `cargo install` is not here: it builds outside any project and writes into the user's
# ~/.cargo/bin, which no sandboxed step may touch; it runs in the `default` profile (or a dispatch rule).
_URL = re.compile(r"""^\s*(?:registry|index)\s*=\s*["']([^"']+)["']""", re.M)
_PATH = re.compile(r"""^\s*(?:local-registry|directory)\s*=\s*["']([^"']+)["']""", re.M)
SECRETS = ("CARGO_REGISTRY_TOKEN",)


def user_cargo_home(ctx: Context) -> str:
    return ctx.env.get("CARGO_HOME") or os.path.join(ctx.home, ".cargo")


def config_files(ctx: Context) -> list[str]:
    """The user's cargo config and the project's (.cargo/config.toml from cwd up to the root)."""
    home = user_cargo_home(ctx)
    files = [os.path.join(home, n) for n in ("config.toml", "config")]
    here = ctx.cwd
    while True:
        files += [os.path.join(here, ".cargo", n) for n in ("config.toml", "config")]
        if here == ctx.project_root or os.path.dirname(here) == here:
            break
        here = os.path.dirname(here)
    return [f for f in files if os.path.isfile(f)]


def inputs(argv: tuple[str, ...], ctx: Context) -> list[tuple[str, str, str]]:
    """The configuration a sandbox could have written that cargo would act on: the project's
    .cargo/config files and rust-toolchain files (rustup runs the toolchain a `path` names)."""
    if _subcommand(argv) not in INSTALL:
        return []
    out = [(f, "cargo config", "all") for f in config_files(ctx) if sandbox_writable(f, ctx)]
    here = ctx.cwd
    while True:
        out += [(p, "rust toolchain file", "all") for n in ("rust-toolchain", "rust-toolchain.toml")
                for p in [os.path.join(here, n)] if os.path.lexists(p)]
        if here == ctx.project_root or os.path.dirname(here) == here:
            return out
        here = os.path.dirname(here)


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    sub = _subcommand(argv)
    if sub not in INSTALL:
        return None
    files = config_files(ctx)
    texts = [read_text(f) for f in files]
    urls = [u for t in texts for u in _URL.findall(t)]
    urls += [v for k, v in ctx.env.items() if re.fullmatch(r"CARGO_REGISTRIES_\w+_INDEX", k)]
    ours = {u for f, t in zip(files, texts) if sandbox_writable(f, ctx) for u in _URL.findall(t)}
    allow = tuple(dict.fromkeys(ECOSYSTEM_ALLOW["cargo"] + tuple(e for u in urls if u not in ours
                                                                  for e in [url_entry(u)] if e)))
    # Registries named by the project's .cargo/config: admitted, never as explicit entries.
    implied = tuple(e for u in ours for e in [url_entry(u)] if e and e not in allow)
    local = [p for t in texts for p in _PATH.findall(t)] + [p for u in urls for p in [local_path(u)] if p]
    readonly = [Mount(p, p) for p in dict.fromkeys(local) if p.startswith("/") and os.path.exists(p)]
    cargo_home = os.path.join(ctx.cache_dir, "cargo")
    env = {"CARGO_HOME": cargo_home, "CARGO_TERM_PROGRESS_WHEN": "never"}
    rustup = ctx.env.get("RUSTUP_HOME") or os.path.join(ctx.home, ".rustup")
    if os.path.isdir(rustup):
        env["RUSTUP_HOME"] = rustup
        readonly.append(Mount(rustup, rustup))
    user_home = user_cargo_home(ctx)
    config = [Mount(os.path.join(user_home, n), os.path.join(cargo_home, n))
              for n in ("config.toml", "config") if os.path.isfile(os.path.join(user_home, n))]
    credentials = [Mount(os.path.join(user_home, n), os.path.join(cargo_home, n))
                   for n in ("credentials.toml", "credentials") if os.path.isfile(os.path.join(user_home, n))]
    _refuse_planted(cargo_home)
    _refuse_project_toolchain(ctx)
    # The programs cargo runs while it fetches (rustc for the target's facts, wrappers, credential
    # providers) are sbox's choice, whatever a config file says: the environment outranks it.
    fetching = {**env, "RUSTC": "rustc", "RUSTC_WRAPPER": "", "RUSTC_WORKSPACE_WRAPPER": "",
                "CARGO_REGISTRY_GLOBAL_CREDENTIAL_PROVIDERS": "cargo:token"}
    if sub in DOWNLOAD:
        written = outputs(argv, ctx) + (("vendor/",) if sub == "vendor" else ())
        return (Phase(
            "download", argv, True, allow, fetching, secrets=SECRETS, implied=implied,
            credentials=tuple(m.source for m in credentials),
            mounts=(cache_mount(cargo_home, True), *readonly, *config, *credentials),
            reason=f"built-in cargo policy: {sub} resolves and downloads through the allowlist (nothing is compiled)",
            writable=written, configs=("gitconfig",),
        ),)
    fetch = Phase(
        "download", _fetch(argv), True, allow, fetching, secrets=SECRETS, implied=implied,
        credentials=tuple(m.source for m in credentials),
        mounts=(cache_mount(cargo_home, True), *readonly, *config, *credentials),
        reason="built-in cargo policy: fetch dependencies through the allowlist (no build scripts run)",
        writable=outputs(argv, ctx), configs=("gitconfig",),
    )
    # sbox's CARGO_HOME holds the registry sources every project builds from: read-only while
    # build scripts run, so that none can plant code or config there for the next build.
    offline = Phase(
        "scripts", _offline(argv), False, (), {**env, "CARGO_NET_OFFLINE": "true"},
        mounts=(cache_mount(cargo_home, False), *readonly, *config),
        reason=f"built-in cargo policy: then {sub} offline (build scripts run with the network off)",
        writable=outputs(argv, ctx),
    )
    return (fetch, offline)


_TOOLCHAIN_PATH = re.compile(r"""^\s*path\s*=\s*["']([^"']+)["']""", re.M)


def _refuse_project_toolchain(ctx: Context) -> None:
    """A rust-toolchain file's `path` makes rustup run the cargo and rustc found there, in the
    phase with the network and the registry token: never a directory a sandbox could write."""
    here = ctx.cwd
    while True:
        for name in ("rust-toolchain.toml", "rust-toolchain"):
            file = os.path.join(here, name)
            for value in _TOOLCHAIN_PATH.findall(read_text(file)):
                target = os.path.normpath(os.path.join(here, value))
                if sandbox_writable(target, ctx):
                    raise UsageError(f"{file}: path = {value} names a toolchain inside the project, which "
                                     "sandboxes can write; install it outside the project and name that")
        if here == ctx.project_root or os.path.dirname(here) == here:
            return
        here = os.path.dirname(here)


def _refuse_planted(cargo_home: str) -> None:
    """sbox's CARGO_HOME is shared by every project and writable while fetching. sbox never writes
    a config there (the user's is bound over the name, leaving an empty mount point), so one with
    content was planted: it would run in every other project's build. Refuse, and say where."""
    for name in ("config.toml", "config"):
        path = os.path.join(cargo_home, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size:
            raise UsageError(f"{path}: sbox's shared CARGO_HOME holds a config file sbox did not write "
                             "(a sandbox may have planted it); move it away, then run again")


def outputs(argv: tuple[str, ...], ctx: Context) -> tuple[str, ...]:
    """`target/` and `Cargo.lock` of the workspace, project-relative; none outside the project."""
    manifest = _option(argv, "--manifest-path")
    here = os.path.dirname(os.path.join(ctx.cwd, manifest)) if manifest else ctx.cwd
    workspace = here
    while inside(here, ctx.project_root):
        if "[workspace]" in read_text(os.path.join(here, "Cargo.toml")):
            workspace = here
            break
        if here == ctx.project_root:
            break
        here = os.path.dirname(here)
    target = _option(argv, "--target-dir") or ctx.env.get("CARGO_TARGET_DIR") or "target"
    paths = [(os.path.join(workspace, target), "/"), (os.path.join(workspace, "Cargo.lock"), "")]
    return tuple(os.path.relpath(os.path.normpath(p), ctx.project_root) + tail for p, tail in paths
                 if inside(os.path.normpath(p), ctx.project_root) and os.path.normpath(p) != ctx.project_root)


def _option(argv: tuple[str, ...], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None




_GLOBAL_VALUES = ("--color", "--config", "-Z", "-C")  # cargo's global options that take a value


def _subcommand(argv: tuple[str, ...]) -> str:
    return subcommand(argv, _GLOBAL_VALUES, ("-", "+"))


def _fetch(argv: tuple[str, ...]) -> tuple[str, ...]:
    """`cargo fetch` with what it shares with the command: a `+toolchain`, the manifest, the target,
    `--config`, the lockfile's strictness (`--frozen` is `--locked` plus offline)."""
    out = [argv[0], *([argv[1]] if len(argv) > 1 and argv[1].startswith("+") else []), "fetch"]
    for i, arg in enumerate(argv):
        if arg in ("--manifest-path", "--target", "--config") and i + 1 < len(argv):
            out += [arg, argv[i + 1]]
        elif arg.startswith(("--manifest-path=", "--target=", "--config=")) or arg == "--locked":
            out.append(arg)
        elif arg == "--frozen":
            out.append("--locked")
    return tuple(out)


def _offline(argv: tuple[str, ...]) -> tuple[str, ...]:
    if "--offline" in argv or "--frozen" in argv:
        return argv
    if "--" in argv:
        i = argv.index("--")
        return (*argv[:i], "--offline", *argv[i:])
    return (*argv, "--offline")
