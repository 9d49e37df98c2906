"""npm's scripts phase started ahead on bwrap (backends/bwrapahead.py): its driver loads npm while
the download runs and waits for sbox's `go`; nothing of the packages runs before it, a sandbox not
used is killed unrun, and one whose binds moved since it started is not used (real bwrap, the
real npm, sbox's real driver)."""
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
from support.registries import NpmRegistry
from support.trust import trust

from sbox_shim.plan import Step

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

# The script says who started its driver: `true` when the driver waited for its turn (`--later=`).
SEEN = ("node -e \"const fs = require('fs'); const later = fs.readdirSync('/proc').filter(p => /^[0-9]+$/.test(p))"
        ".some(p => { try { return fs.readFileSync('/proc/' + p + '/cmdline', 'latin1').includes('--lat' + 'er=') } "
        "catch { return false } }); fs.appendFileSync(process.env.INIT_CWD + '/node_modules/.ran', "
        "process.env.npm_package_name + ':' + later + '\\\\n')\"")


def _clean_path() -> str:
    """The tests' PATH without what a sandbox could have written (an activated venv's bin, say):
    a PATH with such an entry starts nothing early, which the tests below show apart."""
    from sbox_shim.trust.written import network_path

    return network_path(os.environ["PATH"], ())


def _waiting(root: int) -> list[int]:
    """Processes below `root` whose command line holds the driver's `--later=`."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                children = [int(c) for c in f.read().split()]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"--later=" in f.read():
                    found.append(pid)
        except OSError:
            continue
        todo += children
    return found


def test_npm_ci_runs_its_scripts_with_a_driver_started_ahead(tmp_path: Path, sbox_bin: str, bwrap_backend: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With a lockfile naming a package with an install script, the driver that runs it was started
    while the download ran; the first install (no lockfile: the hook guesses no script) is the
    control, its driver started at its turn."""
    built = pkg.npm_package("sbox-built", "1.0.0", {"index.js": "module.exports = 1;\n"}, scripts={"postinstall": SEEN})
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {bwrap_backend}\n")
    trust(project / "sbox.yaml")
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                      "dependencies": {"sbox-built": "1.0.0"}}))
    with NpmRegistry([built]) as registry:
        monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
        env = dict(os.environ, PATH=_clean_path(), npm_config_update_notifier="false", npm_config_audit="false")
        first = subprocess.run([sbox_bin, "run", "--", "npm", "install"], cwd=project, env=env,
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        assert (project / "node_modules" / ".ran").read_text() == "sbox-built:false\n"
        again = subprocess.run([sbox_bin, "run", "--", "npm", "ci"], cwd=project, env=env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (project / "node_modules" / ".ran").read_text() == "sbox-built:true\n"


# ---------------------------------------------------------------- the backend, step by step


@pytest.fixture
def scripts(tmp_path: Path, bwrap_backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Step, Path, str]]:
    """A project whose node_modules holds a package with a postinstall (as the download phase left
    it), and the scripts step sbox plans for `npm ci` there."""
    from sbox_shim import config
    from sbox_shim.build import build_plan
    from sbox_shim.host import Host

    project = tmp_path / "project"
    package = project / "node_modules" / "sbox-built"
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "sbox-built", "version": "1.0.0",
                                                      "scripts": {"postinstall": SEEN}}))
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                      "dependencies": {"sbox-built": "1.0.0"}}))
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {bwrap_backend}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(project)
    env = dict(os.environ, PATH=_clean_path(), PWD=str(project), npm_config_update_notifier="false")
    host = Host.current(env, str(project))
    plan = build_plan(["npm", "ci"], config.load(str(project), env), host, run_dir=str(run_dir))
    step = plan.steps[1]
    assert step.label == "scripts" and step.hook
    try:
        yield step, project, str(run_dir)
    finally:
        from sbox_shim.backends import bwrap

        bwrap.discard()


def _alive(pid: int) -> str:
    """The command line of `pid` if it is alive (a zombie is not), else ""."""
    try:
        with open(f"/proc/{pid}/stat", encoding="latin-1") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                return ""
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: {f.read()[:200]!r}"
    except OSError:
        return ""


def _decided(step: Step, project: Path) -> Step:
    return step.replace(argv=(*step.argv, "--", str(project / "node_modules" / "sbox-built")))


def _start_ahead(step: Step, run_dir: str) -> None:
    """As the runner has it: the step planned next, then the current step's command runs."""
    from sbox_shim.backends import bwrap, bwrapahead

    bwrap.ahead(step, run_dir, 1)
    bwrapahead.kick()


def _ahead_pid() -> int:
    from sbox_shim.backends import bwrapahead

    started = bwrapahead._PLANNED[1].started
    assert started is not None
    return started.held.pid


def _wait_for_driver(pid: int) -> list[int]:
    deadline = time.monotonic() + 30
    while not (found := _waiting(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_the_driver_waits_for_go_and_the_script_runs_only_at_its_turn(scripts: tuple[Step, Path, str]) -> None:
    from sbox_shim.backends import bwrap

    step, project, run_dir = scripts
    _start_ahead(step, run_dir)
    assert _wait_for_driver(_ahead_pid())  # started, let go: the driver runs (loads npm) and waits
    time.sleep(1.0)
    assert not (project / "node_modules" / ".ran").exists()  # nothing of the package ran
    assert bwrap.run(_decided(step, project), run_dir, 1) == 0
    assert (project / "node_modules" / ".ran").read_text() == "sbox-built:true\n"  # in the driver started ahead


def test_a_sandbox_started_ahead_and_not_used_is_killed_unrun(scripts: tuple[Step, Path, str]) -> None:
    """The run stops before the scripts phase (the download failed, or the hook skips it)."""
    from sbox_shim.backends import bwrap

    step, project, run_dir = scripts
    _start_ahead(step, run_dir)
    pid = _ahead_pid()
    waiting = _wait_for_driver(pid)
    assert waiting
    bwrap.discard()
    assert not [_alive(p) for p in [pid, *waiting] if _alive(p)]
    time.sleep(0.5)
    assert not (project / "node_modules" / ".ran").exists()


def test_a_bind_moved_since_the_start_is_not_used_and_the_step_gets_a_sandbox_made_then(
        scripts: tuple[Step, Path, str]) -> None:
    """What the step before could have done: node_modules moved away and another put in its place.
    The waiting sandbox holds the old one; the step runs in a new sandbox, on the new one."""
    from sbox_shim.backends import bwrap

    step, project, run_dir = scripts
    _start_ahead(step, run_dir)
    pid = _ahead_pid()
    waiting = _wait_for_driver(pid)
    assert waiting
    modules = project / "node_modules"
    modules.rename(project / "old_modules")
    shutil.copytree(project / "old_modules", modules)
    assert bwrap.run(_decided(step, project), run_dir, 1) == 0
    assert (modules / ".ran").read_text() == "sbox-built:false\n"  # a driver started at its turn
    assert not (project / "old_modules" / ".ran").exists()
    assert not [_alive(p) for p in [pid, *waiting] if _alive(p)]


@pytest.mark.parametrize("change", ["another mount", "words before --"])
def test_a_step_decided_otherwise_than_started_gets_a_sandbox_made_then(scripts: tuple[Step, Path, str],
                                                                        change: str) -> None:
    from sbox_shim.backends import bwrapahead

    step, project, run_dir = scripts
    _start_ahead(step, run_dir)
    pid = _ahead_pid()
    if change == "another mount":
        decided = _decided(step, project).replace(mounts=step.mounts[:-1])
    else:
        decided = step.replace(argv=(*step.argv, "--foreground-scripts", "--", str(project)))
    assert bwrapahead.take(decided, 1) is None
    assert not os.path.exists(f"/proc/{pid}")


def test_the_driver_runs_nothing_unless_told_go(scripts: tuple[Step, Path, str]) -> None:
    """Its pipe closed unwritten, or written by anything but sbox's `go` line: exit 125, no script.
    The control: `go` with the package's directory runs its script."""
    import sbox_shim.ecosystems

    _, project, _ = scripts
    driver = str(Path(sbox_shim.ecosystems.__file__).with_name("npm_scripts.js"))
    package = str(project / "node_modules" / "sbox-built")
    for data, code in ((b"", 125), (b"--\0" + package.encode() + b"\0", 125), (b"go\0--\0" + package.encode(), 125),
                       (b"go\0--\0" + package.encode() + b"\0", 0)):
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        proc = subprocess.run(["node", driver, f"--later={read}", "npm", "ci"], cwd=project, pass_fds=[read],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, npm_config_update_notifier="false"))
        os.close(read)
        assert proc.returncode == code, (data, proc.stderr[-2000:])
        ran = project / "node_modules" / ".ran"
        assert ran.exists() == (code == 0), data


@pytest.mark.parametrize("path", ["node_modules/.bin", "{project}/node_modules/.bin", "", "{cache}", "{venv}/bin"])
def test_a_path_naming_the_project_starts_nothing_ahead(scripts: tuple[Step, Path, str], path: str) -> None:
    """The red team's attack: `node_modules/.bin` on the user's PATH (direnv's `layout node`), where
    a package linked its own `env`. Started ahead, that `env` would run before `go`, during the
    download and outside the guard's watch; so nothing is started ahead, and the phase at its turn
    finds its programs as it would have. The control: the same step, PATH of the host's own."""
    from sbox_shim.backends import bwrapahead

    step, project, run_dir = scripts
    bin_dir = project / "node_modules" / ".bin"
    bin_dir.mkdir()
    planted = bin_dir / "env"
    planted.write_text(f"#!/bin/sh\ntouch {project}/node_modules/.planted-ran\nexec /usr/bin/env \"$@\"\n")
    planted.chmod(0o755)
    cache = next(m.source for m in step.mounts if m.kind == "cache" and not m.readonly)
    venv = project.parent / "tools-venv"  # a venv outside the project: any sandboxed pip may write one
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    shutil.copy(planted, venv / "bin" / "env")
    entry = path.format(project=project, cache=cache, venv=venv)
    env = dict(step.env)
    hostile = step.replace(env=tuple({**env, "PATH": f"{entry}:{env['PATH']}"}.items()))
    assert bwrapahead.eligible(step)  # the control: the host's PATH
    assert not bwrapahead.eligible(hostile)
    _start_ahead(hostile, run_dir)
    time.sleep(1.0)
    assert 1 not in bwrapahead._PLANNED or bwrapahead._PLANNED[1].started is None
    assert not (project / "node_modules" / ".planted-ran").exists()


def test_node_options_start_nothing_ahead(scripts: tuple[Step, Path, str]) -> None:
    from sbox_shim.backends import bwrapahead

    step, project, _ = scripts
    for name, value in (("NODE_OPTIONS", f"--require {project}/node_modules/x.js"), ("NODE_PATH", str(project))):
        assert not bwrapahead.eligible(step.replace(env=(*step.env, (name, value))))
