"""skeleton.around: a git directory whose config is shown redacted, rebuilt over a tmpfs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sbox_shim import layout, skeleton
from sbox_shim.backends.bwrapargs import mount_args
from sbox_shim.backends.docker import container_config
from sbox_shim.plan import Limits, Mount, Network, Step


def _repo(root: Path) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
    git = root / ".git"
    (git / "index.lock").write_text("")  # git's, for a moment
    os.symlink("../githooks", git / "lfs")  # a link, of a name git's companions read
    (git / "notes-of-mine").write_text("x")  # a file no git reads: left out (red team 18)
    os.mkfifo(git / "pipe")
    return git


def test_the_directory_is_a_read_only_tmpfs_with_its_entries_bound_again(tmp_path: Path) -> None:
    root = tmp_path / "p"
    git = _repo(root)
    redacted = [Mount(str(git / "config"), str(git / "config"), kind="redact")]
    out = skeleton.around(redacted, str(root))
    assert out[0] == Mount("", str(git), readonly=True, kind="tmpfs")
    by_name = {os.path.basename(m.target): m for m in out[1:]}
    assert by_name["HEAD"] == Mount(str(git / "HEAD"), str(git / "HEAD"))  # read-only binds
    assert by_name["objects"] == Mount(str(git / "objects"), str(git / "objects"))
    assert by_name["lfs"] == Mount("../githooks", str(git / "lfs"), kind="symlink")  # not followed
    assert "notes-of-mine" not in by_name
    assert "config" not in by_name  # the redacted copy takes its place
    assert "index.lock" not in by_name and "pipe" not in by_name
    # in the plan the tmpfs takes the place of the directory's read-only bind, and comes first
    plan = layout.dedupe([Mount(str(root), str(root), readonly=False), Mount(str(git), str(git)),
                          *redacted, *out])
    targets = [m.target for m in plan]
    assert [m for m in plan if m.target == str(git)] == [out[0]]
    assert targets.index(str(git)) < targets.index(str(git / "HEAD"))


def test_never_over_the_project_or_above_it(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _repo(root)
    for config in (root / "config", tmp_path / "config"):
        assert skeleton.around([Mount(str(config), str(config), kind="redact")], str(root)) == []
    gone = root / "gone" / "config"
    assert skeleton.around([Mount(str(gone), str(gone), kind="redact")], str(root)) == []


def _step(*mounts: Mount) -> Step:
    return Step(label="run", argv=("true",), profile="default", reason="test", mode="sandbox", cwd="/p",
                env=(), network=Network("off"), mounts=mounts, uid=1000, gid=1000, limits=Limits())


def test_bwrap_makes_it_read_only_once_its_entries_are_in_it() -> None:
    mounts = (Mount("/p", "/p", readonly=False), Mount("", "/p/.git", readonly=True, kind="tmpfs"),
              Mount("/p/.git/HEAD", "/p/.git/HEAD"), Mount("", "/home/u", readonly=False, kind="tmpfs"))
    args = mount_args(mounts, data=[("/p/.git/config", 7)])
    last = max(i for i, a in enumerate(args) if a.startswith("--") and a != "--remount-ro")
    remounts = [args[i + 1] for i, a in enumerate(args) if a == "--remount-ro"]
    assert remounts == ["/p/.git", "/dev", "/"]  # the writable tmpfs (HOME) stays writable
    assert args.index("--remount-ro") > last


def test_docker_keeps_the_later_mount_of_a_target() -> None:
    step = _step(Mount("/p/.git", "/p/.git"), Mount("", "/p/.git", readonly=True, kind="tmpfs"),
                 Mount("/p/.git/HEAD", "/p/.git/HEAD"))
    mounts = container_config(step, [], "sbox-test", "image", False)["mounts"]
    at = [m for m in mounts if m["Target"] == "/p/.git"]
    assert len(at) == 1 and at[0]["Type"] == "tmpfs"


def test_what_the_configs_mount_in_it_stays(tmp_path: Path) -> None:
    """Past MAX_REDACTED configs the submodules' git directories are hidden (a tmpfs over
    `modules/`): the rebuilt `.git` must not bind the real `modules/` over that again."""
    root = tmp_path / "p"
    git = _repo(root)
    (git / "modules").mkdir()
    shown = [Mount(str(git / "config"), str(git / "config"), kind="redact"),
             Mount("", str(git / "modules"), readonly=False, kind="tmpfs")]
    out = skeleton.around(shown, str(root))
    assert str(git / "modules") not in [m.target for m in out]
    plan = layout.dedupe([Mount(str(git), str(git)), *shown, *out])
    assert [m for m in plan if m.target == str(git / "modules")] == [shown[1]]


def test_modules_and_worktrees_are_rebuilt_down_to_each_git_directory(tmp_path: Path) -> None:
    """A submodule the host adds while a step runs lands in `modules/` (red team 11): that and
    each directory of names in it are rebuilt too, so nothing added there shows; the submodules'
    and worktrees' git directories are rebuilt, their contents bound."""
    root = tmp_path / "p"
    git = _repo(root)
    sub = git / "modules" / "libs" / "core"
    subprocess.run(["git", "init", "-q", "--bare", str(sub)], check=True, capture_output=True)
    (git / "worktrees" / "w").mkdir(parents=True)
    (git / "worktrees" / "w" / "HEAD").write_text("ref: refs/heads/w\n")
    shown = [Mount(str(p), str(p), kind="redact") for p in (git / "config", sub / "config")]
    out = skeleton.around(shown, str(root))
    tmpfs = [m.target for m in out if m.kind == "tmpfs"]
    assert tmpfs == [str(git), str(git / "modules"), str(git / "modules" / "libs"), str(sub),
                     str(git / "worktrees"), str(git / "worktrees" / "w")]
    binds = {m.target for m in out if m.kind == "bind"}
    assert {str(sub / "objects"), str(git / "objects"), str(git / "worktrees" / "w" / "HEAD")} <= binds
    assert not binds & {str(git / "modules"), str(git / "modules" / "libs"), str(sub), str(sub / "config")}
