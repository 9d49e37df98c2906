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
    found = [value for config in gitconfig.repository_configs(lean.git_dirs(os.path.join(root, ".git")))
             for section, key, value in gitconfig.settings(config)
             if section == "core" and key == "hookspath"]
    if not found or not found[-1] or found[-1].startswith("~"):
        return None
    path = os.path.normpath(os.path.join(root, found[-1]))
    if not (path + "/").startswith(root.rstrip("/") + "/") or path == root:
        return None
    return path


def inspect(root: str, writable: bool | tuple[str, ...], every: bool = False) -> Tree:
    """The facts `layout.project_layout` needs, for a step whose project is `writable`. With
    `every`, the `.git` entries are found for a step that writes nothing too, whose nested
    repositories' configs are then shown redacted: pip's download phase writes nothing but builds
    sdists with the network, and one sent `vendor/lib`'s token through the registry's allowlist
    (red team 10); a step with neither handed it, through a FIFO a writing sandbox made deep in
    `node_modules/`, to that sandbox, which kept it in the project (red team 12)."""
    sockets = lean.sockets(root, SOCKET_DEPTH)
    if writable is True:
        return Tree(gits=_with_git_dirs(root, _git_entries(root)), hooks=hooks_path(root), sockets=sockets)
    if not writable:
        return Tree(gits=_with_git_dirs(root, _git_entries(root)) if every else (), sockets=sockets)
    kinds = tuple((p, kind(root, p)) for p in writable)
    return Tree(kinds, _with_git_dirs(root, _git_entries(root)), hooks_path(root), sockets)


def _git_entries(top: str) -> tuple[str, ...]:
    """gitwalk.git_entries; UsageError if the tree would not hold still while it was walked."""
    from sbox_shim.gitwalk import TooDeep, git_entries

    try:
        found = git_entries(top)
    except TooDeep as exc:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{top}: {exc}, where sbox cannot look for .git entries to keep read-only (another "
                         "sandbox's doing? look for a chain of nested directories); nothing ran") from None
    if found is None:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{top}: the tree kept changing while sbox looked for .git entries in it (another sandbox "
                         "or a watcher moving directories?); nothing ran; run the command again")
    return found


def _with_git_dirs(root: str, gits: tuple[str, ...]) -> tuple[str, ...]:
    """`gits` and the git directories inside the project their `.git` files name (`gitdir: ../repos/sub`,
    a bare `.bare` of worktrees, and its common directory): git runs their hooks and config as it
    runs a `.git` directory's, so they stay read-only too, bound where they really are when the
    name goes through a link (`gitdir: g2`, `g2 -> gd.git`).

    Each `.git` file is read, and each directory it names reached, from the project root one
    directory at a time without following a link: by path, another sandbox writing the project
    that swapped `repos/` for a link to HOME made `repos/sub.git` look outside the project, and
    it was left writable. A directory on the way to a `.git` file that is no longer one, or a
    name that leads out of the project through a link, stops the plan (UsageError)."""
    out = list(gits)
    real_root = os.path.realpath(root)
    for g in gits:
        for named in _named(root, g):
            found = _git_dir_in(root, real_root, named)
            if found is not None and found != g:
                out.append(found)
    return tuple(sorted(set(out)))


def _named(root: str, g: str) -> tuple[str, ...]:
    """What the `.git` entry `g` (found below `root`) names, as lean.git_dirs reads it: for a
    file, its git directory and that one's common directory. Each file is read in its directory
    reached from `root` without following a link (by path outside the project)."""
    rel = os.path.relpath(g, root)
    if rel == ".." or rel.startswith("../"):
        return lean.git_dirs(g)
    fd = _open_at(root, os.path.dirname(rel))
    try:
        mode = os.stat(os.path.basename(rel), dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    try:
        if not stat.S_ISREG(mode):
            return ()
        found = lean.pointer_at(fd, os.path.basename(rel), os.path.dirname(g), "gitdir:")
    finally:
        os.close(fd)
    if found is None:
        return ()
    frel = os.path.relpath(found, root)
    if frel == ".." or frel.startswith("../"):  # outside the project: no sandbox writes there
        common_dir = lean.pointer(os.path.join(found, "commondir"), "")
    else:
        try:
            at = lean.open_along(root, frel)
        except OSError:
            return (found,)  # missing, or a link on the way: _git_dir_in looks again
        try:
            common_dir = lean.pointer_at(at, "commondir", found, "")
        finally:
            os.close(at)
    return (found,) if common_dir is None or common_dir == found else (found, common_dir)


def _open_at(root: str, rel: str) -> int:
    """lean.open_along, the plan stopped (UsageError) where a directory on the way is no longer one."""
    try:
        return lean.open_along(root, rel)
    except OSError:
        raise _changed(os.path.join(root, rel)) from None


def _git_dir_in(root: str, real_root: str, named: str) -> str | None:
    """The directory `named` (absolute, normalized) as the plan binds it: itself when it lies in
    the project with no link on its way; where it really is when a link the host made leads
    elsewhere in the project; None when it is missing, or lies outside the project by name."""
    if not lean.inside(named, root) or named == root:
        real = os.path.realpath(named)
        if lean.inside(real, real_root) and real != real_root and kind(root, os.path.relpath(real, real_root)) == "dir":
            return os.path.join(root, os.path.relpath(real, real_root))
        return None
    rel = os.path.relpath(named, root)
    try:
        os.close(lean.open_along(root, rel))
        return named
    except FileNotFoundError:
        return None  # a `.git` file naming a directory that is gone (a pruned worktree)
    except OSError:
        pass  # a link on the way: where it leads
    try:
        real = os.path.realpath(named)
    except OSError:  # a link that is no longer one as it is read
        raise _changed(named) from None
    if not lean.inside(real, real_root) or real == real_root:
        from sbox_shim.errors import UsageError

        raise UsageError(f"{named}: a git directory named by a .git file in the project, reached through a link "
                         f"that leads outside the project ({real}); sbox cannot keep it read-only; nothing ran")
    try:
        os.close(lean.open_along(root, os.path.relpath(real, real_root)))
    except OSError:
        raise _changed(named) from None
    return os.path.join(root, os.path.relpath(real, real_root))


def _changed(path: str) -> Exception:
    from sbox_shim.errors import UsageError

    return UsageError(f"{path}: no longer a directory reached without a link (changed while sbox planned: "
                      "another sandbox writing this project?); nothing ran")


def writable_dirs(root: str, writable: bool | tuple[str, ...]) -> tuple[str, ...]:
    """The directories whose .git entries a layout protects: the plan cache walks them again.
    The whole project when any of it is writable: a nested repository's config is redacted in
    npm's scripts phase too, which writes `node_modules/` only, and layout.pins keeps each
    repository where it is (red team 9 moved `vendor/lib` into `node_modules/` once that phase
    ran, and it wrote the repository's hooks there)."""
    return (root,) if writable else ()


def walked(writable: bool | tuple[str, ...], mode: str) -> tuple[str, ...] | bool:
    """What the plan cache treats as writable for `writable_dirs`: every sandboxed step is walked
    as one that writes (`inspect`'s `every`)."""
    return writable or mode == "sandbox"
