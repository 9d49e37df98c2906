"""The repository a project is a checkout of, when its git directory lies outside the project.

A linked worktree (`git worktree add ../wt`) holds a `.git` file naming `REPO/.git/worktrees/wt`,
whose `commondir` names `REPO/.git` (objects, refs, config, hooks); a submodule's checkout holds
one naming `SUPER/.git/modules/NAME`. Without them a sandbox sees a `.git` file naming nothing:
git fails there ("not a git repository"), and so does what runs git (`go build`'s VCS stamping,
setuptools-scm's version). So a step is given that git directory read-only, its configs redacted
and rebuilt around as a nested repository's are (configs.git_configs, skeleton.around).

The `.git` file is the project's, which a sandbox may have written (a project with no repository
of its own, writable): it is not taken while it is not what the host had when a step still
running on the tree started (the guard's shared baseline, guard/running.py: red team 16 had a
running step write it, naming a stale worktree entry whose `gitdir` file named this path, and a
step planned meanwhile was given that repository); and the directory it names is taken only if
it names this checkout back, as only git on the host writes it (a worktree's `gitdir` file, a submodule's `core.worktree`), is a
git directory (its `HEAD`), lies in no place a sandbox writes (sbox's caches, a venv, a project
opted in to sbox, but inside that project's own `.git`, which its sandboxes keep read-only), and is
reached by the path the file names, no link on the way (the sandbox sees it there, by that path).
Anything else: nothing is mounted, and the note says why (git then fails in the sandbox as before).
"""
from __future__ import annotations

import os
import stat

from sbox_shim.lean import inside
from sbox_shim.regular import read_regular

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence


def outside_git_dir(root: str, writable: Sequence[str], state_dir: str | None = None) -> tuple[tuple[str, ...], str]:
    """(the git directory to bind read-only: a worktree's common directory, which holds its own,
    or a submodule's; or nothing) and, when the project's `.git` names one that is not taken, why.
    With `state_dir`, a `.git` a step running on the tree may have written is not taken."""
    named = _pointer(os.path.join(root, ".git"), "gitdir:")
    if named is None:
        return (), ""
    if state_dir:
        from sbox_shim.guard.running import made_meanwhile

        if made_meanwhile(state_dir, root, ".git"):
            return (), (f"git does not work in the sandbox: the project's .git was made or changed while a sandboxed "
                        f"step ran on this tree, so sbox does not mount the git directory it names ({named})")
    gitdir = os.path.normpath(os.path.join(root, named))
    real_root = os.path.realpath(root)
    if inside(gitdir, root) or inside(os.path.realpath(gitdir), real_root):
        return (), ""  # in the project: tree.inspect's, kept read-only there
    common_named = _pointer(os.path.join(gitdir, "commondir"), "")
    if common_named is not None:  # a linked worktree
        common = os.path.normpath(os.path.join(gitdir, common_named))
        back = _pointer(os.path.join(gitdir, "gitdir"), "")
        if back is None or os.path.realpath(os.path.join(gitdir, back)) != os.path.join(real_root, ".git"):
            return (), _why(gitdir, "its gitdir file does not name this project's .git")
        if os.path.dirname(gitdir) != os.path.join(common, "worktrees"):
            return (), _why(gitdir, f"it is not in the worktrees of its common directory {common}")
        top = common
    else:  # a submodule's checkout
        worktree = _core_worktree(os.path.join(gitdir, "config"))
        if worktree is None or os.path.realpath(os.path.join(gitdir, worktree)) != real_root:
            return (), _why(gitdir, "its core.worktree does not name this project (a --separate-git-dir "
                                    "repository: keep its git directory in the project)")
        top = gitdir
    for d in dict.fromkeys((top, gitdir)):
        if os.path.realpath(d) != d:
            return (), _why(gitdir, f"{d} is reached through a link (name it by its real path in the .git file)")
        if not _is_git_dir(d):
            return (), _why(gitdir, f"{d} is not a git directory")
        if inside(real_root, d):
            return (), _why(gitdir, f"{d} holds the project")
        place = _written_by_sandbox(d, writable)
        if place:
            return (), _why(gitdir, f"{d} lies where sandboxes write ({place})")
    return (top,), ""


def _why(gitdir: str, reason: str) -> str:
    return (f"git does not work in the sandbox: the project's .git names {gitdir}, outside the project, which "
            f"sbox does not mount: {reason}")


def _pointer(path: str, prefix: str) -> str | None:
    """What a small pointer file (`gitdir: X`, commondir's `X`) names, as written; None if it is
    not a regular file (no last link), or says nothing. Read through `os` (regular.py), so that
    the plan cache notes its bytes."""
    data = read_regular(path, limit=4096)
    if data is None:
        return None
    text = data.decode("utf-8", "replace").strip()
    if not text.startswith(prefix) or "\n" in text:
        return None
    found = text[len(prefix):].strip()
    return found or None


def _core_worktree(config: str) -> str | None:
    from sbox_shim.gitconfig import settings

    values = [v for section, key, v in settings(config) if section == "core" and key == "worktree"]
    return values[-1] if values else None


def _is_git_dir(d: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(d).st_mode) and stat.S_ISREG(os.lstat(os.path.join(d, "HEAD")).st_mode)
    except OSError:
        return False


def _written_by_sandbox(d: str, writable: Sequence[str]) -> str:
    """Where a sandbox could have written `d`: one of `writable`, a venv, or a project opted in to
    sbox (but its own `.git` directory, which every sandbox of that project sees read-only); ""."""
    from sbox_shim.trust.written import opted_in_by, venv_of

    for w in writable:
        if inside(d, w):
            return w
    venv = venv_of(d)
    if venv:
        return f"the venv {venv}"
    opt_in = opted_in_by(d)
    if opt_in:
        own = os.path.join(os.path.dirname(opt_in), ".git")
        try:
            kept = inside(d, own) and stat.S_ISDIR(os.lstat(own).st_mode)
        except OSError:
            kept = False
        if not kept:
            return f"the project of {opt_in}"
    return ""
