"""go: built-in policy (placeholder until the ecosystem issue lands)."""
from __future__ import annotations

from sbox_shim.ecosystems import Context, Phase

TOOLS: tuple[str, ...] = ("go",)


def phases(argv: tuple[str, ...], ctx: Context) -> tuple[Phase, ...] | None:
    return None
