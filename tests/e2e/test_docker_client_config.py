"""Docker's client config (`config.json`) on the host: a credential helper it names runs only from
where no sandbox could have put it, a config a sandbox could have written is not read, and its
proxies (credentials included) reach no container. Each attack is planted for real; each control
shows the same config doing what it says where sbox is not in the way."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from support.trust import trust

SECRET = "proxy-password-canary-81c2"
HELPER = """#!/bin/sh
echo "ran $(id -u) $*" >> {canary}
echo '{{"ServerURL":"","Username":"u","Secret":"s"}}'
"""


@pytest.fixture
def registry_port() -> Iterator[int]:
    """A loopback port that accepts and closes: the image's registry, which has nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def _project(root: Path, image: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    body = "version: 1\nbackend: docker\n"
    if image:
        body += f"profiles:\n  default:\n    image: {image}\n"
    (root / "sbox.yaml").write_text(body)
    trust(root / "sbox.yaml")
    return root


def _helper(directory: Path, canary: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    helper = directory / "docker-credential-sboxcanary"
    helper.write_text(HELPER.format(canary=canary))
    helper.chmod(0o755)


def _config(directory: Path, body: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(body))
    return directory


def _sbox(sbox_bin: str, cwd: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sbox_bin, "run", "--", *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("planted", ["helper on PATH in a project", "config in a project"])
def test_a_credential_helper_a_sandbox_could_plant_never_runs_on_the_host(
        tmp_path: Path, sbox_bin: str, docker_backend: str, registry_port: int, planted: str) -> None:
    canary = tmp_path / "canary"
    image = f"127.0.0.1:{registry_port}/sbox/none:1"
    project = _project(tmp_path / "project", image)
    inside_bin, outside_bin = project / "node_modules" / ".bin", tmp_path / "tools"
    if planted == "helper on PATH in a project":
        _helper(inside_bin, canary)
        config = _config(tmp_path / "docker-config", {"credsStore": "sboxcanary"})
        path = f"{inside_bin}:{os.environ['PATH']}"
    else:
        _helper(outside_bin, canary)
        config = _config(project / ".docker", {"credsStore": "sboxcanary"})
        path = f"{outside_bin}:{os.environ['PATH']}"
    env = dict(os.environ, DOCKER_CONFIG=str(config), PATH=path, SBOX_DOCKER_HELPER_IDLE="0")
    run = _sbox(sbox_bin, project, env, "true")
    assert run.returncode == 125 and "is not available" in run.stderr, run.stderr  # the pull failed
    assert not canary.exists(), canary.read_text()

    # Control: the same helper, found on PATH outside every project and named by a config outside
    # every project, is run by the same pull.
    _helper(outside_bin, canary)
    config = _config(tmp_path / "docker-config-outside", {"credsStore": "sboxcanary"})
    env = dict(env, DOCKER_CONFIG=str(config), PATH=f"{outside_bin}:{os.environ['PATH']}")
    run = _sbox(sbox_bin, project, env, "true")
    assert run.returncode == 125, run.stderr
    assert canary.read_text().startswith(f"ran {os.getuid()} get"), run.stderr


def test_the_config_s_proxies_reach_no_container(tmp_path: Path, sbox_bin: str, docker_backend: str) -> None:
    proxy = f"http://alice:{SECRET}@127.0.0.1:9/"
    config = _config(tmp_path / "docker-config", {"proxies": {"default": {"httpProxy": proxy, "httpsProxy": proxy}}})
    project = _project(tmp_path / "project")
    env = dict(os.environ, DOCKER_CONFIG=str(config), SBOX_DOCKER_HELPER_IDLE="0")
    run = _sbox(sbox_bin, project, env, "sh", "-c", "env")
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout

    # Control: the docker CLI puts the same proxies, password and all, into a container it makes.
    image = subprocess.run(["docker", "images", "--filter", "label=io.sbox.run", "--format",
                            "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True).stdout.split()[0]
    made = subprocess.run(["docker", "create", "--label", "io.sbox.run=test", image, "/usr/bin/true"], env=env,
                          capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    try:
        seen = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", made], capture_output=True,
                              text=True, check=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", made], capture_output=True)
    assert SECRET in seen, seen
