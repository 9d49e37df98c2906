"""Go for the tests: an environment that reaches no proxy, and a step's check."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable


def go_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its GO* settings: no proxy (GOPROXY=off), the local
    toolchain, no telemetry, a GOPATH under `home`; then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOTOOLCHAIN="local", GOPROXY="off", GOTELEMETRY="off", GOPATH=str(home / "gopath"), **extra)
    return env


def ran(step: subprocess.CompletedProcess[str]) -> None:
    """The step exited 0 (else its output's end, in the failure)."""
    assert step.returncode == 0, (step.stdout + step.stderr)[-3000:]


def direct(project: Path, env: dict[str, str]) -> Callable[..., None]:
    """`go ARGS` in `project`, without sbox, checked."""
    def go(*args: str) -> None:
        ran(subprocess.run(["go", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600))
    return go


def through_sbox(sbox_bin: str, project: Path, env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`sbox run -- go ARGS` in `project` (not checked)."""
    from support.sboxcli import run_sbox

    def sbox(*args: str) -> subprocess.CompletedProcess[str]:
        return run_sbox(sbox_bin, ["run", "--", "go", *args], project, env=env, timeout=600)
    return sbox


def app(project: Path) -> str:
    """What the binary `project/app` prints, run on the host."""
    return subprocess.run([str(project / "app")], check=True, timeout=60, capture_output=True, text=True).stdout
