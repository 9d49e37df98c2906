"""git-crypt's keys are not in the sandbox's view of a git directory.

`git-crypt unlock` keeps the repository's symmetric key in `.git/git-crypt/keys/default`: with
it, every encrypted file in every commit (and every later one pushed) can be decrypted, not only
what is checked out. Every sandbox saw the project's `.git`, key included. The git directory is
rebuilt in the sandbox entry by entry (skeleton.py); that entry is now left out.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.boundary import config
from support.sboxcli import run_sbox

pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
KEY = "SBOX-GIT-CRYPT-KEY"


def _project(tmp_path: Path, backend: str) -> Path:
    project = tmp_path / "p"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, timeout=60)
    keys = project / ".git" / "git-crypt" / "keys"
    keys.mkdir(parents=True)
    (keys / "default").write_text(KEY)  # as `git-crypt unlock` leaves it (binary there; text here)
    config(project, backend)
    return project


def test_git_crypt_s_key_is_not_in_the_sandbox(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    project = _project(tmp_path, backend)
    probe = ["sh", "-c", "cat .git/git-crypt/keys/default; ls .git; git status --short >/dev/null && echo GIT-OK"]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert KEY in direct.stdout  # the control: the key is there to read
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    out = result.stdout + result.stderr
    assert KEY not in out, out
    assert "HEAD" in result.stdout and "GIT-OK" in result.stdout, out  # the rest of .git is there, git works
    assert (project / ".git" / "git-crypt" / "keys" / "default").read_text() == KEY  # the host's is untouched


def test_old_style_remotes_files_are_not_in_the_sandbox(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """Red team 16: `.git/remotes/NAME` (`URL: https://user:token@host/…`), git's old way to name a
    remote, was shown as it is: no config redaction reads it."""
    project = _project(tmp_path, backend)
    for kind in ("remotes", "branches"):
        (project / ".git" / kind).mkdir(exist_ok=True)
        (project / ".git" / kind / "old").write_text(f"URL: https://me:{KEY}-{kind}@git.example.test/r.git\n")
    probe = ["sh", "-c", "cat .git/remotes/old .git/branches/old; git status --short >/dev/null && echo GIT-OK"]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert f"{KEY}-remotes" in direct.stdout and f"{KEY}-branches" in direct.stdout  # the control
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    assert KEY not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "GIT-OK" in result.stdout


def test_an_included_config_and_annex_credentials_are_not_shown(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """Red team 17: `.git/config` with `[include] path = credentials.inc` kept its extraHeader in a
    file no redaction read, and git-annex keeps its special remotes' credentials in
    `.git/annex/creds/`: both were bound as they are. The include is now shown redacted, the
    credentials hidden; git still reads the rest of the included file."""
    project = _project(tmp_path, backend)
    git = project / ".git"
    (git / "credentials.inc").write_text(f"[http]\n\textraHeader = Authorization: Bearer {KEY}-INCLUDE\n"
                                         "[user]\n\tname = included-name\n")
    subprocess.run(["git", "config", "include.path", "credentials.inc"], cwd=project, check=True, timeout=60)
    (git / "annex" / "creds").mkdir(parents=True)
    (git / "annex" / "creds" / "uuid-1").write_text(f"AWSKEY {KEY}-ANNEX\n")
    probe = ["sh", "-c", "cat .git/credentials.inc .git/annex/creds/uuid-1 2>&1; git config user.name"]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert f"{KEY}-INCLUDE" in direct.stdout and f"{KEY}-ANNEX" in direct.stdout  # the control
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    assert KEY not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "included-name" in result.stdout, result.stdout  # the include, redacted, still read by git


def test_a_file_git_does_not_know_in_the_git_directory_is_not_in_the_sandbox(tmp_path: Path, sbox_bin: str,
                                                                              backend: str) -> None:
    """Red team 18: `credential.helper = store --file=.git/credentials-store` keeps a token in a
    file of the git directory that no redaction reads; the helper line was redacted, the file
    shown as it is. Only what git and its usual companions read is in the sandbox's git directory."""
    project = _project(tmp_path, backend)
    (project / ".git" / "credentials-store").write_text(f"https://ci:{KEY}-STORE@git.example.test\n")
    subprocess.run(["git", "config", "credential.helper", "store --file=.git/credentials-store"], cwd=project,
                   check=True, timeout=60)
    (project / ".git" / "lfs").mkdir()
    probe = ["sh", "-c", "cat .git/credentials-store 2>&1; ls .git; git status --short >/dev/null && echo GIT-OK"]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert f"{KEY}-STORE" in direct.stdout  # the control
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    assert KEY not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "GIT-OK" in result.stdout and "lfs" in result.stdout.split(), result.stdout


def test_a_token_in_a_reflog_is_not_in_the_sandbox(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """Red team 19: git writes each reflog entry's command, URL and all, to `logs/` (`clone: from
    https://x-access-token:TOKEN@host/r.git`, a `git pull` of one): a CI job's token was read
    there. The sandbox's git directory has no `logs/`; git works without its reflog."""
    project = _project(tmp_path, backend)
    git = ["git", "-c", "user.email=a@b.test", "-c", "user.name=a"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], cwd=project, check=True, timeout=60)
    subprocess.run([*git, "update-ref", "-m", f"pull https://ci:{KEY}-LOG@git.example.test/r.git: Fast-forward",
                    "HEAD", "HEAD"], cwd=project, check=True, timeout=60)  # the entry a pull writes
    probe = ["sh", "-c", "cat .git/logs/HEAD 2>&1; git log --oneline | wc -l"]
    direct = subprocess.run(probe, cwd=project, capture_output=True, text=True, timeout=60)
    assert f"{KEY}-LOG" in direct.stdout  # the control
    result = run_sbox(sbox_bin, ["run", "--", *probe], project)
    assert KEY not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.strip().endswith("1"), result.stdout  # git log still works
