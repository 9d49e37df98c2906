"""The rollback of a failed npm install follows no link the project holds (rollback.py): another
sandbox with the project writable (a dev server, running at the same time) can replace the
`.sbox-rollback-*` directory with a link while the install runs; sbox then restores nothing,
puts nothing outside the project, deletes nothing, and says in one line where the kept state is.

The real sbox and npm on bwrap, fixtures from a loopback registry. The failing postinstall marks
that it has begun (in node_modules, the one part of the project the scripts phase may write) and
waits for the test's word; between the two the test makes the swap itself, as that other sandbox
would, so the race is won every time. The control runs the same install without the swap.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

WAITING, GO = ".sbox-test-waiting", ".sbox-test-go"
SCRIPT = f"""const fs = require('fs'), dir = process.env.INIT_CWD + '/node_modules/';
fs.writeFileSync(dir + '{WAITING}', '');
const end = Date.now() + 300000, nap = new Int32Array(new SharedArrayBuffer(4));
while (!fs.existsSync(dir + '{GO}') && Date.now() < end) Atomics.wait(nap, 0, 0, 50);
process.exit(1);
"""


def _install(project: Path, env: dict[str, str], sbox_bin: str, package: str,
             swap: Path | None) -> subprocess.CompletedProcess[str]:
    """`sbox run -- npm install <package>`; once its failing postinstall waits, replace the
    rollback directory with a link to `swap` (if given), then let the script fail."""
    proc = subprocess.Popen([sbox_bin, "run", "--", "npm", "install", package], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (project / "node_modules" / WAITING).exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the postinstall never began"
            time.sleep(0.05)
        (kept,) = project.glob(".sbox-rollback-*")
        if swap is not None:
            os.rename(kept, project / "stash")
            os.symlink(swap, kept)
        (project / "node_modules" / GO).write_text("")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("case", ["control", "first-install", "existing-tree"])
def test_a_rollback_directory_swapped_for_a_link_is_not_followed(
        tmp_path: Path, sbox_bin: str, case: str) -> None:
    from conftest import require_backend

    require_backend("bwrap")
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\nbackend: bwrap\n")
    trust(project / "sbox.yaml")
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True}))
    evil = pkg.npm_package("sbox-evil-fail", "1.0.0", {"index.js": "module.exports = 'evil';\n",
                                                        "install.js": SCRIPT},
                           scripts={"postinstall": "node install.js"})
    plain = pkg.npm_package("sbox-plain", "1.0.0", {"index.js": "module.exports = 'plain';\n"})
    with NpmRegistry([evil, plain]) as registry:
        env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
                   npm_config_audit="false", SBOX_QUIET="0")
        if case == "existing-tree":
            first = subprocess.run([sbox_bin, "run", "--", "npm", "install", "sbox-plain"], cwd=project, env=env,
                                   capture_output=True, text=True, timeout=300)
            assert first.returncode == 0, first.stderr[-3000:]
        manifest = (project / "package.json").read_bytes()
        result = _install(project, env, sbox_bin, "sbox-evil-fail", None if case == "control" else outside)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if "the install failed" in ln]
    assert list(outside.iterdir()) == [], (list(outside.rglob("*")), result.stderr[-3000:])
    if case == "control":  # the same install, nothing swapped: rolled back, the kept state removed
        assert len(lines) == 1 and lines[0].startswith("sbox: the install failed; rolled back node_modules"), lines
        assert not list(project.glob(".sbox-rollback-*")) and (project / "package.json").read_bytes() == manifest
        assert not (project / "node_modules").exists()
        return
    (link,) = project.glob(".sbox-rollback-*")
    assert os.readlink(link) == str(outside)  # the swap was in place when sbox restored
    (link / "probe").write_text("")  # and leads outside: what a follower of it would have reached
    assert [p.name for p in outside.iterdir()] == ["probe"]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0] == (f"sbox: the install failed and could not be rolled back ({link} is now a link to {outside}, "
                        f"not the directory sbox made: nothing was restored or removed); the state before it is kept "
                        f"in {project / 'stash'}: move its contents back into {project}"), lines
    assert (project / "node_modules" / "sbox-evil-fail" / "index.js").is_file()  # the failed install stays
    if case == "existing-tree":  # the kept clone is whole where the other sandbox moved it
        assert (project / "stash" / "node_modules" / "sbox-plain" / "index.js").read_text() == "module.exports = 'plain';\n"
