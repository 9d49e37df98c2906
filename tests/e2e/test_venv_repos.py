"""Red team 13: a repository in an in-project venv moved by pip's install phase.

`pip install -e git+…` leaves a checkout at `.venv/src/NAME`, a repository whose config may carry a
token. pip's install phase may write the venv, which sbox binds writable on top of the read-only
project; the directories on the way to that repository were not pinned there as they are in a
writable part of the project. A package's setup.py moved `.venv/src/foo` into a `.git` it made
(`.venv/h/.git/stash/foo`), where the plan's walk of a step started meanwhile (a dev server)
does not look: that step read the token and wrote a hook, and once the repository was back the
host's `git commit` there ran it. Here the package's setup.py tries the move itself; the
repository stays where it is, and the move is refused in the sandbox.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.boundary import config
from support.registries import PypiIndex
from support.sboxcli import run_sbox

pytestmark = pytest.mark.skipif(not (shutil.which("python3") and shutil.which("git")),
                                reason="python3 and git are not installed")
PYTHON = shutil.which("python3") or "python3"

MOVE = """import os, sys
venv = sys.prefix
log = os.path.join(venv, "mover.log")
for a, b in (("src/foo", "h/.git/stash/foo"), ("src", "srcX")):
    try:
        os.makedirs(os.path.join(venv, "h", ".git", "stash"), exist_ok=True)
        os.rename(os.path.join(venv, a), os.path.join(venv, b))
        os.rename(os.path.join(venv, b), os.path.join(venv, a))  # back: the race needs it only meanwhile
        said = "moved"
    except OSError as exc:
        said = "refused " + (exc.strerror or "")
    try:
        with open(log, "a") as f:
            f.write(a + ": " + said + "\\n")
    except OSError:
        pass  # the download phase: the venv is read-only there
"""


def _project(tmp_path: Path, backend: str) -> tuple[Path, Path]:
    project = tmp_path / "p"
    config(project, backend)
    venv = project / ".venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    repo = venv / "src" / "foo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", "https://me:SBOX-TOKEN@git.example.test/foo"],
                   check=True, timeout=60)
    return project, venv


def _install(sbox_bin: str, project: Path, venv: Path, name: str, setup_py: str) -> subprocess.CompletedProcess[str]:
    """`sbox run -- .venv/bin/pip install NAME`, an sdist whose setup.py is `setup_py`, from a loopback index."""
    with PypiIndex([pkg.sdist(name, "1.0", setup_py, {f"{name}.py": "OK = 1\n"}, backend="intree")]) as index:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull)
        return run_sbox(sbox_bin, ["run", "--", str(venv / "bin" / "pip"), "install", name], project, env=env)


def test_pip_s_install_phase_cannot_move_a_repository_in_the_venv(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    project, venv = _project(tmp_path, backend)
    log = venv / "mover.log"
    result = _install(sbox_bin, project, venv, "mover", MOVE)
    said = log.read_text() if log.exists() else ""
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "src/foo: refused" in said and "src: refused" in said, said  # the install phase ran it, and was refused
    assert "moved" not in said, said
    assert (venv / "src" / "foo" / ".git" / "config").is_file()
    assert not (venv / "srcX").exists()

    # The control: the same code, run by the venv's python outside sbox, moves the repository (and back).
    log.unlink()
    subprocess.run([str(venv / "bin" / "python"), "-c", MOVE], check=True, timeout=60)
    assert log.read_text() == "src/foo: moved\nsrc: moved\n"


PLANT = """import os, sys
foo = os.path.join(sys.prefix, "src", "foo")
for name, body in ((".githooks/pre-commit", "#!/bin/sh\\ntouch hook-ran\\n"), ("Makefile", "all:\\n\\ttrue\\n")):
    try:
        os.makedirs(os.path.dirname(os.path.join(foo, name)), exist_ok=True)
        with open(os.path.join(foo, name), "w") as f:
            f.write(body)
        os.chmod(os.path.join(foo, name), 0o755)
    except OSError:
        pass  # the download phase: the venv is read-only there
"""


def test_a_hook_planted_in_a_repository_in_the_venv_is_quarantined(tmp_path: Path, sbox_bin: str,
                                                                   backend: str) -> None:
    """Red team 14: the checkout's `core.hooksPath` is `.githooks` (relative, as husky's and most
    teams' are). pip's install phase may write the venv, so package code there wrote
    `.venv/src/foo/.githooks/pre-commit` and a Makefile at the checkout's top; the guard did not
    watch a repository in a hidden directory (or a node_modules), and the host's next `git commit`
    there ran the hook. Now both are quarantined when the step ends."""
    project, venv = _project(tmp_path, backend)
    foo = venv / "src" / "foo"
    subprocess.run(["git", "-C", str(foo), "config", "core.hooksPath", ".githooks"], check=True, timeout=60)
    result = _install(sbox_bin, project, venv, "planter", PLANT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "quarantined .venv/src/foo/.githooks/pre-commit" in result.stderr, result.stderr[-3000:]
    assert "quarantined .venv/src/foo/Makefile" in result.stderr, result.stderr[-3000:]
    assert not (foo / ".githooks" / "pre-commit").exists() and not (foo / "Makefile").exists()

    # The control: planted outside sbox, the host's `git commit` there runs the hook.
    subprocess.run([str(venv / "bin" / "python"), "-c", PLANT], check=True, timeout=60)
    subprocess.run(["git", "-C", str(foo), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True, timeout=60, capture_output=True)
    assert (foo / "hook-ran").exists()
