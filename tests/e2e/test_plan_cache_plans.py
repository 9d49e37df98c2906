"""The plan cache for whole plans (replay.py): a repeated `npm install` is warm, runs both phases
through the runner, and every input its planning read is checked again.

Runs are proven warm or cold as in test_plan_cache.py (-X importtime: the cold path imports
sbox_shim.cli). npm is the real one, against a loopback registry the test starts.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.trust import trust

from sbox_shim import kept

from .test_plan_cache import Run, Sbox, sbox  # noqa: F401  (the fixture)

pytestmark = pytest.mark.bwrap

POSTINSTALL = "require('fs').writeFileSync('ran.txt', String(Date.now()))"


@pytest.fixture
def app(sbox: Sbox) -> Iterator[Sbox]:  # noqa: F811
    dep = pkg.npm_package("sbox-dep", "1.0.0", {"index.js": "module.exports = 1;\n"},
                          scripts={"postinstall": f"node -e \"{POSTINSTALL}\""})
    with NpmRegistry([dep]) as registry:
        (sbox.root / "package.json").write_text(json.dumps(
            {"name": "app", "version": "0.0.0", "private": True, "dependencies": {"sbox-dep": "1.0.0"}}))
        (sbox.root / ".npmrc").write_text(f"registry={registry.url}/\n")
        trust(sbox.root / ".npmrc")
        sbox.env["npm_config_registry"] = f"{registry.url}/"
        yield sbox


def install_until_warm(app: Sbox) -> Run:
    """`npm install` until a run is warm (the first installs, the second plans against the tree
    the first left, the third is served from the record); that warm run."""
    for _ in range(3):
        run = app.run("npm", "install")
        assert run.returncode == 0, run
        if run.warm:
            return run
    raise AssertionError(f"a repeated npm install in an unchanged project never ran warm:\n{run}")


def test_a_repeated_npm_install_is_warm_and_runs_both_phases(app: Sbox) -> None:
    install_until_warm(app)
    marker = app.root / "node_modules" / "sbox-dep" / "ran.txt"
    # npm reinstalls a package whose folder is gone, and runs its script (and only then: issue 11)
    shutil.rmtree(marker.parent)
    warm = app.run("npm", "install")
    assert warm.warm and warm.returncode == 0, warm
    assert marker.exists(), f"the scripts phase did not run on the warm path:\n{warm}"


def test_an_npmrc_rewritten_since_is_refused_not_replayed(app: Sbox) -> None:
    """A sandbox (or anyone) rewrote .npmrc after the record was made: the record's digest of it no
    longer holds, the cold path plans, and its trust gate refuses the untrusted file."""
    install_until_warm(app)
    marker = app.root / "node_modules" / "sbox-dep" / "ran.txt"
    marker.unlink()
    rc = app.root / ".npmrc"
    rc.write_text(rc.read_text() + "script-shell=/tmp/evil\n")
    run = app.run("npm", "install")
    assert not run.warm and run.returncode == 2, run
    assert ".npmrc" in run.stderr, run
    assert not marker.exists(), "something ran"


def test_a_changed_package_json_is_planned_again(app: Sbox) -> None:
    install_until_warm(app)
    manifest = json.loads((app.root / "package.json").read_text())
    manifest["scripts"] = {"prepare": "node -e \"require('fs').writeFileSync('prepared.txt', '1')\""}
    (app.root / "package.json").write_text(json.dumps(manifest))
    run = app.run("npm", "install")
    assert not run.warm and run.returncode == 0, run
    assert (app.root / "prepared.txt").exists(), run


def test_a_record_with_pinned_addresses_expires(app: Sbox) -> None:
    install_until_warm(app)
    (record_path,) = app.records()
    record = kept.read_private(str(record_path))
    assert isinstance(record, dict) and record["expires"] > time.time(), "an allowlisted plan should expire"
    record["expires"] = time.time() - 1
    kept.write_private(str(record_path), record)
    run = app.run("npm", "install")
    assert not run.warm and run.returncode == 0, run
    assert app.run("npm", "install").warm


def test_no_value_of_the_callers_environment_is_written(app: Sbox, tmp_path: Path) -> None:
    app.env["NPM_TOKEN"] = "sbox-canary-token-0123456789"
    install_until_warm(app)
    for record in app.records():
        assert b"sbox-canary-token-0123456789" not in record.read_bytes()
