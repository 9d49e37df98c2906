"""A process that swaps two names in a directory as fast as it can (renameat2 RENAME_EXCHANGE): a
directory and a link beside it, as another sandbox writing the same project could, while sbox
plans or checks on the host; or one that moves a directory to another place and back (`mover`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FLIP = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
a, b = os.fsencode(sys.argv[2]), os.fsencode(sys.argv[3])
print("flipping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE: each name is the dir or the link in turn
"""


MOVE = r"""
import os, sys, time
os.chdir(sys.argv[1])
print("flipping", flush=True)
while True:
    for _ in range(200):
        try:
            os.rename(sys.argv[2], sys.argv[3])
            os.rename(sys.argv[3], sys.argv[2])
        except OSError:
            pass
    time.sleep(0.005)  # a breath: a loaded machine's plans then finish too, raced or not
"""


def start(where: Path, a: str, b: str, move: bool = False) -> subprocess.Popen[str]:
    """Swap `where/a` and `where/b` (with `move`: move `a` to `b` and back) until killed; returns
    once it has started."""
    proc = subprocess.Popen([sys.executable, "-c", MOVE if move else FLIP, str(where), a, b],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "flipping\n"
    return proc
