"""The `sbox` command's entry point.

A repeated `sbox run` is served from the plan cache (compiled.py) without importing the rest of
sbox; everything else, and every first run, goes to cli.py.
"""
from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        from sbox_shim import compiled

        code = compiled.run_cached(argv, os.environ)
        if code is not None:
            # Nothing to clean up: skip the interpreter's teardown (most of a millisecond).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    from sbox_shim.cli import main as cold

    raise SystemExit(cold())
