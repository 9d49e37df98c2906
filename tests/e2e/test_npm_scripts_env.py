"""The install scripts of an npm install through sbox run as npm itself runs them: the same
environment from npm (npm_command, npm_config_*, npm_package_*, INIT_CWD, npm_execpath, ...), in
the same order (every preinstall, then install, then postinstall; the project's own after its
dependencies'), and a failing one reports as npm reports it. Each case runs the real npm directly
and through `sbox run` in the same project, fixtures from a loopback registry, both backends.
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
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

# Appends "<package>:<event>" to node_modules/.order and writes the environment npm gave the script
# to node_modules/.env-<package>-<event>.json: the only part of the project the scripts phase writes.
RECORD = ("node -e \"const fs = require('fs'), e = process.env, d = e.INIT_CWD + '/node_modules/'; "
          "fs.appendFileSync(d + '.order', e.npm_package_name + ':' + e.npm_lifecycle_event + '\\n'); "
          "fs.writeFileSync(d + '.env-' + e.npm_package_name + '-' + e.npm_lifecycle_event + '.json', "
          "JSON.stringify(e))\"")
FAIL = "echo to-stdout; echo to-stderr >&2; exit 3"
# Set by sbox for the offline phase by design, or by the shell and sandbox around npm.
NOT_NPMS = {"npm_config_offline", "npm_config_cache", "npm_config_logs_dir"}


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    files = {"index.js": "module.exports = 1;\n"}
    packages = [pkg.npm_package("sbox-a", "1.0.0", files, {"preinstall": RECORD, "postinstall": RECORD}),
                pkg.npm_package("sbox-b", "1.0.0", files, {"install": RECORD}),
                pkg.npm_package("sbox-c", "1.0.0", files, dependencies={"sbox-b": "1.0.0"}),
                pkg.npm_package("sbox-fails", "1.0.0", files, {"postinstall": FAIL}),
                pkg.npm_package("sbox-optional-fails", "1.0.0", files, {"install": FAIL})]
    with NpmRegistry(packages) as reg:
        yield reg


def _project(tmp_path: Path, backend: str, registry: NpmRegistry, deps: dict[str, str],
             optional: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    manifest = {"name": "app", "version": "0.0.0", "private": True, "dependencies": deps,
                "scripts": {"preinstall": RECORD, "postinstall": RECORD}}
    if optional:
        manifest["optionalDependencies"] = optional
    if "lib" in deps:  # a local package inside the project: npm links it and runs its scripts in place
        (project / "lib").mkdir()
        (project / "lib" / "package.json").write_text(json.dumps(
            {"name": "lib", "version": "1.0.0", "scripts": {"preinstall": RECORD, "prepare": RECORD,
                                                            "postinstall": RECORD}}))
    (project / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    logs = tmp_path / "logs"
    # what sbox sets in both phases, set for direct npm too
    env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
               npm_config_audit="false", npm_config_fund="false", npm_config_logs_dir=str(logs), SBOX_QUIET="1")
    lock = subprocess.run(["npm", "install", "--ignore-scripts"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    assert lock.returncode == 0, lock.stderr[-3000:]
    shutil.rmtree(project / "node_modules")
    return project, env


def _direct(project: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", *argv], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def _seen(project: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    modules = project / "node_modules"
    order = (modules / ".order").read_text().split()
    envs = {}
    for path in sorted(modules.glob(".env-*.json")):
        env = json.loads(path.read_text())
        envs[path.name] = {k: v for k, v in env.items()
                           if (k.startswith("npm_") or k in ("INIT_CWD", "NODE", "COLOR")) and k not in NOT_NPMS}
    return order, envs


@pytest.mark.parametrize("command", ["ci", "install"])
def test_scripts_see_what_direct_npm_gives_them_in_its_order(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry, command: str) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-a": "1.0.0", "sbox-c": "1.0.0", "lib": "file:lib"})
    direct = _direct(project, env, command)
    assert direct.returncode == 0, direct.stderr[-3000:]
    order, envs = _seen(project)
    # npm's own order: each event across the dependencies, then the linked ones, then the project's own
    assert order == ["sbox-a:preinstall", "sbox-b:install", "sbox-a:postinstall", "lib:preinstall", "lib:prepare",
                     "lib:postinstall", "app:preinstall", "app:postinstall"]
    assert envs[".env-sbox-a-postinstall.json"]["npm_command"] == command
    shutil.rmtree(project / "node_modules")

    result = run_sbox(sbox_bin, ["run", "--", "npm", command], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _seen(project) == (order, envs)


def test_a_failing_script_reports_as_npm_does(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-fails": "1.0.0"})
    direct = _direct(project, env, "ci")
    assert direct.returncode == 3

    result = run_sbox(sbox_bin, ["run", "--", "npm", "ci"], project, env=env)
    assert result.returncode == 3, result.stderr[-3000:]

    def report(stderr: str) -> list[str]:  # npm's error lines, but the (per run) log file's name
        return [ln for ln in stderr.splitlines() if ln.startswith("npm error") and "complete log" not in ln]

    assert report(direct.stderr) and report(result.stderr) == report(direct.stderr), result.stderr[-3000:]


def _listing(project: Path) -> dict[str, str]:
    out = {}
    for root, dirs, names in os.walk(project / "node_modules"):
        for name in dirs + names:
            path = Path(root, name)
            out[str(path.relative_to(project))] = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
    out["hidden lockfile"] = (project / "node_modules" / ".package-lock.json").read_text()
    out["package-lock.json"] = (project / "package-lock.json").read_text()
    return out


def test_an_optional_dependency_whose_script_fails_is_removed_and_the_install_goes_on(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-a": "1.0.0"}, {"sbox-optional-fails": "1.0.0"})
    direct = _direct(project, env, "ci")
    assert direct.returncode == 0, direct.stderr[-3000:]
    assert not (project / "node_modules" / "sbox-optional-fails").exists()
    tree = _listing(project)
    shutil.rmtree(project / "node_modules")

    result = run_sbox(sbox_bin, ["run", "--", "npm", "ci"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _listing(project) == tree
