"""A later step's container, started while the step before it runs (backends/dockerahead.py): its
command waits for sbox's go, which comes only when every bind under the project is, as the waiting
container sees it, what sbox opens at the step's turn; one not used is never left behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from support import packages as pkg
from support.registries import PypiIndex
from support.trust import trust

from sbox_shim.plan import Mount, Network, Step


def _step(project: Path) -> Step:
    from sbox_shim.layout import toolchain_mounts

    out = project / "out"
    return Step(label="scripts", argv=("/bin/sh", "-c", "echo ran > out/ran"), profile="default", reason="test",
                mode="sandbox", cwd=str(project), env=(("PATH", "/usr/bin:/bin"), ("HOME", "/tmp")),
                network=Network("off"),
                mounts=(*toolchain_mounts(), Mount(str(project), str(project)), Mount(str(out), str(out), readonly=False)),
                uid=os.getuid(), gid=os.getgid(), project=str(project))


@pytest.fixture
def started(tmp_path: Path, docker_backend: str) -> Iterator[tuple[Step, object, str]]:
    """Step 1 of a run, its container started ahead as the runner has it while step 0 runs."""
    from sbox_shim.backends import docker, dockerahead

    project, run_dir = tmp_path / "project", tmp_path / "run"
    (project / "out").mkdir(parents=True)
    run_dir.mkdir()
    step = _step(project)
    api = docker._client()
    docker.ahead(step, str(run_dir), 1)
    dockerahead.kick(api)
    ahead = dockerahead.take(step, 1)
    try:
        yield step, ahead, str(run_dir)
    finally:
        if ahead is not None:
            ahead.discard()
        docker.discard()


def test_the_command_waits_for_go_then_runs_in_the_container_started_ahead(started: tuple[Step, object, str]) -> None:
    from sbox_shim.backends import docker
    from sbox_shim.backends.dockerahead import Ahead

    step, ahead, _ = started
    assert isinstance(ahead, Ahead) and ahead.box is not None
    out = Path(step.cwd) / "out" / "ran"
    time.sleep(0.5)
    assert not out.exists()  # started, mounted, and nothing of the step ran
    assert ahead.ready()
    code = docker.attach_and_run(docker._client(), ahead.box, False, None, sock=ahead.sock, go=ahead.go)
    assert code == 0 and out.read_text() == "ran\n"


def test_a_bind_swapped_after_the_container_started_is_refused_and_the_step_gets_a_new_one(
        started: tuple[Step, object, str]) -> None:
    from sbox_shim.backends import docker
    from sbox_shim.backends.dockerahead import Ahead

    step, ahead, run_dir = started
    assert isinstance(ahead, Ahead)
    out = Path(step.cwd) / "out"
    out.rename(out.with_name("out-old"))  # what the waiting container holds now is not the project's out/
    out.mkdir()
    assert not ahead.ready()
    ahead.discard()
    assert docker.run(step, run_dir, 1) == 0  # nothing planned ahead any more: a container made now
    assert (out / "ran").read_text() == "ran\n"
    assert not (out.with_name("out-old") / "ran").exists()


def test_no_container_is_started_ahead_through_a_link_the_project_holds(tmp_path: Path, docker_backend: str) -> None:
    """The red team's race, made deterministic: when the next step's container is to start, a
    racing sandbox has swapped a writable bind (out/) for a link to a directory outside the project.
    Docker follows links in a bind's source: a container made then would hold that directory,
    writable, until the step's turn. So none is made, the outside directory is never mounted, and
    at its turn (out/ put back) the step gets a container made then. The control: with out/ a
    directory, the container is started ahead."""
    from sbox_shim.backends import docker, dockerahead

    project, run_dir, outside = tmp_path / "project", tmp_path / "run", tmp_path / "outside"
    (project / "out").mkdir(parents=True)
    run_dir.mkdir()
    outside.mkdir()
    step = _step(project)
    api = docker._client()
    try:
        for swapped in (False, True):
            out = project / "out"
            if swapped:
                out.rename(project / "out-real")
                out.symlink_to(outside)
            docker.ahead(step, str(run_dir), 1)
            dockerahead.kick(api)
            ahead = dockerahead._PLANNED[1]
            assert ahead.thread is not None
            ahead.thread.join()
            sources = [] if ahead.box is None else [m["Source"] for m in api.inspect_container(ahead.box.id)["Mounts"]]
            assert (ahead.box is not None) == (not swapped)
            assert str(outside) not in sources
            if swapped:
                out.unlink()
                (project / "out-real").rename(out)
            taken = dockerahead.take(step, 1)
            assert (taken is not None) == (not swapped)
            if taken is not None:
                taken.discard()
        assert docker.run(step, str(run_dir), 1) == 0  # at its turn: a container made then
        assert (project / "out" / "ran").read_text() == "ran\n"
        assert list(outside.iterdir()) == []
    finally:
        docker.discard()


def test_a_container_started_ahead_for_a_step_that_never_comes_is_removed(tmp_path: Path, sbox_bin: str,
                                                                       docker_backend: str) -> None:
    """Phase 1 fails (a requirement the index does not have): phase 2's container, started while
    phase 1 ran, goes with the run."""
    from sbox_shim.backends.docker import owner

    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\nbackend: docker\n")
    trust(project / "sbox.yaml")
    venv = project / ".venv"
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=300)
    since = time.time() - 1
    with PypiIndex([pkg.wheel("sbox-other", "1.0", {"sbox_other.py": ""})]) as index:
        env = dict(os.environ, PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0",
                   VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", SBOX_QUIET="0")
        proc = subprocess.Popen([sbox_bin, "run", "--", "pip", "install", "sbox-not-there"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "step 1 [download] exited" in err, err[-2000:]
    mark = f"{owner().split(':')[0]}:{proc.pid}"
    created = subprocess.run(["docker", "events", "--since", f"{since:.0f}", "--until", f"{time.time() + 1:.0f}",
                              "--filter", "event=create", "--filter", f"label=io.sbox.owner={mark}",
                              "--format", "{{.Actor.Attributes.name}}"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert len(created) == 2  # phase 1's, and phase 2's started ahead
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.sbox.owner={mark}"],
                          capture_output=True, text=True, check=True).stdout
    assert left.strip() == ""


def test_a_line_that_is_not_sboxs_word_runs_nothing(started: tuple[Step, object, str]) -> None:
    """Whatever else reached the gate and wrote to it, the command does not run, and the container
    is not used: the step would get a new one."""
    from sbox_shim.backends.dockerahead import Ahead

    step, ahead, _ = started
    assert isinstance(ahead, Ahead)
    fd = os.open(ahead.fifo, os.O_WRONLY)
    os.write(fd, b"go\n")
    os.close(fd)
    deadline = time.monotonic() + 30
    while ahead.box.init_pid() and time.monotonic() < deadline:  # the gate's shell gives up: exit 125
        time.sleep(0.05)
    assert not ahead.ready()
    assert not (Path(step.cwd) / "out" / "ran").exists()


def test_a_step_a_hook_decides_gets_its_command_through_the_gate(tmp_path: Path, docker_backend: str) -> None:
    """npm's scripts phase: its container starts ahead before its command is known; the command
    decided at its turn (here with spaces, an empty word and a leading dash) reaches it word for word."""
    from sbox_shim.backends import docker, dockerahead

    project, run_dir = tmp_path / "my project", tmp_path / "run"
    (project / "out").mkdir(parents=True)
    run_dir.mkdir()
    planned = _step(project).replace(hook=("npm", "ci", str(project)), argv=("/bin/false",))
    api = docker._client()
    docker.ahead(planned, str(run_dir), 1)
    dockerahead.kick(api)
    words = ("/bin/sh", "-c", 'printf "[%s]" "$@" > out/args', "sh", " a b ", "", "-x", str(project))
    ahead = dockerahead.take(planned.replace(argv=words), 1)
    try:
        assert ahead is not None and ahead.ready()
        code = docker.attach_and_run(api, ahead.box, False, None, sock=ahead.sock, go=ahead.go)
        assert code == 0
        assert (project / "out" / "args").read_text() == f"[ a b ][][-x][{project}]"
    finally:
        if ahead is not None:
            ahead.discard()
        docker.discard()


@pytest.mark.parametrize("change", ["a newline in a word", "another mount"])
def test_a_decided_step_that_cannot_go_through_the_gate_gets_a_new_container(tmp_path: Path, docker_backend: str,
                                                                            change: str) -> None:
    from sbox_shim.backends import docker, dockerahead

    project, run_dir = tmp_path / "project", tmp_path / "run"
    (project / "out").mkdir(parents=True)
    run_dir.mkdir()
    planned = _step(project).replace(hook=("npm", "ci", str(project)))
    api = docker._client()
    docker.ahead(planned, str(run_dir), 1)
    dockerahead.kick(api)
    if change == "another mount":
        decided = planned.replace(mounts=planned.mounts[:-1])
    else:
        decided = planned.replace(argv=("/bin/sh", "-c", "echo ran > out/ran", "a\nb"))
    assert dockerahead.take(decided, 1) is None
    docker.discard()
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.sbox.owner={docker.owner()}"],
                          capture_output=True, text=True, check=True).stdout
    assert left.strip() == ""


# Run by a package's postinstall: how the scripts phase's container started (its init's command line)
SEEN = ("node -e \"const fs = require('fs'); const init = fs.readFileSync('/proc/1/cmdline', 'latin1'); "
        "fs.appendFileSync(require('path').join(process.env.INIT_CWD, 'node_modules', 'gate.txt'), "
        "(init.includes('--later=/.sbox-gate') ? 'driver waited' : fs.existsSync('/.sbox-gate') && "
        "!init.includes('sbox-npm-scripts') ? 'shell waited' : 'made at its turn') + '\\\\n')\"")


def _clean_path() -> str:
    """The tests' PATH without what a sandbox could have written (an activated venv's bin)."""
    from sbox_shim.trust.written import network_path

    return network_path(os.environ["PATH"], ())


def _install_twice(tmp_path: Path, sbox_bin: str, monkeypatch: pytest.MonkeyPatch, path: str,
                   bins: dict[str, str] | None = None) -> tuple[str, str]:
    """`npm install` (no lockfile), then `npm ci`, through sbox on docker, with the package's
    postinstall noting how its phase's container started; `bins`: the package's own commands."""
    from support.registries import NpmRegistry

    files = {"index.js": "module.exports = 1;\n", **{f"bin/{name}": body for name, body in (bins or {}).items()}}
    built = pkg.npm_package("sbox-built", "1.0.0", files, scripts={"postinstall": SEEN},
                            bin={name: f"bin/{name}" for name in bins or {}})
    project = tmp_path / "my project"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\nbackend: docker\n")
    trust(project / "sbox.yaml")
    seen = []
    with NpmRegistry([built]) as registry:
        (project / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                          "dependencies": {"sbox-built": "1.0.0"}}))
        monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
        env = dict(os.environ, PATH=path.replace("{project}", str(project)))
        for command in ("install", "ci"):
            done = subprocess.run([sbox_bin, "run", "--", "npm", command, "--no-audit", "--no-fund"], cwd=project,
                                  env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            seen.append((project / "node_modules" / "gate.txt").read_text().strip())
    return seen[0], seen[1]


def test_npm_ci_runs_its_scripts_phase_in_a_container_started_ahead(tmp_path: Path, sbox_bin: str,
                                                                    docker_backend: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With the lockfile naming a package with an install script, the scripts phase's container is
    started while the download runs, and sbox's driver in it loads npm then waits at the gate (its
    `--later=` is in the container's own arguments); a first install without a lockfile is the
    control: its container is made at its turn, the driver's command line without it."""
    assert _install_twice(tmp_path, sbox_bin, monkeypatch, _clean_path()) == ("made at its turn", "driver waited")


def test_a_path_naming_the_project_loads_no_driver_before_go(tmp_path: Path, sbox_bin: str, docker_backend: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack the early driver must not open: the package ships a command named `env`, which
    npm links into node_modules/.bin, on the user's PATH (direnv's `layout node`). A driver started
    before `go` is launched through that PATH during the download, outside the guard's watch (in a
    tree that keeps node_modules/.bin/env; under `npm ci` it is launched before the download has
    linked it, so `env` never runs). So the container started ahead waits in the shell, and the
    phase finds its programs at its turn, as npm run directly would: `env` runs once the download
    has ended (npm writes its hidden lockfile at the end)."""
    env_bin = ("#!/bin/sh\n[ -e node_modules/.package-lock.json ] && r=after || r=before\n"  # run in the project
               "echo $r >> node_modules/env-ran.txt\nexec /usr/bin/env \"$@\"\n")
    first, again = _install_twice(tmp_path, sbox_bin, monkeypatch, "node_modules/.bin:" + _clean_path(),
                                  bins={"env": env_bin})
    ran = (tmp_path / "my project" / "node_modules" / "env-ran.txt").read_text().split()
    assert ran and set(ran) == {"after"}, ran
    assert (first, again) == ("made at its turn", "shell waited")
