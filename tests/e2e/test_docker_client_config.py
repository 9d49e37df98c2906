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


def _no_bwrap(env: dict[str, str]) -> None:
    """`backend: auto` chooses docker, whose SDK then runs in sbox's own process (no helper): as
    on a host where user namespaces are off (the probe's answer, kept for a day)."""
    import time

    cache = Path(env["SBOX_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "probe-bwrap.json").write_text(json.dumps({"time": time.time(), "reason": "off for this test"}))


@pytest.mark.parametrize("backend", ["auto", "docker"])
@pytest.mark.parametrize("planted", ["config.json a link into a project", "a helper named with a path"])
def test_a_config_that_names_a_program_to_run_from_a_project_is_not_read(
        tmp_path: Path, sbox_bin: str, docker_backend: str, registry_port: int, planted: str, backend: str) -> None:
    """The config file the SDK would pick is a link into another opted-in project (dotfiles kept
    with stow), or names its credential helper `x/../evil`, which the SDK resolves against the
    working directory, the project: neither runs anything. The control: the same helper named
    plainly, in a config of the user's own, runs."""
    canary = tmp_path / "canary"
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    project = _project(tmp_path / "project", f"127.0.0.1:{registry_port}/sbox/none:1")
    (project / "sbox.yaml").write_text((project / "sbox.yaml").read_text().replace("backend: docker", f"backend: {backend}"))
    trust(project / "sbox.yaml")
    tools = tmp_path / "tools"
    _helper(tools, canary)
    if planted.startswith("config.json"):
        dotfiles = _project(tmp_path / "dotfiles")
        (dotfiles / "docker-config.json").write_text(json.dumps({"credsStore": "sboxcanary"}))
        (home / ".docker" / "config.json").symlink_to(dotfiles / "docker-config.json")
    else:
        (home / ".docker" / "config.json").write_text(json.dumps({"credsStore": "x/../evil"}))
        (project / "docker-credential-x").mkdir()
        evil = project / "evil"
        evil.write_text(HELPER.format(canary=canary))
        evil.chmod(0o755)
    env = dict(os.environ, HOME=str(home), PATH=f"{tools}:{os.environ['PATH']}", SBOX_DOCKER_HELPER_IDLE="0")
    env.pop("DOCKER_CONFIG", None)
    if backend == "auto":
        _no_bwrap(env)
    run = _sbox(sbox_bin, project, env, "true")
    assert run.returncode == 125, run.stderr
    assert not canary.exists(), canary.read_text()

    (home / ".docker" / "config.json").unlink()
    (home / ".docker" / "config.json").write_text(json.dumps({"credsStore": "sboxcanary"}))  # control
    run = _sbox(sbox_bin, project, env, "true")
    assert run.returncode == 125, run.stderr
    assert canary.read_text().startswith(f"ran {os.getuid()} get"), run.stderr


def test_the_config_sbox_reads_instead_lies_in_its_state_not_in_tmpdir(tmp_path: Path, sbox_bin: str,
                                                                      docker_backend: str) -> None:
    """DOCKER_CONFIG in the project (an .envrc) is not read; the empty config sbox reads instead is
    its own, in its state directory, never in a TMPDIR that lies in the project too, where a
    concurrent sandbox could fill it before the SDK reads it."""
    project = _project(tmp_path / "project")
    config = _config(project / ".docker", {"credsStore": "sboxcanary"})
    (project / ".tmp").mkdir()
    env = dict(os.environ, DOCKER_CONFIG=str(config), TMPDIR=str(project / ".tmp"), SBOX_DOCKER_HELPER_IDLE="0")
    run = _sbox(sbox_bin, project, env, "true")
    assert run.returncode == 0, run.stderr
    assert list((project / ".tmp").iterdir()) == []
    empty = Path(env["SBOX_STATE_DIR"]) / "docker" / "empty-config" / "config.json"
    assert empty.read_text() == "{}" and empty.stat().st_mode & 0o077 == 0
