"""Backends execute a Step. Each one: `NAME`, `unavailable() -> str | None`, `run(step, run_dir) -> int`.

Kept empty: `bwraprun` is imported on sbox's warm path, which must not pay for anything else.
"""
