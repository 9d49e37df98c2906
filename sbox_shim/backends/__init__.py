"""Backends execute a Step. Each one: `NAME`, `unavailable() -> str | None`, `run(step, run_dir) -> int`."""
from __future__ import annotations

import os
from typing import Protocol

from sbox_shim.plan import Mount, Step


class Backend(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """None when this backend can create sandboxes here, else why not (one line)."""

    def run(self, step: Step, run_dir: str, index: int = 0) -> int:
        """Execute the step in a sandbox; return its exit code. Raise SandboxError if it cannot start."""


def materialize(step: Step, run_dir: str, index: int) -> list[Mount]:
    """Write the step's generated files under run_dir and return read-only mounts for them."""
    base = os.path.join(run_dir, f"files-{index}")
    mounts = []
    for f in step.files:
        path = os.path.join(base, f.target.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(f.content)
        os.chmod(path, 0o644)
        mounts.append(Mount(path, f.target))
    return mounts
