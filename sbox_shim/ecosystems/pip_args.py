"""pip's command line, read for the policy: which options say where packages come from (the build
requirements are fetched with them too), which concern the install only (`pip download` does not
take them), and where a command writes (`-d`, `-w`, `--target`, a local project)."""
from __future__ import annotations

import os

from sbox_shim.ecosystems import Context

# The options that tell `pip download` where packages come from: the build requirements use them too.
INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host",
                 "--cert", "--client-cert", "--proxy", "--timeout", "--retries", "--keyring-provider"}
INDEX_FLAGS = {"--no-index", "--pre", "--isolated"}
# What decides whether a build requirement may be a wheel (honoured for the build requirements).
BINARY_OPTIONS = {"--no-binary", "--only-binary"}
BINARY_FLAGS = {"--prefer-binary"}
# Where an install outside a venv writes.
TARGET_OPTIONS = ("-t", "--target", "--prefix", "--root")


def destination(args: list[str], names: tuple[str, ...], ctx: Context) -> bool | tuple[str, ...]:
    """The directory `pip download -d` / `pip wheel -w` writes (the working directory by default),
    project-relative; the whole project when it is the root."""
    value = "."
    for i, arg in enumerate(args):
        name, eq, rest = arg.partition("=")
        if name in names:
            value = rest if eq else args[i + 1] if i + 1 < len(args) else "."
    path = os.path.normpath(os.path.join(ctx.cwd, value))
    if path == ctx.project_root:
        return True
    if not path.startswith(ctx.project_root.rstrip("/") + "/"):
        return ()
    return (os.path.relpath(path, ctx.project_root) + "/",)


def local_project(args: list[str], ctx: Context) -> bool:
    """Whether the command installs a directory of the project (`.`, `-e .`, `./sub[extra]`)."""
    for arg in args:
        word = arg.split("=", 1)[1] if arg.startswith("--editable=") else arg
        if word.startswith("-") or not word.startswith((".", "/")) and "/" not in word:
            continue
        path = os.path.normpath(os.path.join(ctx.cwd, word.split("[", 1)[0]))
        if (path + "/").startswith(ctx.project_root.rstrip("/") + "/") and os.path.isdir(path):
            return True
    return False


def index_args(args: list[str], binary: bool = False) -> list[str]:
    """The command's options that say where packages come from (and, with `binary`, whether they may
    be wheels), for the `pip download` of the build requirements."""
    flags = INDEX_FLAGS | (BINARY_FLAGS if binary else set())
    options = INDEX_OPTIONS | (BINARY_OPTIONS if binary else set())
    out = []
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        if name in flags:
            out.append(arg)
        elif name in options:
            out.append(arg)
            if "=" not in arg and i + 1 < len(args):
                out.append(args[i + 1])
        elif arg.startswith("-i") and len(arg) > 2 and not arg.startswith("--"):
            out.append(arg)
    return out


# Options of `pip install` that `pip download` does not take (they concern the install itself).
_INSTALL_ONLY = {"--user", "--upgrade", "-U", "--force-reinstall", "--ignore-installed", "-I",
                 "--no-warn-script-location", "--no-warn-conflicts", "--compile", "--no-compile",
                 "--break-system-packages", "--editable", "-e", "--target", "-t", "--prefix", "--root",
                 "--upgrade-strategy", "--dry-run", "--report", "--require-virtualenv",
                 "--wheel-dir", "-w", "--root-user-action"}
_TAKES_VALUE = {"--target", "-t", "--prefix", "--root", "--upgrade-strategy", "--report", "--wheel-dir", "-w",
                "--root-user-action"}


def download_args(rest: list[str]) -> list[str]:
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


# What an install must not have for the one-phase attempt (pip_install.py): it would build (a local
# project, an editable, `--no-binary`, a VCS link), write outside the venv (`--user`, `--target`,
# `--report`), or run another interpreter (`--python`). Such a command runs in the two phases at once.
_NOT_ONE_PHASE = {"-e", "--editable", "--no-binary", "--src", "--user", "-t", "--target", "--prefix", "--root",
                  "--report", "--python"}


def one_phase(args: list[str], ctx: Context) -> bool:
    """Whether an install into a venv may try to complete in its network phase (every distribution
    a wheel): pip_install.py falls back by itself for anything else; this spares it the attempt when
    the command line already says so."""
    if local_project(args, ctx):
        return False
    return not any(a.split("=", 1)[0] in _NOT_ONE_PHASE or a.startswith(("git+", "hg+", "svn+", "bzr+"))
                   for a in args)
