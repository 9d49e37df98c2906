"""Issue 9, tool configuration written by a sandbox: `.npmrc`, `.cargo/config.toml`, a venv's
`pip.conf`, a requirements file's option lines. Planted by a sandboxed run, each is refused by
the next command until the user trusts it; trusted, it still cannot name an executable for a
phase with the network, a loopback registry, or HOME's secret places.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.boundary import Canary, Sbox, config, refused
from support.registries import NpmRegistry, PypiIndex, StaticServer
from support.trust import trust

PYTHON = shutil.which("python3")
needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")


@pytest.fixture
def sbox(sbox_bin: str) -> Sbox:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "npm_config_"))}
    env.update(PIP_RETRIES="0", PIP_DEFAULT_TIMEOUT="10", npm_config_fetch_retries="0",
               npm_config_update_notifier="false", npm_config_audit="false")
    return Sbox(sbox_bin, env)


def _marker_script(path: Path, marker: Path, then: str = "exit 1") -> str:
    """Shell that writes an executable at `path` recording each run (and its phase) in `marker`."""
    return (f"printf '#!/bin/sh\\necho \"$SBOX_PROFILE\" >> {marker}\\n{then}\\n' > {path} "
            f"&& chmod +x {path}")


# ---------------------------------------------------------------- npm


def _npm_project(root: Path, backend: str, deps: dict[str, str]) -> None:
    config(root, backend)
    (root / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                   "dependencies": deps}))


@needs_npm
def test_npmrc_git_planted_is_refused_and_never_runs(tmp_path: Path, backend: str, sbox: Sbox) -> None:
    root = tmp_path / "proj"
    _npm_project(root, backend, {"dep": "git+http://127.0.0.1:9/dep.git"})
    (root / ".npmrc").write_text("fund=false\n")
    trust(root / ".npmrc")
    marker = root / "x-ran"
    sbox.plant(root, f"{_marker_script(root / 'x.sh', marker)} && echo 'git={root}/x.sh' >> .npmrc")

    sbox.env["npm_config_registry"] = "http://127.0.0.1:9/"  # loopback, nothing listens: no public registry
    refused(sbox.run(root, "npm", "install"), root / ".npmrc")
    assert not marker.exists()

    # Trusted, the setting still never picks the program of a phase with the network.
    sbox.trust(root, ".npmrc")
    sbox.run(root, "npm", "install")
    assert not marker.exists() or "npm:download" not in marker.read_text()

    # Control: the same project outside sbox runs the planted program.
    subprocess.run(["npm", "install"], cwd=root, env=sbox.env, capture_output=True, timeout=120)
    assert marker.exists()


@needs_npm
def test_npmrc_registry_planted_is_refused_and_the_listener_hears_nothing(tmp_path: Path, backend: str,
                                                                          sbox: Sbox) -> None:
    root = tmp_path / "proj"
    _npm_project(root, backend, {"sbox-hello": "1.0.0"})
    with StaticServer() as listener:
        sbox.plant(root, f"echo 'registry={listener.url}/SBOX-DATA-stolen/' > .npmrc")
        refused(sbox.run(root, "npm", "install"), root / ".npmrc")
        assert listener.requests == []


@needs_npm
def test_trusted_project_npmrc_never_reaches_loopback_but_the_users_setting_does(tmp_path: Path, backend: str,
                                                                                 sbox: Sbox) -> None:
    root = tmp_path / "proj"
    _npm_project(root, backend, {"sbox-hello": "1.0.0"})
    hello = pkg.npm_package("sbox-hello", "1.0.0", {"index.js": "module.exports = 42;\n"})
    with NpmRegistry([hello]) as registry:
        (root / ".npmrc").write_text(f"registry={registry.url}/\n")
        sbox.trust(root, ".npmrc")
        result = sbox.run(root, "npm", "install")
        assert result.returncode != 0 and registry.requests == [], result.stderr[-3000:]
        assert not (root / "node_modules" / "sbox-hello").exists()

        # The same URL given by the user (npm_config_registry): an explicit entry, it works.
        result = sbox.run(root, "npm", "install", env=dict(sbox.env, npm_config_registry=f"{registry.url}/"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert (root / "node_modules" / "sbox-hello" / "index.js").is_file()
        assert "/sbox-hello" in registry.requests


# ---------------------------------------------------------------- cargo


def _cargo_project(root: Path, backend: str) -> None:
    config(root, backend)
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n')
    (root / "src" / "main.rs").write_text('fn main() { println!("ok"); }\n')


@needs_cargo
@pytest.mark.parametrize("written_by", ["sandbox", "user"])
def test_cargo_config_rustc(tmp_path: Path, backend: str, sbox: Sbox, written_by: str) -> None:
    """Planted by a sandbox: quarantined at once (rust-analyzer and rustup's proxies, which sbox
    does not front, would run it); put back by the user, refused until trusted. Trusted: ./x never
    runs while cargo fetches."""
    root = tmp_path / "proj"
    _cargo_project(root, backend)
    cargo_home = tmp_path / "cargo-home"
    cargo_home.mkdir()
    env = dict(sbox.env, CARGO_HOME=str(cargo_home), CARGO_TERM_COLOR="never")
    marker = root / "target" / "x-ran"  # cargo's phases may write target/ only
    plant = f"mkdir -p .cargo && printf '[build]\\nrustc = \"./x\"\\n' > .cargo/config.toml && " + \
        _marker_script(root / "x", marker, 'exec rustc \"$@\"')
    if written_by == "sandbox":
        planted = sbox.run(root, "sh", "-c", plant, env=env)
        assert planted.returncode == 0, planted.stderr
        line = [ln for ln in planted.stderr.splitlines() if "quarantined .cargo/config.toml (created" in ln]
        assert line and not (root / ".cargo" / "config.toml").exists(), planted.stderr
        restore = line[0].split("restore: ", 1)[1].split()[1:]  # sbox quarantine restore ID PATH
        assert sbox(root, *restore).returncode == 0
        assert (root / ".cargo" / "config.toml").exists()
        refused(sbox.run(root, "cargo", "build", env=env), root / ".cargo" / "config.toml")
        assert not marker.exists()
        return
    subprocess.run(["sh", "-c", plant], cwd=root, check=True)
    sbox.trust(root, ".cargo/config.toml")
    result = sbox.run(root, "cargo", "build", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    phases = marker.read_text().split()
    assert phases and set(phases) == {"cargo:scripts"}, phases  # the user's rustc, offline only


# ---------------------------------------------------------------- pip


def _venv(root: Path) -> Path:
    venv = root / ".venv"
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    return venv


def _pip_env(sbox: Sbox, venv: Path, **more: str) -> dict[str, str]:
    return dict(sbox.env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **more)


_PROBE = """import os
try:
    data = open({canary!r}).read()
except OSError as e:
    data = "unread: %s" % e
open(os.path.join({root!r}, "probe-%d.txt" % os.getpid()), "w").write(data)
"""


def test_venv_pip_conf_find_links_to_ssh(tmp_path: Path, fake_home: Path, backend: str, sbox: Sbox) -> None:
    """Planted: refused until trusted. Trusted: refused, HOME's secret places are never mounted."""
    secret = Canary.plant(fake_home / ".ssh" / "id_ed25519")
    root = tmp_path / "proj"
    config(root, backend)
    venv = _venv(root)
    probe = pkg.sdist("sbox-probe", "1.0", _PROBE.format(canary=str(secret.path), root=str(root)),
                      {"sbox_probe.py": ""}, backend="intree")
    with PypiIndex([probe]) as index:
        env = _pip_env(sbox, venv, PIP_INDEX_URL=index.index_url)
        sbox.plant(root, f"printf '[global]\\nfind-links = {secret.path.parent}\\n' > .venv/pip.conf")
        result = sbox.run(root, "pip", "install", "sbox-probe", env=env)
        refused(result, venv / "pip.conf")
        secret.assert_unread(result.stdout, result.stderr, trees=[root])

        sbox.trust(root, ".venv/pip.conf")
        result = sbox.run(root, "pip", "install", "sbox-probe", env=env)
        refused(result, secret.path.parent, words="secret places")
        secret.assert_unread(result.stdout, result.stderr, trees=[root])
        assert index.requests == []


def test_requirements_index_url(tmp_path: Path, backend: str, sbox: Sbox) -> None:
    """Planted: refused. Trusted: the proxy refuses the loopback index a project file names,
    while the same index on the command line (the user's word) is reached."""
    root = tmp_path / "proj"
    config(root, backend)
    venv = _venv(root)
    requirements = root / "requirements.txt"
    requirements.write_text("sbox-dep\n")  # no option line: nothing to trust
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]) as index:
        env = _pip_env(sbox, venv, PIP_CONFIG_FILE=os.devnull)
        sbox.plant(root, f"printf -- '--index-url {index.index_url}\\nsbox-dep\\n' > requirements.txt")
        refused(sbox.run(root, "pip", "install", "-r", "requirements.txt", env=env), requirements)
        assert index.requests == []

        sbox.trust(root, "requirements.txt")
        result = sbox.run(root, "pip", "install", "-r", "requirements.txt", env=env)
        assert result.returncode != 0 and index.requests == [], result.stderr[-3000:]

        result = sbox.run(root, "pip", "install", "--index-url", index.index_url, "sbox-dep", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "/simple/sbox-dep/" in index.requests
