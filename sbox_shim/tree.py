"""What the project tree holds that shapes the sandbox's layout: gathered once per plan, on the host.

The kind of each path a step may write (directory, file, missing, or refused because it or a
directory on the way to it is a link), every `.git` in the writable parts, git's `core.hooksPath`
when it points inside the project, and the unix sockets near the top of the tree. Nothing here
follows a link the project holds, and nothing runs git: `.git/config` is parsed as text.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from sbox_shim import gitconfig, lean

SOCKET_DEPTH = 2  # `<project>/x.sock` and `<project>/dir/x.sock`, `.git/fsmonitor--daemon.ipc` among them


@dataclass(frozen=True)
class Tree:
    kinds: tuple[tuple[str, str], ...] = ()  # output (as written) -> dir | file | missing | refused: why
    gits: tuple[str, ...] = ()  # every .git entry in a writable part of the project
    hooks: tuple[str, ...] = ()  # core.hooksPath, when it resolves inside the project
    sockets: tuple[str, ...] = ()  # unix sockets found by lstat, to mask


def kind(root: str, relative: str) -> str:
    """`dir`, `file`, `missing`, or `refused: why`; checked a component at a time by lstat."""
    here = root
    parts = [p for p in relative.split("/") if p]
    for i, part in enumerate(parts):
        here = os.path.join(here, part)
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            if i < len(parts) - 1 and not relative.endswith("/"):
                return f"refused: {os.path.dirname(os.path.join(root, relative))} does not exist"
            return "missing"
        except OSError as exc:
            return f"refused: {here}: {exc.strerror}"
        if stat.S_ISLNK(mode):
            return f"refused: {here} is a symbolic link"
        last = i == len(parts) - 1
        if last and stat.S_ISREG(mode):
            return "file"
        if not stat.S_ISDIR(mode):
            return f"refused: {here} is not a {'regular file or ' if last else ''}directory"
    return "dir"


def hooks_path(root: str) -> tuple[str, ...]:
    """git's `core.hooksPath` from `<root>/.git/config`, if it names a path inside the project (git
    would run what is there on the host's next commit): as written when no link is on the way,
    else where it resolves (`githooks -> tools/hooks`: git follows the link), if that is inside
    the project too."""
    path = configured_hooks(root)
    if path is None:
        return ()
    found = kind(root, os.path.relpath(path, root))
    if found in ("dir", "file"):
        return (path,)
    real, top = os.path.realpath(path), os.path.realpath(root)
    if found == "missing" or real == top or not real.startswith(top.rstrip("/") + "/"):
        return ()
    return (real,) if kind(top, os.path.relpath(real, top)) in ("dir", "file") else ()


def configured_hooks(root: str) -> str | None:
    """The project path `core.hooksPath` names in the config of `<root>/.git` (or of the git
    directory a `.git` file names), whether or not it exists."""
    found = [value for gitdir in reversed(lean.git_dirs(os.path.join(root, ".git")))  # the common one first
             for section, key, value in gitconfig.settings(os.path.join(gitdir, "config"))
             if section == "core" and key == "hookspath"]
    if not found or not found[-1] or found[-1].startswith("~"):
        return None
    path = os.path.normpath(os.path.join(root, found[-1]))
    if not (path + "/").startswith(root.rstrip("/") + "/") or path == root:
        return None
    return path


def inspect(root: str, writable: bool | tuple[str, ...]) -> Tree:
    """The facts `layout.project_layout` needs, for a step whose project is `writable`."""
    sockets = lean.sockets(root, SOCKET_DEPTH)
    if writable is True:
        return Tree(gits=_with_git_dirs(root, lean.git_entries(root)), hooks=hooks_path(root), sockets=sockets)
    if not writable:
        return Tree(sockets=sockets)
    kinds = tuple((p, kind(root, p)) for p in writable)
    gits = tuple(g for p, k in kinds if k == "dir" for g in lean.git_entries(os.path.join(root, p)))
    return Tree(kinds, _with_git_dirs(root, gits), hooks_path(root), sockets)


def _with_git_dirs(root: str, gits: tuple[str, ...]) -> tuple[str, ...]:
    """`gits` and the git directories inside the project their `.git` files name (`gitdir: ../repos/sub`,
    a bare `.bare` of worktrees, and its common directory): git runs their hooks and config as it
    runs a `.git` directory's, so they stay read-only too, bound where they really are when the
    name goes through a link (`gitdir: g2`, `g2 -> gd.git`)."""
    out = list(gits)
    real_root = os.path.realpath(root)
    for g in gits:
        for named in lean.git_dirs(g):
            real = os.path.realpath(named)  # as git reaches it, through any link on the way
            if named == g or not lean.inside(real, real_root) or real == real_root:
                continue
            rel = os.path.relpath(real, real_root)
            if kind(root, rel) == "dir":
                out.append(os.path.join(root, rel))
    return tuple(sorted(set(out)))


def writable_dirs(root: str, writable: bool | tuple[str, ...]) -> tuple[str, ...]:
    """The directories whose .git entries a layout protects: the plan cache walks them again."""
    if writable is True:
        return (root,)
    if not writable:
        return ()
    return tuple(os.path.join(root, p.rstrip("/")) for p in writable)
