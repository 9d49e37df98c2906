"""Issue 9, `mode: host` runs what the project says: a lifecycle script a sandboxed run added to
package.json, or an `npm` it planted where PATH looks first. Under mode: host the project's
scripts are trusted inputs, and PATH loses its relative entries and those inside the project.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from support.boundary import Sbox, config, refused
from support.registries import StaticServer
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

# `npm run-script` and `npm publish` run on the host; everything else is sandboxed.
HOST_RULES = """profiles:
  publish:
    mode: host
dispatch:
  publish:
    match: ["npm run-script*", "npm publish*"]
    profile: publish
"""


@pytest.fixture
def registry() -> Iterator[StaticServer]:
    """An empty loopback registry, so that no npm command here asks the public one."""
    with StaticServer() as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, backend: str, sbox_bin: str, registry: StaticServer) -> tuple[Path, Path, Sbox]:
    """A project whose user trusted sbox.yaml and package.json; a marker path outside it."""
    root = tmp_path / "proj"
    config(root, backend, HOST_RULES)
    (root / "package.json").write_text(json.dumps(
        {"name": "app", "version": "0.0.0", "private": True, "scripts": {"hello": "echo hi"}}, indent=1))
    trust(root / "package.json")
    outside = tmp_path / "outside"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("npm_config_")}
    env.update(npm_config_update_notifier="false", npm_config_cache=str(tmp_path / "npm-cache"),
               npm_config_registry=f"{registry.url}/", npm_config_tag="sbox-test")
    return root, outside / "pwned", Sbox(sbox_bin, env)


PLANT_SCRIPT = ("node -e 'const fs = require(\"fs\"); const p = JSON.parse(fs.readFileSync(\"package.json\"));"
                " p.scripts.prehello = \"touch {marker}\"; p.scripts.prepublishOnly = \"touch {marker}\";"
                " fs.writeFileSync(\"package.json\", JSON.stringify(p))'")


@pytest.mark.parametrize("command", [("npm", "run-script", "hello"), ("npm", "publish", "--dry-run")])
def test_lifecycle_script_planted_by_a_sandbox_is_refused_until_trusted(
        world: tuple[Path, Path, Sbox], command: tuple[str, ...]) -> None:
    root, marker, sbox = world
    sbox.plant(root, PLANT_SCRIPT.format(marker=marker))
    assert "prehello" in (root / "package.json").read_text()
    assert not marker.exists()  # the sandbox could not write outside

    refused(sbox.run(root, *command), root / "package.json")
    assert not marker.exists()

    # The user reviews and trusts it: mode: host runs it, as configured.
    sbox.trust(root, "package.json")
    result = sbox.run(root, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists()


@pytest.mark.parametrize("entry", ["relative", "absolute"])
def test_npm_planted_on_path_never_runs_under_mode_host(world: tuple[Path, Path, Sbox], entry: str) -> None:
    root, marker, sbox = world
    sbox.plant(root, f"mkdir -p node_modules/.bin && printf '#!/bin/sh\\ntouch {marker}\\necho planted\\n' "
               "> node_modules/.bin/npm && chmod +x node_modules/.bin/npm")
    bin_dir = "./node_modules/.bin" if entry == "relative" else str(root / "node_modules" / ".bin")
    env = dict(sbox.env, PATH=f"{bin_dir}{os.pathsep}{sbox.env['PATH']}")

    result = sbox.run(root, "npm", "run-script", "hello", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hi" in result.stdout.split() and "planted" not in result.stdout
    assert not marker.exists()

    # Control: outside sbox, the same PATH runs the planted npm.
    subprocess.run(["sh", "-c", "npm run-script hello"], cwd=root, env=env, capture_output=True, timeout=60)
    assert marker.exists()


def test_a_workspace_planted_by_a_sandbox_is_refused_until_trusted(world: tuple[Path, Path, Sbox]) -> None:
    """The sandbox adds `workspaces` to the root manifest and a workspace whose scripts run at
    `npm publish --workspaces` on the host: the root's `workspaces` and each workspace's scripts
    are trusted inputs too."""
    root, marker, sbox = world
    sbox.plant(root, "node -e 'const fs = require(\"fs\"); const p = JSON.parse(fs.readFileSync(\"package.json\"));"
               " p.workspaces = [\"w\"]; fs.writeFileSync(\"package.json\", JSON.stringify(p)); fs.mkdirSync(\"w\");"
               " fs.writeFileSync(\"w/package.json\", JSON.stringify({name: \"w\", version: \"1.0.0\","
               f" scripts: {{prepack: \"touch {marker}\", prepublishOnly: \"touch {marker}\"}}}}))'")
    assert (root / "w" / "package.json").is_file()

    result = sbox.run(root, "npm", "publish", "--workspaces", "--dry-run")
    assert result.returncode == 2 and str(root / "package.json") in result.stderr, result.stderr
    assert str(root / "w" / "package.json") in result.stderr
    assert not marker.exists()

    # Control: outside sbox, the planted workspace script runs at publish.
    subprocess.run(["npm", "publish", "--workspaces", "--dry-run"], cwd=root, env=sbox.env, capture_output=True,
                   timeout=120)
    assert marker.exists()


def test_an_npmrc_planted_by_a_sandbox_is_a_trusted_input_under_mode_host(world: tuple[Path, Path, Sbox]) -> None:
    """A sandboxed step writes `.npmrc` with `script-shell=./x.sh`: a host-mode `npm run-script`
    would run x.sh unsandboxed. It is refused until the user trusts that .npmrc."""
    root, marker, sbox = world
    sbox.plant(root, f"printf '#!/bin/sh\\ntouch {marker}\\n' > x.sh && chmod +x x.sh && "
               f"echo 'script-shell={root}/x.sh' > .npmrc")
    result = sbox.run(root, "npm", "run-script", "hello")
    refused(result, root / ".npmrc")
    assert not marker.exists()
    # Control: outside sbox, npm runs the planted shell.
    subprocess.run(["npm", "run-script", "hello"], cwd=root, env=sbox.env, capture_output=True, timeout=120)
    assert marker.exists()
