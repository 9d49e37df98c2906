"""A git directory whose config a sandbox sees redacted, rebuilt in the sandbox around the copy.

A redacted config (configs.git_configs) is a copy bound over the real file, inside the directory
that holds it (the project's `.git`, a nested repository's, `modules/NAME`, `worktrees/NAME`), which
the sandbox sees through a bind. When the host renames a file over the real config, as git does
for every `git config`, `git remote add`, `git push -u` (a lock file, then a rename), the kernel
detaches every mount on the file it replaced, in every mount namespace: a running sandbox then
read the new config through the directory's bind, its credentials with it (red team 10: 8 of 8
runs on bwrap, 3 of 3 on docker, and the project's own `.git/config` after `git remote add`).

So that directory is rebuilt, and its `modules/` and `worktrees/` (and the directories in
them, down to each submodule's and worktree's git directory), where a config the host adds while
the step runs would be seen as it is: a tmpfs over each (read-only on bwrap; docker cannot make a mount
point in a read-only tmpfs, and what a sandbox writes there goes with its container), each entry
bound on its own, read-only (a directory, a file; a link recreated as it is on bwrap, left out on
docker; anything else, and git's lock files, left out), and the redacted copy in the tmpfs, where
no rename on the host reaches it. What a rename there can still do is detach an entry's bind (git
replaces HEAD and the index so): the sandbox then sees the empty file under it, never the host's.
Each directory is listed through a descriptor, reached from the project's root without following
a link (configs._open_dir), when the plan is made; the plan cache watches its names
(configs.git_config_facts). The tmpfs takes the place of the directory's read-only bind (the
plan keeps the later mount of a target): the guard skips it as it skipped that bind, and the
plan cache walks it as a git directory still.
"""
from __future__ import annotations

import os
import stat

from sbox_shim.lean import inside
from sbox_shim.plan import Mount

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable

TRANSIENT = ("gc.pid",)  # and every `*.lock`: git makes them for a moment
# Left out of a git directory: git-crypt's keys (`git-crypt/keys/default`), which decrypt the files
# it keeps encrypted in every commit, past and future, not only those checked out decrypted; and
# the old remotes files (`remotes/NAME`, `branches/NAME`: `URL: https://user:token@host/…`), whose
# URLs no redaction reads (red team 16). git in the sandbox then knows no remote of those kinds:
# it would have nothing to fetch with the network off.
SECRET = ("git-crypt", "remotes", "branches")
# What a git directory holds that git and its usual companions (git-lfs, git-annex, git-svn, gitk)
# read: everything else at a git directory's top is left out too. Red team 18 kept a token in
# `.git/credentials-store` (`credential.helper = store --file=.git/credentials-store`): the helper
# line was redacted, the file it names was shown as it is; any file a user or tool puts there may
# be such a one. An include file a config names is shown redacted wherever it is (configs.py).
# Not `logs/` either: git writes each reflog entry's command there, URL and all (`clone: from
# https://x-access-token:TOKEN@host/r.git`, `pull https://…`), and red team 19 read the token of a
# `git pull` with one; git in the sandbox then has no reflog (`git reflog`, `git stash list`).
KNOWN = frozenset((
    "HEAD", "config", "config.worktree", "description", "index", "packed-refs", "shallow", "objects", "refs",
    "reftable", "info", "hooks", "modules", "worktrees", "commondir", "gitdir", "locked", "FETCH_HEAD",
    "ORIG_HEAD", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR", "MERGE_AUTOSTASH", "AUTO_MERGE",
    "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD", "BISECT_LOG", "BISECT_START", "BISECT_TERMS",
    "BISECT_EXPECTED_REV", "BISECT_ANCESTORS_OK", "BISECT_NAMES", "BISECT_RUN", "BISECT_HEAD", "COMMIT_EDITMSG",
    "TAG_EDITMSG", "SQUASH_MSG", "EDIT_DESCRIPTION", "NOTES_EDITMSG", "NOTES_MERGE_PARTIAL", "NOTES_MERGE_REF",
    "NOTES_MERGE_WORKTREE", "rebase-merge", "rebase-apply", "sequencer", "rr-cache", "gc.log", "lfs", "annex",
    "svn", "gitk.cache", "fsmonitor--daemon"))


def around(shown: Iterable[Mount], root: str) -> list[Mount]:
    """For each git directory holding the target of one of the redact mounts among `shown`
    (configs.git_configs), and, in it, its `modules/` and `worktrees/` and every directory below
    them down to the git directories there: a read-only tmpfs over it, then its entries bound
    again, but those `shown` mounts something at (the redacted copies; `modules/`, hidden past
    MAX_REDACTED configs). `modules/` is rebuilt even with no submodule's config redacted in it: a
    submodule the host adds while a step runs would be seen there as it is, token and all (red
    team 11, as `git submodule add` and a `git config` there). After the mounts that bind the
    directory, so that at its depth the tmpfs is the later mount."""
    shown = list(shown)
    taken = {m.target for m in shown}
    out: list[Mount] = []
    seen: set[str] = set()
    top = root.rstrip("/") or "/"
    for directory in sorted({os.path.dirname(m.target) for m in shown if m.kind == "redact"}):
        if directory == top or inside(top, directory):
            continue  # never a tmpfs over the project or above it: the copy stays a bind there
        _rebuild(root, directory, "git", taken, seen, out)
    return out


def _rebuild(root: str, directory: str, kind: str, taken: set[str], seen: set[str], out: list[Mount]) -> None:
    """`directory` over a tmpfs, its entries bound again; `kind`: "git" (a git directory),
    "modules" (its `modules/` or a directory of submodule names in it), "worktrees"."""
    if directory in seen:
        return
    listed = entries(root, directory)
    if listed is None:
        return  # gone since the plan found it: its config's own bind fails then
    seen.add(directory)
    out.append(Mount("", directory, readonly=True, kind="tmpfs"))
    for name, what, text in listed:
        path = os.path.join(directory, name)
        if path in taken or name.endswith(".lock") or name in TRANSIENT or (kind == "git" and name in SECRET) \
                or (kind == "git" and name not in KNOWN and not name.startswith("sharedindex.")):
            continue
        if what == "dir" and (kind != "git" or name in ("modules", "worktrees")):
            inner = "worktrees" if kind == "git" and name == "worktrees" else "modules"
            if kind in ("modules", "worktrees"):  # a submodule's or worktree's git directory, or more names
                inner = "git" if kind == "worktrees" or _is_git_dir(root, path) else "modules"
            _rebuild(root, path, inner, taken, seen, out)
        elif what == "link":
            out.append(Mount(text, path, kind="symlink"))
        else:
            out.append(Mount(path, path))
            if kind == "git" and name == "annex" and what == "dir" and entries(root, path + "/creds") is not None:
                # git-annex's special remotes' credentials (S3, WebDAV): hidden (red team 17)
                out.append(Mount("", path + "/creds", readonly=False, kind="tmpfs"))


def _is_git_dir(root: str, path: str) -> bool:
    listed = entries(root, path)
    return listed is not None and ("HEAD", "file", "") in listed


def entries(root: str, directory: str) -> list[tuple[str, str, str]] | None:
    """(name, "dir" | "file" | "link", a link's text) of each entry of `directory` that is one of
    those, listed through a descriptor; None if it cannot be opened or listed."""
    from sbox_shim.configs import _open_dir

    fd = _open_dir(root, directory)
    if fd is None:
        return None
    try:
        listed = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        os.close(fd)
        return None
    out = []
    try:
        with os.scandir(listed) as listing:
            for e in listing:
                st = os.stat(e.name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    out.append((e.name, "dir", ""))
                elif stat.S_ISREG(st.st_mode):
                    out.append((e.name, "file", ""))
                elif stat.S_ISLNK(st.st_mode):
                    out.append((e.name, "link", os.readlink(e.name, dir_fd=fd)))
    except OSError:
        return None
    finally:
        os.close(listed)
        os.close(fd)
    return sorted(out)
