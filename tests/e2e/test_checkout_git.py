"""git in the sandbox when the project is a linked worktree or a submodule's checkout.

Their `.git` file names a git directory outside the project (`REPO/.git/worktrees/NAME` and its
common directory `REPO/.git`; `SUPER/.git/modules/NAME`). Before, a sandbox saw a `.git` naming
nothing: `git status` failed ("not a git repository") and so did `go build`, whose VCS stamping
runs git ("error obtaining VCS status"). Now that directory is bound read-only, its configs
redacted: git reads the repository, no credential in its config is seen, nothing is written
there. A `.git` file the directory does not name back (as a sandbox could write one) mounts
nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.boundary import config
from support.sboxcli import run_sbox

pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
TOKEN = "SBOX-CHECKOUT-TOKEN"
GIT = ["git", "-c", "user.email=t@example.test", "-c", "user.name=t", "-c", "protocol.file.allow=always"]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


def _repo(path: Path, subject: str) -> Path:
    path.mkdir(parents=True)
    _git("init", "-q", cwd=path)
    (path / "README").write_text(subject + "\n")
    _git("add", "README", cwd=path)
    _git("commit", "-q", "-m", subject, cwd=path)
    _git("remote", "add", "origin", f"https://me:{TOKEN}@git.example.test/r.git", cwd=path)
    return path


def _worktree(tmp_path: Path, backend: str) -> tuple[Path, Path]:
    repo = _repo(tmp_path / "repo", "the first commit")
    project = tmp_path / "wt"
    _git("worktree", "add", "-q", str(project), cwd=repo)
    config(project, backend)
    return repo, project


# what package code in the step tries: read the repository, its config, and write into it
PROBE = """git log --format=%s; git remote -v; cat "$1/config"
echo 'echo ran' > "$1/hooks/pre-commit" && echo WROTE-HOOK
echo x >> "$2/HEAD" && echo WROTE-HEAD
true"""


def test_git_reads_a_linked_worktree_s_repository_without_its_credentials(tmp_path: Path, sbox_bin: str,
                                                                            backend: str) -> None:
    repo, project = _worktree(tmp_path, backend)
    common, gitdir = repo / ".git", repo / ".git" / "worktrees" / "wt"
    head = (gitdir / "HEAD").read_bytes()
    args = ["sh", "-c", PROBE, "probe", str(common), str(gitdir)]
    # the control: outside sbox, the same probe reads the token and writes the repository
    direct = subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=60)
    assert "the first commit" in direct.stdout and TOKEN in direct.stdout and "WROTE-HOOK" in direct.stdout
    (common / "hooks" / "pre-commit").unlink()
    (gitdir / "HEAD").write_bytes(head)

    result = run_sbox(sbox_bin, ["run", "--", *args], project)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "the first commit" in result.stdout, out  # git works: it reads the repository
    assert "origin\thttps://git.example.test/r.git" in result.stdout, out
    assert TOKEN not in out, out  # the common directory's config is shown redacted
    assert "WROTE" not in result.stdout, out  # read-only
    assert not (common / "hooks" / "pre-commit").exists()
    assert (gitdir / "HEAD").read_bytes() == head
    plan = run_sbox(sbox_bin, ["plan", "--", "true"], project)
    assert f"  git: {common} (this checkout's repository, outside the project: read-only" in plan.stdout, plan.stdout


@pytest.mark.skipif(not shutil.which("go"), reason="go is not installed")
def test_go_build_stamps_the_revision_in_a_linked_worktree(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    repo, project = _worktree(tmp_path, backend)
    (project / "go.mod").write_text("module example.test/m\n\ngo 1.19\n")
    (project / "main.go").write_text("package main\n\nfunc main() {}\n")
    revision = _git("rev-parse", "HEAD", cwd=repo).strip()
    result = run_sbox(sbox_bin, ["run", "--", "sh", "-c", "go build -o out ."], project,
                      env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"})
    assert result.returncode == 0, result.stdout + result.stderr  # was: error obtaining VCS status
    stamped = subprocess.run(["go", "version", "-m", str(project / "out")], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert f"vcs.revision={revision}" in stamped, stamped


def test_git_reads_a_submodule_s_repository(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    lib = _repo(tmp_path / "lib", "the library's commit")
    superproject = _repo(tmp_path / "super", "the superproject's commit")
    _git("submodule", "add", "-q", str(lib), "sub", cwd=superproject)
    project = superproject / "sub"
    modules = superproject / ".git" / "modules" / "sub"
    assert (project / ".git").read_text().strip() == "gitdir: ../.git/modules/sub"
    _git("remote", "set-url", "origin", f"https://me:{TOKEN}@git.example.test/lib.git", cwd=project)
    config(project, backend)
    result = run_sbox(sbox_bin, ["run", "--", "sh", "-c", 'git log --format=%s; cat "$1/config"', "p", str(modules)],
                      project)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "the library's commit" in result.stdout, out
    assert TOKEN in (modules / "config").read_text()  # the control: the token is in the file the sandbox reads
    assert TOKEN not in out, out


def test_a_git_file_its_directory_does_not_name_back_mounts_nothing(tmp_path: Path, sbox_bin: str,
                                                                   backend: str) -> None:
    """A `.git` file as a sandbox could write it in a project with no repository of its own, naming
    another checkout's git directory: the sandbox is not given that repository."""
    repo, _ = _worktree(tmp_path, backend)
    project = tmp_path / "other"
    config(project, backend)
    (project / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'wt'}\n")
    probe = ["sh", "-c", 'cat "$1/config"; git log --format=%s', "p", str(repo / ".git")]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert TOKEN in direct.stdout  # the control: the file names a real repository, readable here
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    out = result.stdout + result.stderr
    assert TOKEN not in out and "the first commit" not in out, out
    plan = run_sbox(sbox_bin, ["plan", "--", "true"], project)
    assert "its gitdir file does not name this project's .git" in plan.stdout + plan.stderr, plan.stdout


def test_a_linked_worktree_s_own_submodules_are_shown_without_their_credentials(tmp_path: Path, sbox_bin: str,
                                                                              backend: str) -> None:
    """Red team 16: `git submodule update` in a linked worktree keeps the submodules' git
    directories in REPO/.git/worktrees/NAME/modules/, where no config was looked for: a token a CI
    checkout leaves in a submodule's config was read as it is (and in the main worktree too)."""
    lib = _repo(tmp_path / "lib", "the library's commit")
    repo = _repo(tmp_path / "repo", "the first commit")
    _git("submodule", "add", "-q", str(lib), "sub", cwd=repo)
    _git("commit", "-q", "-m", "sub", cwd=repo)
    project = tmp_path / "wt"
    _git("worktree", "add", "-q", str(project), cwd=repo)
    _git("submodule", "update", "-q", "--init", cwd=project)
    _git("config", "http.https://git.example.test/.extraheader", f"AUTHORIZATION: basic {TOKEN}-HEADER",
         cwd=project / "sub")
    inner = repo / ".git" / "worktrees" / "wt" / "modules" / "sub" / "config"
    assert f"{TOKEN}-HEADER" in inner.read_text()  # the control: where git keeps it
    config(project, backend)
    config(repo, backend)
    for where in (project, repo):  # the linked worktree, and the main one, whose .git holds it too
        result = run_sbox(sbox_bin, ["run", "--", "sh", "-c", 'grep -rh TOKEN "$1"; git -C sub log --format=%s',
                                     "p", str(repo / ".git")], where)
        out = result.stdout + result.stderr
        assert TOKEN not in out, out
        assert "the library's commit" in result.stdout, out  # git works in the submodule


def test_a_git_file_written_while_a_step_runs_mounts_nothing(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """Red team 16: a worktree removed by hand (`rm -rf`, not `git worktree remove`) leaves its
    entry, whose `gitdir` file still names PATH/.git. A new project at PATH, with no repository of
    its own: a running step (a dev server) writes `.git` naming that entry, and a step planned
    meanwhile passed every check and was given the whole repository. A `.git` that is not what the
    host had when a running step started is not taken now."""
    import time

    repo = _repo(tmp_path / "private", "the private commit")
    (repo / "secret.txt").write_text(f"{TOKEN}-SOURCE\n")
    _git("add", "secret.txt", cwd=repo)
    _git("commit", "-q", "-m", "secret", cwd=repo)
    project = tmp_path / "scratch"
    _git("worktree", "add", "-q", str(project), "-b", "tmp", cwd=repo)
    subprocess.run(["rm", "-rf", str(project)], check=True)  # by hand: the entry stays, "prunable"
    config(project, backend)
    plant = f"gitdir: {repo / '.git' / 'worktrees' / 'scratch'}"
    running = subprocess.Popen([sbox_bin, "run", "--", "sh", "-c", f"echo '{plant}' > .git; i=0; while [ ! -e done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (project / ".git").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (project / ".git").exists(), "the running step did not write .git"
        probe = ["sh", "-c", "git show tmp:secret.txt 2>&1; git show master:secret.txt 2>&1"]
        # the control first: this step's guard, at its end, quarantines the running step's .git too
        direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
        result = run_sbox(sbox_bin, ["run", "--", *probe], project)
        (project / "done").write_text("")  # the running step ends
    finally:
        out, err = running.communicate(timeout=300)
    assert f"{TOKEN}-SOURCE" in direct.stdout  # the control: with that .git, the repository is there to read
    assert f"{TOKEN}-SOURCE" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "quarantined .git (created by the sandbox" in result.stderr + err, result.stderr + err  # a guard moved it
    assert not (project / ".git").exists()
