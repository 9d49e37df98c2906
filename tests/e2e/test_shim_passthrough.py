"""install.sh into a fresh HOME, then a plain `npm` in a real bash: straight through, or sandboxed.

Without a config above the working directory the shim runs the real npm; with one, the same
command runs inside the sandbox, where sbox sets SBOX_ACTIVE=1 (the host shell has none).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.trust import trust

REPO = Path(__file__).resolve().parents[2]
NPM = shutil.which("npm", path="/usr/local/bin:/usr/bin:/bin")

pytestmark = pytest.mark.skipif(NPM is None, reason="npm is not installed")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run install.sh from an unrelated cwd with HOME a fresh temp dir."""
    base = tmp_path_factory.mktemp("install")
    home = base / "home"
    home.mkdir()
    build_before = (REPO / "build").exists()
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "SHELL": "/bin/bash", "LANG": "C.UTF-8"}
    proc = subprocess.run(["bash", str(REPO / "install.sh"), "--prefix", str(base / "venv")], cwd=base, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'eval "$(~/.local/bin/sbox activate bash)"' in proc.stdout
    assert not (home / ".bashrc").exists()  # no rc file edited without --rc
    assert build_before or not (REPO / "build").exists(), "install.sh built inside the checkout"
    return {"home": home, "base": base, "bin": home / ".local" / "bin",
            "shims": home / ".local" / "share" / "sbox" / "shims"}


def _user_env(installed: dict[str, Path]) -> dict[str, str]:
    """The installed user's environment: their HOME, none of this test run's sbox settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBOX_")}
    env.update(HOME=str(installed["home"]), SBOX_DOCKER_HELPER_IDLE="2")  # no docker helper outlives the test
    return env


def _bash(installed: dict[str, Path], script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = _user_env(installed)
    env.update(PATH=f"{installed['bin']}:{os.environ['PATH']}", **extra)
    return subprocess.run(["bash", "-c", f'eval "$(sbox activate bash)"\n{script}'], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_install_layout(installed: dict[str, Path]) -> None:
    link = installed["bin"] / "sbox"
    assert link.is_symlink() and os.readlink(link) == str(installed["base"] / "venv" / "bin" / "sbox")
    text = (installed["shims"] / "npm").read_text()
    assert f"_sbox_bin={installed['base'] / 'venv' / 'bin' / 'sbox'}\n" in text


def test_without_config_npm_is_the_real_npm(installed: dict[str, Path], tmp_path: Path) -> None:
    real = subprocess.run([str(NPM), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = _bash(installed, "npm --version; type npm; sbox shims verify | grep '^npm '", cwd=plain)
    assert proc.returncode == 0, proc.stderr
    version, kind, verify = proc.stdout.splitlines()
    assert version == real
    assert re.fullmatch(rf"npm is (hashed \()?{re.escape(str(installed['shims'] / 'npm'))}\)?", kind), kind
    assert verify.split() == ["npm", "ok", f"({NPM})"]
    assert "sbox:" not in proc.stderr


def test_with_config_npm_runs_in_the_sandbox(installed: dict[str, Path], tmp_path: Path, backend: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml", env=_user_env(installed))
    (project / "package.json").write_text(json.dumps({
        "name": "probe", "version": "1.0.0",
        "scripts": {"env": "node -e \"console.log('active=' + process.env.SBOX_ACTIVE)\""},
    }))
    proc = _bash(installed, "npm run env; sbox doctor >/dev/null && echo doctor-ok", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "active=1" in proc.stdout.splitlines()
    assert "doctor-ok" in proc.stdout
    assert any(l.startswith("sbox: ") and "npm run env" in l and backend in l for l in proc.stderr.splitlines()), \
        proc.stderr
    # the same command one directory up, outside the project, is not sandboxed
    (tmp_path / "package.json").write_text((project / "package.json").read_text())
    proc = _bash(installed, "npm run env", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "active=undefined" in proc.stdout.splitlines()
