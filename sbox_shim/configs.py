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

from sbox_shim.lean import inside
from sbox_shim.plan import Mount

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Iterable, Sequence

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
    configs, _, complete, _ = _git_walk(root, gits)
    if len(configs) <= MAX_REDACTED and complete:
        return [Mount(c, c, kind="redact") for c in configs]
    configs, _, complete, modules = _git_walk(root, gits, submodules=False)
    if len(configs) > MAX_REDACTED or not complete:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{root}: more than {MAX_REDACTED} git configs to show without their credentials "
                         "(nested repositories); nothing ran")
    hidden = [Mount("", m, readonly=False, kind="tmpfs") for m in modules]
    return [Mount(c, c, kind="redact") for c in configs] + hidden


def git_config_facts(root: str, mounts: Sequence[Mount]) -> list[tuple[str, str]]:
    """What the plan cache watches for git_configs, walked again from the git directories the
    step's mounts protect (a writable project's): a repository, a config, a worktree or a
    submodule that appears later must not be shown as it is by a kept plan."""
    # each bound read-only, or rebuilt over a tmpfs (skeleton.py)
    bound = [m.source if m.kind == "bind" else m.target for m in mounts
             if m.readonly and (m.kind == "bind" or m.kind == "tmpfs" and not m.source)]
    # in the project, and a linked worktree's or a submodule's outside it (checkout.py)
    gits = [g for g in bound if g != root and not inside(root, g) and _git_dir(root, g)]
    hidden = any(m.kind == "tmpfs" and not m.readonly and os.path.basename(m.target) == "modules"
                 and inside(m.target, root) for m in mounts)
    facts = _git_walk(root, gits, submodules=not hidden)[1]
    # the directories skeleton.py rebuilt: an entry added or gone changes the mounts
    return facts + [("names", m.target) for m in mounts if m.kind == "tmpfs" and m.readonly and not m.source]


def _git_walk(root: str, gits: Iterable[str],
              submodules: bool = True) -> tuple[list[str], list[tuple[str, str]], bool, list[str]]:
    """(the config files git_configs shows redacted, where each really is; the facts that would
    change with them; whether the walk looked at every directory; each git directory's `modules`
    directory).

    Each directory is reached from the project root one directory at a time without following a
    link (opened in the one before it; a git directory outside the project, by path: no sandbox
    writes there), and what is in it is looked at through that descriptor. A sandbox writing the
    project (a dev server) could otherwise swap a directory on the way to a nested repository for
    a link while sbox plans another step, so that its config looked absent and was left unredacted
    in that step's sandbox, in every later run of a kept plan as well. A directory the plan found
    (`gits`, the project's `.git`) that is no longer reached so is an error: nothing runs."""
    top = os.path.join(root, ".git")
    stack = [top, *gits]
    found: list[str] = []
    facts = [("type", top), ("type", os.path.join(top, "config"))]
    seen: set[str] = set()
    modules: list[str] = []
    while stack and len(seen) < MAX_GIT_WALK:
        d = stack.pop()
        if d in seen:
            continue
        fd = _open_dir(root, d)
        if fd is None:
            continue
        seen.add(d)
        try:
            if d == top or _at(fd, "HEAD", stat.S_ISREG):  # a git directory
                configs = [(fd, "config", os.path.join(d, "config")),
                           (fd, "config.worktree", os.path.join(d, "config.worktree"))]
                worktrees = _open_in(fd, "worktrees")
                opened = [(w, n) for n in _names(worktrees, dirs_only=True)
                          if (w := _open_in(worktrees, n)) is not None]
                try:
                    configs += [(w, "config.worktree", os.path.join(d, "worktrees", n, "config.worktree"))
                                for w, n in opened]
                    shown = [p for p in (_shown(at, name, path, root) for at, name, path in configs) if p]
                    found += shown + _included(d, shown, root, facts)
                    facts += [("type", path) for _, _, path in configs]
                finally:
                    for w, _ in opened:
                        os.close(w)
                    if worktrees is not None:
                        os.close(worktrees)
                facts += [("names", os.path.join(d, "modules")), ("names", os.path.join(d, "worktrees"))]
                # a worktree's own submodules: `git submodule update` in a linked worktree keeps their
                # git directories in worktrees/NAME/modules (red team 16 read their tokens there)
                inner = [os.path.join(d, "worktrees", n) for _, n in opened]
                for at in [d, *inner]:
                    if at != d:
                        facts.append(("names", os.path.join(at, "modules")))
                    if _at(fd, os.path.relpath(os.path.join(at, "modules"), d), stat.S_ISDIR):
                        modules.append(os.path.join(at, "modules"))
                    if submodules:
                        stack.append(os.path.join(at, "modules"))
                continue
            facts.append(("names", d))  # modules/, or a directory of submodule names (modules/libs/core)
            config = os.path.join(d, "config")  # ... or a submodule's git directory without its HEAD
            found += [p for p in [_shown(fd, "config", config, root)] if p]
            facts.append(("type", config))
            stack += [os.path.join(d, n) for n in _names(fd, dirs_only=True)]
        finally:
            os.close(fd)
    return sorted(set(found)), list(dict.fromkeys(facts)), not stack, modules


_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_INCLUDES = 16


def _included(d: str, configs: list[str], root: str, facts: list[tuple[str, str]]) -> list[str]:
    """The files `configs` include (`include.path`, `includeIf.*.path`, and what those include)
    that lie in the git directory `d`, to be shown redacted as the configs are: red team 17 read
    the `http.extraHeader` a `.git/config` kept in `[include] path = credentials.inc`, bound as it
    is. Each reached from `d` without following a link on the way (lean.open_along)."""
    from sbox_shim.gitconfig import settings
    from sbox_shim.lean import open_along

    out: list[str] = []
    pending, seen = list(configs), set(configs)
    while pending and len(seen) < MAX_INCLUDES:
        config = pending.pop(0)
        for section, key, value in settings(config):
            if key != "path" or not section.startswith("include") or not value or value.startswith("~"):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(config), value))
            if path in seen or path == d or not inside(path, d):
                continue
            seen.add(path)
            facts.append(("type", path))
            head, name = os.path.split(os.path.relpath(path, d))
            try:
                at = open_along(d, head)
            except OSError:
                continue
            try:
                shown = _shown(at, name, path, root)
            finally:
                os.close(at)
            if shown:
                out.append(shown)
                pending.append(shown)
    return out


def _git_dir(root: str, d: str) -> bool:
    """Is `d` a git directory (a HEAD in it), reached as _open_dir reaches it?"""
    fd = _open_dir(root, d)
    if fd is None:
        return False
    try:
        return _at(fd, "HEAD", stat.S_ISREG)
    finally:
        os.close(fd)


def _open_dir(root: str, d: str) -> int | None:
    """An O_PATH descriptor of the directory `d`: below `root`, reached from it without following
    a link; elsewhere (a git directory outside the project), by path with no last link. None if
    `d` is missing or not a directory (a `.git` file or link). UsageError if a directory on its
    way inside the project no longer is one: each was there when the plan found `d` (a link
    swapped in or the directory moved away since, by another sandbox writing this project)."""
    if not inside(d, root) or d == root:
        try:
            return os.open(d, _PATH)
        except OSError:
            return None
    from sbox_shim.lean import open_along

    parent, name = os.path.split(os.path.relpath(d, root))
    try:
        fd = open_along(root, parent)
    except OSError:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{os.path.join(root, parent)}: no longer a directory reached without a link (changed "
                         "while sbox planned: another sandbox writing this project?); nothing ran") from None
    try:
        return _open_in(fd, name)
    finally:
        os.close(fd)


def _open_in(fd: int | None, name: str) -> int | None:
    """The directory `name` in the one `fd` holds, not through a link; None if it is not one."""
    if fd is None:
        return None
    try:
        return os.open(name, _PATH, dir_fd=fd)
    except OSError:
        return None


def _names(fd: int | None, dirs_only: bool = False) -> list[str]:
    """What the directory `fd` holds (only its subdirectories, not through a link, with `dirs_only`)."""
    from sbox_shim.lean import listed_at

    listed = listed_at(fd) if fd is not None else None
    return sorted(name for name, is_dir in listed or () if is_dir or not dirs_only)


def _at(fd: int, name: str, test: Callable[[int], bool]) -> bool:
    try:
        return test(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _shown(fd: int, name: str, path: str, root: str) -> str | None:
    """Where the config `name` in the directory `fd` holds (at `path`) is seen in a sandbox:
    itself, a regular file; for a link, the regular file it leads to in the project or the
    toolchain (read redacted there, never shown through the link as it is); None when there is
    nothing a sandbox could read."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
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


def _is(path: str, test: Callable[[int], bool]) -> bool:
    try:
        return test(os.lstat(path).st_mode)
    except OSError:
        return False
