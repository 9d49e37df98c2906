"""The docker backend's helper process (dockerhelper.py): sbox itself never loads the Docker SDK on a
docker run, and the run behaves as before (output, exit code, nothing left)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.trust import trust

# cli.main in a process of its own, as the `sbox` command runs it; then: was the SDK ever imported here?
RUN = """
import sys
from sbox_shim import cli
code = cli.main(sys.argv[1:])
sys.stdout.flush()
print("sdk loaded" if any(m == "docker" or m.startswith("docker.") for m in sys.modules) else "no sdk", code)
"""


@pytest.mark.parametrize("how", ["--backend docker", "backend: docker"])
def test_sbox_itself_never_imports_the_docker_sdk_on_a_docker_run(docker_backend: str, tmp_path: Path,
                                                                   how: str) -> None:
    (tmp_path / "sbox.yaml").write_text("version: 1\n" + ("backend: docker\n" if how.startswith("backend") else ""))
    trust(tmp_path / "sbox.yaml")
    args = ["run", *(["--backend", "docker"] if how.startswith("--") else []), "--", "sh", "-c", "echo inside; exit 3"]
    proc = subprocess.Popen([sys.executable, "-c", RUN, *args], cwd=tmp_path, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert out.splitlines() == ["inside", "no sdk 3"], err
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.sbox.run", "--filter", f"name=sbox-{proc.pid}-"],
                          capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_control_the_sdk_in_sbox_s_own_process_is_seen(docker_backend: str, tmp_path: Path) -> None:
    """The check above can fail: a process that does import the SDK is reported as such."""
    proc = subprocess.run([sys.executable, "-c", "import docker\n" + RUN, "shims", "list"], cwd=tmp_path,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[-1].startswith("sdk loaded"), proc.stderr
