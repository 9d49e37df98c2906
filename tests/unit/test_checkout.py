"""checkout.outside_git_dir: which git directory outside the project a step is given, and why not."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sbox_shim.checkout import outside_git_dir

pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.test", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def _worktree(tmp_path: Path, repo_name: str = "repo") -> tuple[Path, Path]:
    repo = tmp_path / repo_name
    repo.mkdir(parents=True)
    _git("init", "-q", cwd=repo)
    _git("commit", "-q", "--allow-empty", "-m", "c", cwd=repo)
    project = tmp_path / "wt"
    _git("worktree", "add", "-q", str(project), cwd=repo)
    return repo, project


def test_a_linked_worktree_gets_its_common_directory(tmp_path: Path) -> None:
    repo, project = _worktree(tmp_path)
    assert outside_git_dir(str(project), ()) == ((str(repo / ".git"),), "")


def test_a_project_with_a_git_directory_or_none_gets_nothing(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert outside_git_dir(str(tmp_path / "plain"), ()) == ((), "")
    _git("init", "-q", str(tmp_path / "own"), cwd=tmp_path)
    assert outside_git_dir(str(tmp_path / "own"), ()) == ((), "")


def test_a_git_directory_that_does_not_name_the_project_back_is_refused(tmp_path: Path) -> None:
    repo, _ = _worktree(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'wt'}\n")
    found, why = outside_git_dir(str(other), ())
    assert found == () and "does not name this project's .git" in why


def test_a_git_directory_where_sandboxes_write_is_refused(tmp_path: Path) -> None:
    repo, project = _worktree(tmp_path)
    assert outside_git_dir(str(project), (str(repo),))[0] == ()  # e.g. sbox's cache
    (repo / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a venv
    found, why = outside_git_dir(str(project), ())
    assert found == () and "the venv" in why


def test_a_repository_opted_in_to_sbox_is_given_only_for_its_own_git_directory(tmp_path: Path) -> None:
    repo, project = _worktree(tmp_path)
    (repo / "sbox.yaml").write_text("version: 1\n")
    assert outside_git_dir(str(project), ()) == ((str(repo / ".git"),), "")  # its sandboxes keep .git read-only
    # a repository inside another opted-in project's tree, which its sandboxes may write
    parent = tmp_path / "outer"
    nested, nested_project = _worktree(parent, "lib")
    (parent / "sbox.yaml").write_text("version: 1\n")
    found, why = outside_git_dir(str(nested_project), ())
    assert found == () and "where sandboxes write" in why and str(parent / "sbox.yaml") in why


def test_a_git_directory_reached_through_a_link_is_refused(tmp_path: Path) -> None:
    repo, project = _worktree(tmp_path)
    os.symlink(repo, tmp_path / "link")
    (project / ".git").write_text(f"gitdir: {tmp_path / 'link' / '.git' / 'worktrees' / 'wt'}\n")
    found, why = outside_git_dir(str(project), ())
    assert found == () and "reached through a link" in why


def test_a_separate_git_dir_without_core_worktree_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    _git("init", "-q", f"--separate-git-dir={tmp_path / 'store.git'}", str(project), cwd=tmp_path)
    found, why = outside_git_dir(str(project), ())
    assert found == () and "core.worktree" in why


def test_a_submodule_checkout_gets_its_git_directory(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    _git("init", "-q", cwd=lib)
    _git("commit", "-q", "--allow-empty", "-m", "c", cwd=lib)
    superproject = tmp_path / "super"
    superproject.mkdir()
    _git("init", "-q", cwd=superproject)
    _git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "sub", cwd=superproject)
    assert outside_git_dir(str(superproject / "sub"), ()) == ((str(superproject / ".git" / "modules" / "sub"),), "")
