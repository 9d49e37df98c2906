"""Run the real `sbox` command as a user would."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_sbox(sbox_bin: str, args: list[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `sbox` command as a user would."""
    return subprocess.run([sbox_bin, *args], cwd=cwd, env=env if env is not None else dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, input=input)
