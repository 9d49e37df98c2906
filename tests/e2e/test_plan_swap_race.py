"""Planning a step while another sandbox swaps a directory of the project for a link.

A sandbox with the project writable (a dev server) swaps `sub/`, which holds a nested repository
whose config carries a credential, and `sub.x`, a link to a HOME-like directory without one, in a
loop, while sbox plans another step. The plan shows each git config of the project redacted in
the sandbox (configs.git_configs); a config the planning walk does not see is shown as it is, in
that step and in every later run of its kept plan. Nothing is mocked: sbox's own functions, a
real concurrent process, the files on disk.
"""
from __future__ import annotations

import os
from pathlib import Path

from sbox_shim import configs, tree
from sbox_shim.errors import UsageError
from tests.support import flipper

def test_a_nested_repository_s_config_is_never_left_unredacted_by_a_swap(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)  # the same name, no repository in it
    root = tmp_path / "project"
    repo = root / "sub" / ".git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "config").write_text('[remote "origin"]\n\turl = https://me:SBOX-TOKEN@git.example.test/x.git\n')
    (root / "sub.x").symlink_to(home / "sub")
    config = str(repo / "config")
    gits = tree.inspect(str(root), True).gits  # found before the race, as a plan's first look does
    assert str(repo) in gits
    # The control: unraced, the config is shown redacted.
    assert config in [m.source for m in configs.git_configs(str(root), gits)]
    flipping = flipper.start(root, "sub", "sub.x")
    shown = refused = left = through_link = 0
    try:
        for _ in range(3000):
            through_link += not os.path.isdir(repo)  # live: by path, `sub` is now and then HOME's
            try:
                mounts = configs.git_configs(str(root), gits)
            except UsageError as exc:
                assert "no longer a directory reached without a link" in str(exc)
                refused += 1
                continue
            if config in [m.source for m in mounts if m.kind == "redact"]:
                shown += 1
            else:
                left += 1
    finally:
        flipping.kill()
        flipping.wait()
    assert through_link, "the swap never showed HOME's directory by path: the check would prove nothing"
    assert shown, "the config was never planned redacted: the check would prove nothing"
    assert not left, f"{left} of {shown + left} plans left the nested repository's config unredacted ({refused} refused)"


def test_a_git_directory_a_git_file_names_is_never_left_writable_by_a_swap(tmp_path: Path) -> None:
    """`sub/.git` says `gitdir: ../repos/sub.git`: git runs that directory's hooks and config in
    `sub`, so a writable step gets it read-only (tree.inspect's gits). Found by path, `repos`
    swapped for a link to HOME's made it lie outside the project, and it was left writable."""
    home = tmp_path / "home"
    (home / "repos").mkdir(parents=True)
    root = tmp_path / "project"
    gitdir = root / "repos" / "sub.git"
    (gitdir / "hooks").mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "sub").mkdir()
    (root / "sub" / ".git").write_text("gitdir: ../repos/sub.git\n")
    (root / "repos.x").symlink_to(home / "repos")
    assert str(gitdir) in tree.inspect(str(root), True).gits  # the control: unraced, it is protected
    flipping = flipper.start(root, "repos", "repos.x")
    kept = refused = left = through_link = 0
    crashed: list[str] = []
    try:
        for _ in range(3000):
            through_link += not os.path.isdir(gitdir)
            try:
                gits = tree.inspect(str(root), True).gits
            except UsageError as exc:
                assert any(w in str(exc) for w in ("outside the project", "no longer", "kept changing")), str(exc)
                refused += 1
                continue
            except OSError as exc:  # planning failing with a traceback, not a line
                crashed.append(repr(exc))
                continue
            if str(gitdir) in gits:
                kept += 1
            elif str(root / "sub" / ".git") in gits:  # the walk saw `sub/.git`, and not where it leads
                left += 1
    finally:
        flipping.kill()
        flipping.wait()
    assert through_link, "the swap never showed HOME's directory by path: the check would prove nothing"
    assert kept, "the git directory was never protected: the check would prove nothing"
    assert not left, f"{left} of {kept + left} plans left the git directory writable ({refused} refused)"
    assert not crashed, f"{len(crashed)} plans failed with an exception: {sorted(set(crashed))[:3]}"


def test_a_nested_repository_moved_while_the_plan_walks_is_found_where_it_is(tmp_path: Path) -> None:
    """Red team 8: another sandbox moves `vendor/lib` (a nested repository whose config carries a
    credential) to `zz/lib`, a directory the plan's walk has listed already, and back: the walk
    never saw the repository, so its `.git` was neither read-only nor its config redacted, and a
    sandbox read the token. The plan finds it where it is, or stops."""
    root = tmp_path / "project"
    repo = root / "vendor" / "lib" / ".git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "config").write_text('[remote "origin"]\n\turl = https://me:SBOX-TOKEN@git.example.test/x.git\n')
    (root / "zz").mkdir()  # the walk lists it before or after `vendor`, as the directory's order has it
    for n in range(30):  # some width, so that a walk takes a while
        (root / "vendor" / f"d{n}").mkdir()
    assert str(repo) in tree.inspect(str(root), True).gits  # the control: unraced, it is found
    _found_while_moving(root, "vendor/lib", "zz/lib", (repo, root / "zz" / "lib" / ".git"), 3000)


def test_a_directory_renamed_at_the_top_while_the_plan_walks_hides_no_repository(tmp_path: Path) -> None:
    """Red team 8: `vendor` (holding a nested repository) renamed to `vendorX` and back at the top
    of the walk: listed by one name, gone when the walk opened it, and only the top's ctime
    changed, which the look again took for the top's own rename. The plan went on without the
    repository, and the step read its token and wrote its hooks (8 of 30 runs)."""
    root = tmp_path / "project"
    repo = root / "vendor" / "lib" / ".git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    for n in range(30):  # width: the walk takes a while
        (root / f"a{n}" / "b" / "c").mkdir(parents=True)
    assert str(repo) in tree.inspect(str(root), True).gits  # the control: unraced, it is found
    _found_while_moving(root, "vendor", "vendorX", (repo, root / "vendorX" / "lib" / ".git"), 2000)


def _found_while_moving(root: Path, a: str, b: str, places: tuple[Path, Path], rounds: int) -> None:
    """Plan `rounds` times while another process moves `root/a` to `root/b` and back: each plan
    finds the repository at one of `places`, or stops with one line."""
    flipping = flipper.start(root, a, b, move=True)
    seen = refused = missed = 0
    try:
        for _ in range(rounds):
            try:
                gits = tree.inspect(str(root), True).gits
            except UsageError as exc:
                assert "kept changing" in str(exc) or "no longer" in str(exc), str(exc)
                refused += 1
                continue
            if any(str(p) in gits for p in places):
                seen += 1
            else:
                missed += 1
    finally:
        flipping.kill()
        flipping.wait()
    assert seen, "the repository was never found: the check would prove nothing"
    assert not missed, f"{missed} of {seen + missed} plans did not find the repository ({refused} refused)"
