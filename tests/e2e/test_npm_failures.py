"""A failing offline phase says why it may have failed, and npm's log pointer leads to a file
that exists after the run (issue 11, items 11 and 12; both backends)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


def test_a_failing_install_script_gets_the_offline_hint_and_a_log_that_exists(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    failing = pkg.npm_package("sbox-needs-net", "1.0.0", {"index.js": ""},
                              scripts={"postinstall": "node -e \"console.error('fetching a binary'); process.exit(3)\""})
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    with NpmRegistry([failing]) as registry:
        (project / "package.json").write_text(json.dumps(
            {"name": "app", "version": "0.0.0", "private": True, "dependencies": {"sbox-needs-net": "1.0.0"}}))
        env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
                   SBOX_QUIET="0")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode != 0
    assert "sbox: step 2 [scripts] exited 3; stopping" in result.stderr, result.stderr[-2000:]
    assert "run with the network off" in result.stderr and "a profile npm:scripts with env:" in result.stderr
    logs = re.findall(r"A complete log of this run can be found in: (\S+)", result.stderr)
    assert logs, result.stderr[-2000:]
    assert all(Path(p).is_file() for p in logs), logs  # the pointer leads somewhere after the run
