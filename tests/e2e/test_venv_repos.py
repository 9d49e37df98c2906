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


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_pip_s_install_phase_cannot_move_a_repository_in_the_venv(tmp_path: Path, sbox_bin: str,
                                                                 backend: str) -> None:
    from conftest import require_backend

    require_backend(backend)
    project, venv = _project(tmp_path, backend)
    log = venv / "mover.log"
    with PypiIndex([pkg.sdist("mover", "1.0", MOVE, {"mover.py": "OK = 1\n"}, backend="intree")]) as index:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull)
        result = run_sbox(sbox_bin, ["run", "--", str(venv / "bin" / "pip"), "install", "mover"], project, env=env)
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
