"""Profiles named after a built-in phase (`npm:scripts`, `npm:download`): what they add reaches the
phase, for real. The break (issue 11, item 3): `PUPPETEER_SKIP_DOWNLOAD=1 npm install puppeteer`
failed because nothing the user could write passed the variable to the install script.

The fixture package behaves like puppeteer: its postinstall skips its download when a variable
says so, and otherwise fetches a "binary" from a loopback server (which the offline scripts phase
cannot reach).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry, StaticServer
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

SKIP = "SBOX_FIXTURE_SKIP_DOWNLOAD"
POSTINSTALL = r"""const fs = require("fs"), http = require("http");
const out = process.env.INIT_CWD + "/node_modules/.fetched";
if (process.env.%(skip)s) { fs.writeFileSync(out, "skipped " + (process.env.FIXTURE_MODE || "")); process.exit(0); }
if (process.env.FIXTURE_SLEEP) { setTimeout(() => {}, 120000); return; }
http.get(process.env.FIXTURE_URL || "%(url)s", r => {
  let body = ""; r.on("data", c => body += c);
  r.on("end", () => { fs.writeFileSync(out, "downloaded " + body); process.exit(0); });
}).on("error", e => { console.error("fetch failed: " + e.message); process.exit(1); });
"""


@pytest.fixture
def world(tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, StaticServer]]:
    project = tmp_path / "project"
    project.mkdir()
    with StaticServer() as binaries:
        binaries.add_file("/chromium", b"BINARY")
        script = POSTINSTALL % {"skip": SKIP, "url": f"{binaries.url}/chromium"}
        tgz = pkg.npm_package("sbox-needs-binary", "1.0.0", {"install.js": script},
                              scripts={"postinstall": "node install.js"})
        with NpmRegistry([tgz]) as registry:
            (project / "package.json").write_text(json.dumps({
                "name": "app", "version": "0.0.0", "private": True,
                "dependencies": {"sbox-needs-binary": "1.0.0"}}))
            monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
            yield project, binaries


def _config(project: Path, backend: str, body: str) -> None:
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\nprofiles:\n{body}")
    trust(project / "sbox.yaml")


def _fetched(project: Path) -> str:
    path = project / "node_modules" / ".fetched"
    return path.read_text() if path.exists() else ""


def test_a_skip_switch_on_the_command_line_reaches_the_install_script(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    """`PUPPETEER_SKIP_DOWNLOAD=1 npm install puppeteer`, no config: a package's skip switch (a
    name with SKIP in it) reaches the script as it would directly; other variables do not."""
    project, binaries = world
    _config(project, backend, "  default:\n    network: off\n")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project,
                      env=dict(os.environ, **{SKIP: "1", "FIXTURE_MODE": "leaked"}))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert _fetched(project) == "skipped "  # the switch arrived; FIXTURE_MODE did not
    assert binaries.requests == []


def test_without_the_switch_the_offline_script_fails_and_names_the_phase_profile(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    project, binaries = world
    _config(project, backend, "  default:\n    network: off\n")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=dict(os.environ))
    assert result.returncode != 0, result.stdout + result.stderr
    assert "fetch failed" in result.stderr
    assert "npm:scripts" in result.stderr  # the hint names the profile that would pass it
    assert binaries.requests == []


def test_env_of_the_scripts_phase_profile_reaches_the_install_script(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    project, binaries = world
    _config(project, backend, f"  npm:scripts:\n    env: [{SKIP}, FIXTURE_MODE=from-config]\n")
    env = dict(os.environ, **{SKIP: "1"})
    plan = run_sbox(sbox_bin, ["plan", "--", "npm", "install"], project, env=env)
    assert plan.returncode == 0, plan.stderr
    scripts = plan.stdout.split("[scripts]")[1]
    assert f"env: {SKIP} (passed), FIXTURE_MODE (set)" in scripts and "from-config" not in plan.stdout
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fetched(project) == "skipped from-config"
    assert binaries.requests == []


def test_network_allow_on_the_scripts_phase_is_explicit_visible_and_effective(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    project, binaries = world
    _config(project, backend, f"  npm:scripts:\n    network: on\n    network_allow: [\"127.0.0.1:{binaries.port}\"]\n")
    plan = run_sbox(sbox_bin, ["plan", "--", "npm", "install"], project)
    assert plan.returncode == 0, plan.stderr
    scripts = plan.stdout.split("[scripts]")[1]
    assert "which turns the network on" in scripts and "allowlist" in scripts and "127.0.0.1=127.0.0.1" in scripts
    assert "warning: npm:scripts: scripts run with the network on" in plan.stdout
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fetched(project) == "downloaded BINARY"
    assert "/chromium" in binaries.requests


def test_limits_of_the_scripts_phase_profile_apply(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    project, _ = world
    _config(project, backend, "  npm:scripts:\n    env: [FIXTURE_SLEEP=1]\n    limits: {timeout: 3, pids: 300}\n")
    plan = run_sbox(sbox_bin, ["plan", "--", "npm", "install"], project)
    assert "limits: pids 300, memory none, timeout 3s" in plan.stdout.split("[scripts]")[1], plan.stdout
    assert "limits: pids 4096, memory none, timeout none" in plan.stdout.split("[scripts]")[0]
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project)
    assert result.returncode == 124, result.stdout + result.stderr


def test_a_download_phase_allow_entry_is_admitted(
        world: tuple[Path, StaticServer], backend: str, sbox_bin: str) -> None:
    """`npm:download` adds an allow entry to the registry allowlist: a tarball dependency from a
    host the built-in policy does not admit is refused, then fetched once the entry is there."""
    project, binaries = world
    tarball = pkg.npm_package("sbox-from-url", "1.0.0", {"index.js": "module.exports = 1;\n"})
    binaries.add_file("/sbox-from-url-1.0.0.tgz", tarball)
    manifest = json.loads((project / "package.json").read_text())
    manifest["dependencies"] = {"sbox-from-url": f"{binaries.url}/sbox-from-url-1.0.0.tgz"}
    (project / "package.json").write_text(json.dumps(manifest))
    _config(project, backend, "  npm:scripts: {}\n")
    quick = dict(os.environ, npm_config_fetch_retries="0")  # the refusal, without npm's minute of retries
    refused = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=quick)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    _config(project, backend, f"  npm:download:\n    network_allow: [\"127.0.0.1:{binaries.port}\"]\n")
    plan = run_sbox(sbox_bin, ["plan", "--", "npm", "install"], project)
    assert "127.0.0.1=127.0.0.1" in plan.stdout.split("[scripts]")[0], plan.stdout
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "node_modules" / "sbox-from-url" / "index.js").exists()
