"""Where the config files that may hold credentials are, and how each sandbox shows them.

The machine's (npm's global and builtin npmrc, pip's site-wide and per-interpreter pip.conf, git's
system gitconfig: SYSTEM, and the same names under a mounted tool prefix: PREFIXED) and the
project's git configs (`.git/config`, its submodules'). A sandbox reads each without its
credentials (redact.py), as they are when the step starts (read then; the warm path's record
keeps the redacted copy, vouched for by the file's content), no link followed; a download phase reads its
own tool's machine configs as they are (`kept`: "npmrc", "pip.conf", "gitconfig").

Only these places: the rest of /usr and of a tool prefix is bound as it is (a `npmrc.bak` there
is readable), and so is the project but for its git configs.
"""
from __future__ import annotations

import glob
import os
import stat
from typing import Callable, Iterable, Sequence

from sbox_shim.lean import inside
from sbox_shim.plan import Mount

SYSTEM = (
    "/etc/npmrc", "/etc/pip.conf", "/etc/gitconfig", "/etc/xdg/pip/pip.conf",
    "/usr/etc/npmrc", "/usr/etc/gitconfig", "/usr/local/etc/npmrc", "/usr/local/etc/gitconfig",
    "/usr/pip.conf", "/usr/local/pip.conf",  # pip's site config: {sys.prefix}/pip.conf
    "/usr/lib/node_modules/npm/npmrc", "/usr/local/lib/node_modules/npm/npmrc",  # npm's builtin config
    "/usr/share/nodejs/npm/npmrc",
)
# Below a mounted tool prefix (`~/.pyenv`, `/opt/node`, an npm's own directory): its global and
# builtin npmrc, its Python's site pip.conf (pyenv's: one per version), its git's system config.
PREFIXED = ("etc/npmrc", "npmrc", "lib/node_modules/npm/npmrc", "pip.conf", "versions/*/pip.conf", "etc/gitconfig")
MAX_GIT_WALK = 4096  # directories git_configs looks at
MAX_REDACTED = 256  # git configs shown redacted (each is a mount); beyond, submodules' are hidden


def system_configs(prefix: str | None, kept: Iterable[str], project: str,
                   is_file: Callable[[str], bool] = os.path.isfile,
                   realpath: Callable[[str], str] = os.path.realpath,
                   expand: Callable[[str], list[str]] = glob.glob) -> list[Mount]:
    """The machine's configs (SYSTEM, and PREFIXED under `prefix`), as a sandbox reads them: those
    named in `kept` as they are (a config directly in /etc is a copy: the sandbox's /etc holds only
    what sbox puts there), every other without its credentials, where it really is (read where a
    link the host holds leads; one that leads to /etc is shown there or not at all)."""
    keep = set(kept)
    mounts: list[Mount] = []
    for path in _places(prefix, expand):
        if not is_file(path):
            continue
        as_is = os.path.basename(path) in keep
        real = realpath(path)
        if path.count("/") == 2:  # /etc/NAME
            mounts.append(Mount(path, path, kind="copy") if as_is else Mount(real, path, kind="redact"))
            continue
        if as_is or real.count("/") == 2 and real.startswith("/etc/") or inside(real, project):
            continue  # as it is; or not visible but as one of the above; or the project's own
        mounts.append(Mount(real, real, kind="redact"))
    return list({m.target: m for m in mounts}.values())


def _places(prefix: str | None, expand: Callable[[str], list[str]]) -> list[str]:
    found = list(SYSTEM)
    for relative in PREFIXED if prefix else ():
        path = os.path.join(str(prefix), relative)
        found += sorted(expand(path)) if "*" in relative else [path]
    return found


def config_facts(mounts: Sequence[Mount], project: str) -> list[tuple[str, str]]:
    """What the plan cache watches for system_configs: a config that appears later (an `npm
    config set --global`) must not be shown as it is by a kept plan. A read-only bind outside the
    project may be a tool prefix."""
    from sbox_shim.layout import ETC, TOOLCHAIN

    prefixes = [m.source for m in mounts if m.kind == "bind" and m.readonly and m.source == m.target
                and m.source not in TOOLCHAIN + ETC and not inside(m.source, project)]
    facts = [("type", p) for p in SYSTEM]
    for prefix in prefixes:
        facts += [("names", os.path.join(prefix, "versions"))]
        facts += [("type", p) for p in _places(prefix, glob.glob)[len(SYSTEM):]]
    return facts


def git_configs(root: str, gits: Iterable[str] = ()) -> list[Mount]:
    """The project's git configs, as a sandbox reads them: without their credentials. Those of the
    project's own `.git` directory and of each git directory among `gits` (tree.inspect's, in a
    writable project), with their worktrees' (`worktrees/NAME/config.worktree`) and submodules'
    (`modules/NAME/config`, NAME may have slashes, at any depth). Found by lstat; one that is a
    link is shown redacted where it leads, if a sandbox sees that place (the project, /usr).

    More than MAX_REDACTED of them (or more than MAX_GIT_WALK directories to look at): each git
    directory's `modules/` is hidden instead (an empty directory: git does not work inside
    submodules there); still too many, UsageError."""
    configs, _, complete = _git_walk(root, gits)
    if len(configs) <= MAX_REDACTED and complete:
        return [Mount(c, c, kind="redact") for c in configs]
    configs, _, complete = _git_walk(root, gits, submodules=False)
    if len(configs) > MAX_REDACTED or not complete:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{root}: more than {MAX_REDACTED} git configs to show without their credentials "
                         "(nested repositories); nothing ran")
    hidden = [Mount("", os.path.join(g, "modules"), readonly=False, kind="tmpfs")
              for g in dict.fromkeys([os.path.join(root, ".git"), *gits]) if _is(os.path.join(g, "modules"), stat.S_ISDIR)]
    return [Mount(c, c, kind="redact") for c in configs] + hidden


def git_config_facts(root: str, mounts: Sequence[Mount]) -> list[tuple[str, str]]:
    """What the plan cache watches for git_configs, walked again from the git directories the
    step's mounts protect (a writable project's): a repository, a config, a worktree or a
    submodule that appears later must not be shown as it is by a kept plan."""
    gits = [m.source for m in mounts if m.kind == "bind" and m.readonly and m.source != root and inside(m.source, root)
            and _is(os.path.join(m.source, "HEAD"), stat.S_ISREG)]
    hidden = any(m.kind == "tmpfs" and os.path.basename(m.target) == "modules" and inside(m.target, root)
                 for m in mounts)
    return _git_walk(root, gits, submodules=not hidden)[1]


def _git_walk(root: str, gits: Iterable[str],
              submodules: bool = True) -> tuple[list[str], list[tuple[str, str]], bool]:
    """(the config files git_configs shows redacted, where each really is; the facts that would
    change with them; whether the walk looked at every directory)."""
    top = os.path.join(root, ".git")
    stack = [top, *gits]
    found: list[str] = []
    facts = [("type", top), ("type", os.path.join(top, "config"))]
    seen: set[str] = set()
    while stack and len(seen) < MAX_GIT_WALK:
        d = stack.pop()
        if d in seen or not _is(d, stat.S_ISDIR):
            continue
        seen.add(d)
        if _is(os.path.join(d, "HEAD"), stat.S_ISREG) or d == top:  # a git directory
            configs = [os.path.join(d, "config"), os.path.join(d, "config.worktree")]
            configs += [os.path.join(w, "config.worktree") for w in _subdirs(os.path.join(d, "worktrees"))]
            found += [p for p in (_shown(p, root) for p in configs) if p]
            facts += [("type", p) for p in configs]
            facts += [("names", os.path.join(d, "modules")), ("names", os.path.join(d, "worktrees"))]
            if submodules:
                stack.append(os.path.join(d, "modules"))
            continue
        facts.append(("names", d))  # modules/, or a directory of submodule names (modules/libs/core)
        config = os.path.join(d, "config")  # ... or a submodule's git directory without its HEAD
        found += [p for p in [_shown(config, root)] if p]
        facts.append(("type", config))
        stack += _subdirs(d)
    return sorted(set(found)), list(dict.fromkeys(facts)), not stack


def _shown(path: str, root: str) -> str | None:
    """Where the config at `path` is seen in a sandbox: itself, a regular file; for a link, the
    regular file it leads to in the project or the toolchain (read redacted there, never shown
    through the link as it is); None when there is nothing a sandbox could read."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return path
    if not stat.S_ISLNK(mode):
        return None
    from sbox_shim.layout import in_toolchain

    real = os.path.realpath(path)
    visible = inside(real, os.path.realpath(root)) or in_toolchain(real)
    return real if visible and _is(real, stat.S_ISREG) else None


def _subdirs(d: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _is(path: str, test: Callable[[int], bool]) -> bool:
    try:
        return test(os.lstat(path).st_mode)
    except OSError:
        return False
