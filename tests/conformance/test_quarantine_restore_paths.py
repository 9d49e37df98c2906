"""The red team's finding, through a real sandbox on every backend: a step changes the Makefile and
plants `tools/vendor/.git` whose config runs `core.fsmonitor`. `sbox quarantine list` shows both
with what each is; `sbox quarantine restore ID Makefile --force` brings back the Makefile alone, so
the host's next `git status` there runs nothing; `restore ID --force` with no PATH refuses and
names the `.git`; naming it brings it back (the control: then `git status` runs the fsmonitor)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .helpers import Runs
from .test_persistence_guard import husky_project, quarantines

NESTED = "tools/vendor/.git"
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def _status(where: Path) -> None:
    subprocess.run(["git", "status"], cwd=where, env=dict(os.environ, **GIT_ENV), capture_output=True, timeout=60)


def test_restoring_the_makefile_by_name_leaves_the_planted_git_in_quarantine(runs: Runs, tmp_path: Path,
                                                                            sbox_bin: str) -> None:
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\techo old\n")
    marker = tmp_path / "fsmonitor-ran"
    plant = ("printf 'all:\\n\\techo new\\n' > Makefile && mkdir -p tools/vendor && cd tools/vendor && "
             f"git init -q . && printf '[core]\\n\\tfsmonitor = \"touch {marker}\"\\n' >> .git/config")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert f"quarantined {NESTED} (created by the sandbox" in result.stderr, result.stderr
    assert "quarantined Makefile (changed by the sandbox" in result.stderr, result.stderr
    (found,) = quarantines(Path(os.environ["SBOX_STATE_DIR"]))
    ident = str(found["id"])

    listed = subprocess.run([sbox_bin, "quarantine", "list"], capture_output=True, text=True, timeout=60)
    assert f"  Makefile  [changed file, host-executed]" in listed.stdout, listed.stdout
    assert f"  {NESTED}  [created dir, .git]  !! restored only when named" in listed.stdout, listed.stdout

    everything = subprocess.run([sbox_bin, "quarantine", "restore", ident, "--force"], capture_output=True,
                                text=True, timeout=60)
    assert everything.returncode == 1 and f"{NESTED} (.git)" in everything.stderr, everything.stderr
    assert not os.path.lexists(root / NESTED) and (root / "Makefile").read_text() == "all:\n\techo old\n"

    done = subprocess.run([sbox_bin, "quarantine", "restore", ident, "Makefile", "--force"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (root / "Makefile").read_text() == "all:\n\techo new\n"
    assert not os.path.lexists(root / NESTED)
    _status(root / "tools" / "vendor")
    assert not marker.exists()

    control = subprocess.run([sbox_bin, "quarantine", "restore", ident, NESTED], capture_output=True, text=True,
                             timeout=60)
    assert control.returncode == 0, control.stderr
    _status(root / "tools" / "vendor")
    assert marker.exists()
