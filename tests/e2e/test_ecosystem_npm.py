"""npm through the built-in two-phase policy, with the real `sbox run` and the real npm.

The project has an `sbox.yaml` with no dispatch rules, so the npm policy decides: `npm install
--ignore-scripts` with the registry allowlist, then `npm rebuild` with the network off. The
registry is a local one on 127.0.0.1, configured in the project's `.npmrc`; it joins the
allowlist as `127.0.0.1:PORT` and the sandbox reaches it through the egress proxy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.hostile import Trap, trap
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

# Written by the postinstall next to the hostile script: what the scripts phase could see.
ENV_DUMP = r"""const fs = require("fs"), path = require("path"), os = require("os");
const home = process.env.HOME || os.homedir();
const seen = {profile: process.env.SBOX_PROFILE || null, env: Object.keys(process.env).sort(),
  user_npmrc: fs.existsSync(path.join(home, ".npmrc")),
  project_npmrc: fs.readFileSync(path.join(process.env.INIT_CWD || ".", ".npmrc"), "utf8")};
// node_modules: the only part of the project the dependencies' install scripts may write.
fs.writeFileSync(path.join(process.env.INIT_CWD || ".", "node_modules", "env-" + Date.now() + ".json"), JSON.stringify(seen));
"""


# The project's own `prepare` script: npm runs it after a bare `npm install`.
PREPARE = "node -e \"require('fs').writeFileSync('prepared.txt', process.env.SBOX_PROFILE || 'host')\""


@pytest.fixture
def world(tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Trap, NpmRegistry]]:
    project = tmp_path / "project"
    with trap(fake_home, tmp_path, project, proofs_in="node_modules") as t:
        evil = pkg.npm_package(
            "sbox-evil", "1.0.0", {"hostile.js": pkg.hostile_npm_script(*t.args()), "envdump.js": ENV_DUMP},
            scripts={"postinstall": "node hostile.js && node envdump.js"})
        dep = pkg.npm_package("@sbox/dep", "1.2.0", {"index.js": "module.exports = 41;\n"})
        hello = pkg.npm_package("sbox-hello", "1.0.0",
                                {"index.js": "module.exports = require('@sbox/dep') + 1;\n"},
                                dependencies={"@sbox/dep": "^1.0.0"})
        with NpmRegistry([evil, dep, hello]) as registry:
            (project / "package.json").write_text(json.dumps({
                "name": "app", "version": "0.0.0", "private": True, "scripts": {"prepare": PREPARE},
                "dependencies": {"sbox-hello": "1.0.0", "sbox-evil": "1.0.0"}}))
            (project / ".npmrc").write_text(f"registry={registry.url}/\n")
            trust(project / ".npmrc")
            # A loopback registry is admitted only when the user names it (a project file's name
            # never reaches loopback, private or metadata addresses).
            monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
            yield t, registry


def _config(project: Path, backend: str) -> None:
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")


def test_hostile_postinstall_runs_confined_and_the_install_succeeds(
        world: tuple[Trap, NpmRegistry], backend: str, sbox_bin: str, fake_home: Path) -> None:
    t, registry = world
    _config(t.project, backend)
    (fake_home / ".npmrc").write_text(f"//127.0.0.1:{registry.port}/:_authToken=${{NPM_TOKEN}}\n")
    env = dict(os.environ, NPM_TOKEN="npm-token-for-download-only")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], t.project, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]

    # Installed: the packages and the lockfile are in the project, fetched from the local registry.
    modules = t.project / "node_modules"
    assert (modules / "sbox-hello" / "package.json").is_file()
    assert (modules / "@sbox" / "dep" / "index.js").is_file()
    assert (modules / "sbox-evil" / "hostile.js").is_file()
    assert (t.project / "package-lock.json").is_file()
    assert {"/sbox-evil/-/sbox-evil-1.0.0.tgz", "/@sbox/dep/-/dep-1.2.0.tgz"} <= set(registry.requests)
    node = subprocess.run(["node", "-p", "require('sbox-hello')"], cwd=t.project, capture_output=True, text=True)
    assert node.stdout.strip() == "42", node.stderr

    # The postinstall ran, once, in the scripts phase, and could do none of its four things.
    proofs = t.proofs()
    assert len(proofs) == 1, proofs
    assert proofs[0]["profile"] == "npm:scripts"
    t.assert_confined(proofs[0])
    t.assert_nothing_escaped(out)

    # What the scripts phase saw: no token, no user .npmrc, an empty project .npmrc.
    dumps = [json.loads(p.read_text()) for p in (t.project / "node_modules").glob("env-*.json")]
    assert len(dumps) == 1 and dumps[0]["profile"] == "npm:scripts"
    assert "NPM_TOKEN" not in dumps[0]["env"]
    assert dumps[0]["user_npmrc"] is False
    assert dumps[0]["project_npmrc"] == ""
    assert (t.project / ".npmrc").read_text().startswith("registry=")  # masked inside only

    # The project's own prepare script ran too, offline, after the dependencies' scripts.
    assert (t.project / "prepared.txt").read_text() == "npm:scripts"


def test_each_step_is_announced_unless_quiet(world: tuple[Trap, NpmRegistry], backend: str, sbox_bin: str) -> None:
    t, _ = world
    _config(t.project, backend)
    env = {k: v for k, v in os.environ.items() if k != "SBOX_QUIET"}
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], t.project, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    assert lines == [
        f"sbox: step 1/3 [download] npm install --ignore-scripts -> sandbox ({backend}), "
        "profile npm:download, network: allowlist (proxy)",
        # Only the install scripts of what the install added (issue 11, item 5): sbox-evil's.
        f"sbox: step 2/3 [scripts] env node /etc/sbox-npm-scripts.js npm install -- {t.project}/node_modules/sbox-evil "
        f"-> sandbox ({backend}), "
        "profile npm:scripts, network off",
        f"sbox: step 3/3 [scripts] npm run prepare -> sandbox ({backend}), profile npm:scripts, network off",
    ]
    t.assert_confined(t.proofs()[0])


def test_rebuild_alone_is_one_offline_step(world: tuple[Trap, NpmRegistry], backend: str, sbox_bin: str) -> None:
    """A later `npm rebuild` runs the scripts again, still offline: no download step at all."""
    t, registry = world
    _config(t.project, backend)
    assert run_sbox(sbox_bin, ["run", "--", "npm", "install"], t.project).returncode == 0
    before = len(registry.requests)
    env = {k: v for k, v in os.environ.items() if k != "SBOX_QUIET"}
    result = run_sbox(sbox_bin, ["run", "--", "npm", "rebuild"], t.project, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")] == [
        f"sbox: npm rebuild -> sandbox ({backend}), profile npm:scripts, network off"]
    assert len(registry.requests) == before
    proofs = t.proofs()
    assert len(proofs) == 2 and {p["profile"] for p in proofs} == {"npm:scripts"}
    for proof in proofs:
        t.assert_confined(proof)
    t.assert_nothing_escaped(result.stdout + result.stderr)


def test_control_the_same_install_on_the_bare_host_leaks(world: tuple[Trap, NpmRegistry], tmp_path: Path) -> None:
    """Without sbox the fixture reads the canary, reaches the listener and writes outside: the
    assertions above would catch a leak."""
    t, _ = world
    env = dict(os.environ, npm_config_cache=str(tmp_path / "npm-cache"), npm_config_update_notifier="false")
    result = subprocess.run(["npm", "install"], cwd=t.project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    proofs = t.proofs()
    assert len(proofs) == 1 and proofs[0]["profile"] is None
    t.assert_leaked(proofs[0])
    assert (t.project / "prepared.txt").read_text() == "host"
