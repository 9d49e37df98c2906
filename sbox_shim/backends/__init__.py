"""Backends execute a Step. Each one: `NAME`, `unavailable() -> str | None`,
`run(step, run_dir, index, state_dir) -> int` (state_dir: where it may keep what it learns, or None).

Kept empty: `bwraprun` is imported on sbox's warm path, which must not pay for anything else.
"""
