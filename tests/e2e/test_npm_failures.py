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


def test_a_failing_install_script_is_told_which_names_it_tried_to_reach(tmp_path: Path, sbox_bin: str) -> None:
    """As root on bwrap, sbox hears the offline phase's lookups (egress/lookups.py): the failure
    names the host the script wanted, and the record beside the denials keeps it."""
    from conftest import require_backend

    require_backend("bwrap")
    if os.geteuid() != 0:
        pytest.skip("sbox hears an offline sandbox's lookups only as root (it enters the sandbox's network namespace)")
    wants = "prebuilt.sbox-test.example"
    script = (f"require('dns').lookup('{wants}', (e) => {{ console.error('lookup: ' + (e && e.code)); "
              f"process.exit(3) }})")
    failing = pkg.npm_package("sbox-downloads", "1.0.0", {"index.js": "", "install.js": script},
                              scripts={"postinstall": "node install.js"})
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\nbackend: bwrap\n")
    trust(project / "sbox.yaml")
    with NpmRegistry([failing]) as registry:
        (project / "package.json").write_text(json.dumps(
            {"name": "app", "version": "0.0.0", "private": True, "dependencies": {"sbox-downloads": "1.0.0"}}))
        env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
                   SBOX_QUIET="0")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode != 0
    assert "lookup: EAI_AGAIN" in result.stderr, result.stderr[-2000:]  # refused, as a failed lookup
    line = [l for l in result.stderr.splitlines() if "tried to reach" in l]
    assert line and f"the scripts phase tried to reach {wants} " in line[0], result.stderr[-2000:]
    record = Path(line[0].rsplit("; record: ", 1)[1])
    assert json.loads(record.read_text())["looked_up"] == [wants]
    record.unlink()
