"""A replayed plan's first sandbox is started held before the record's facts are checked, and
before the runner's hook and guard do their work (runner.prestart): the command never runs unless
every fact still holds, and the sandbox runs only for the very step and sources it was started
for. Real `sbox run -- npm install` / `npm ci` on bubblewrap, proven warm or cold as in
test_plan_cache.py; `npm` is a stub on PATH that notes each run of it in node_modules (no registry,
nothing leaves the machine)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from sbox_shim.egress import netns

from .test_plan_cache import Run, Sbox, sbox  # noqa: F401  (the fixture)

pytestmark = pytest.mark.bwrap

# A shell script that notes its arguments, and JavaScript that exits (the scripts phase's driver
# loads the `npm` it finds as npm's own entry point): `//bin/true` is /bin/true, and a comment.
NPM = '#!/bin/sh\n//bin/true; echo "$*" >> node_modules/ran; exit 0\nprocess.exit(0)\n'
LOCK = '{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": {"": {"name": "app"}}}\n'


@pytest.fixture
def app(sbox: Sbox, tmp_path: Path) -> Sbox:  # noqa: F811
    if not netns.usable():
        pytest.skip("the download phase is started ahead only where sbox listens in its namespace (root)")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "npm").write_text(NPM)
    (stubs / "npm").chmod(0o755)
    sbox.env["PATH"] = f"{stubs}:{sbox.env['PATH']}"
    (sbox.root / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}\n')
    (sbox.root / "package-lock.json").write_text(LOCK)  # no output to stage: the first step starts ahead
    (sbox.root / "node_modules").mkdir()
    (sbox.root / "node_modules" / "old.txt").write_text("the tree before\n")
    return sbox


def until_warm(app: Sbox, *command: str) -> Run:
    for _ in range(3):
        run = app.run(*command)
        assert run.returncode == 0, run
        if run.warm:
            return run
    raise AssertionError(f"{' '.join(command)} never ran warm:\n{run}")


def ran(app: Sbox) -> list[str]:
    marker = app.root / "node_modules" / "ran"
    return marker.read_text().splitlines() if marker.exists() else []


def test_a_warm_install_runs_its_first_step_once(app: Sbox) -> None:
    until_warm(app, "npm", "install")
    before = ran(app)
    run = app.run("npm", "install")
    assert run.warm and run.returncode == 0, run
    assert ran(app) == [*before, "install --ignore-scripts"]  # the download phase, once


def test_a_stale_fact_kills_the_held_sandbox_before_its_command(app: Sbox) -> None:
    """The config changed since the record (and is no longer trusted): the sandbox started for the
    download phase is killed unrun, and the cold path refuses. Nothing runs, not even once sbox
    has exited and the sandbox's block fd is closed."""
    until_warm(app, "npm", "install")
    before = ran(app)
    config = app.root / "sbox.yaml"
    config.write_text(config.read_text() + "# changed\n")
    run = app.run("npm", "install")
    assert not run.warm and run.returncode == 2, run
    time.sleep(1.0)  # a sandbox left held would run its command once sbox's end of the pipe closed
    assert ran(app) == before, "the held sandbox ran its command"


def test_a_source_moved_by_the_hook_is_bound_as_it_is_now(app: Sbox) -> None:
    """`npm ci` replaces node_modules whole: the hook moves it away before the step (rollback.py),
    after the held sandbox pinned it. That sandbox is killed unrun and the step runs on the
    node_modules the hook left, where the stub's note lands (and stays: the install succeeded)."""
    until_warm(app, "npm", "ci")
    (app.root / "node_modules" / "old.txt").write_text("the tree before\n")  # a tree for `ci` to replace
    run = app.run("npm", "ci")
    assert run.warm and run.returncode == 0, run
    assert ran(app) == ["ci --ignore-scripts"], run  # the new tree, which the step wrote
    assert not (app.root / "node_modules" / "old.txt").exists()
