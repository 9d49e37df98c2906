"""The `sbox` command's entry point.

A repeated `sbox run` is served from the plan cache (compiled.py) without importing the rest of
sbox; everything else, and every first run, goes to cli.py.
"""
from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        import posix

        from sbox_shim import compiled, lean

        code = compiled.run_cached(argv, lean.environ())
        if code is not None:
            # Nothing to clean up: skip the interpreter's teardown (most of a millisecond).
            sys.stdout.flush()
            sys.stderr.flush()
            posix._exit(code)
    from sbox_shim.cli import main as cold

    raise SystemExit(cold())
