"""Docker-specific behaviour: fail closed without a daemon, a local base image, a real npm install."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.sboxcli import run_sbox
from support.spec import SPEC_PROFILES
from support.trust import trust

SPEC_CONFIG = "version: 1\nbackend: docker\n" + SPEC_PROFILES


def test_no_daemon_fails_closed_with_one_line(tmp_path: Path, sbox_bin: str) -> None:
    (tmp_path / "sbox.yaml").write_text("backend: docker\n")
    trust(tmp_path / "sbox.yaml")
    marker = tmp_path / "ran"
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-such.sock")
    result = run_sbox(sbox_bin, ["run", "--", "sh", "-c", f"touch {marker}"], tmp_path, env=env)
    assert result.returncode == 125
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Docker daemon" in lines[0] and "start one" in lines[0]
    assert not marker.exists()


def test_base_image_is_built_locally_without_a_pull(docker_backend: str) -> None:
    import docker

    from sbox_shim.backends.docker import ensure_base_image

    client = docker.from_env(version="auto")
    tag = ensure_base_image(client, (("/bin", "usr/bin"),))
    image = client.images.get(tag)
    assert image.labels.get("io.sbox.base") == "1"
    assert not image.attrs.get("RepoDigests")  # never came from a registry


@pytest.mark.network
def test_plan_prints_profiles_and_the_spec_line(tmp_path: Path, sbox_bin: str) -> None:
    (tmp_path / "sbox.yaml").write_text(SPEC_CONFIG)
    trust(tmp_path / "sbox.yaml")
    out = run_sbox(sbox_bin, ["plan", "--", "npm", "install", "--ignore-scripts"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "profile: download (dispatch rule 'npm-download' matched 'npm install --ignore-scripts*')" in out.stdout
    assert re.search(r"^  network_allow: \[resolved\] registry\.npmjs\.org=[0-9a-f.:/]+.*; \[patterns\] \*\.npmjs\.org",
                     out.stdout, re.M), out.stdout
    out = run_sbox(sbox_bin, ["plan", "--", "npm", "rebuild"], tmp_path)
    assert "profile: scripts (dispatch rule 'npm-rebuild' matched 'npm rebuild*')" in out.stdout
    assert "network: off" in out.stdout
    out = run_sbox(sbox_bin, ["plan", "--json", "--", "npm", "install", "--ignore-scripts"], tmp_path)
    import json

    data = json.loads(out.stdout)
    assert data["steps"][0]["profile"] == "download"
    assert data["steps"][0]["network"]["allow_line"].startswith("network_allow: [resolved] registry.npmjs.org=")


@pytest.mark.network
def test_real_npm_install_through_the_spec_allowlist(tmp_path: Path, sbox_bin: str, docker_backend: str) -> None:
    (tmp_path / "sbox.yaml").write_text(SPEC_CONFIG)
    trust(tmp_path / "sbox.yaml")
    (tmp_path / "package.json").write_text('{"name": "demo", "version": "1.0.0", "private": true}\n')
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                                 "is-number@7.0.0"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = tmp_path / "node_modules" / "is-number" / "package.json"
    assert installed.is_file()
    assert '"version": "7.0.0"' in installed.read_text()
    st = installed.stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # this project's containers only (bound in each): other suites may share the daemon
    leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.sbox.run", "--filter", f"volume={tmp_path}"],
                               capture_output=True, text=True, check=True).stdout
    assert leftovers.strip() == ""
