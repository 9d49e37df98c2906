"""What warm_stages.py and npm_stages.py share: the child that runs sbox's warm path with marks.

`child(wrap)` is the program: the launcher's own lines in a fresh `python -I -S`, with the functions
`wrap` names ({module: ("function" or "Class.method", ...)}) wrapped to note the wall-clock time
they are entered (" >") and left (" <"), each module wrapped right after the warm path itself
imports it (so imports stay where they fall), with the time it was imported ("imported MODULE").
It prints what the command printed, then one line: [exit code, [(mark, ns)]].
"""
from __future__ import annotations

import ast
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

_CHILD = r"""
import time
_now = time.time_ns
marks = [("python started", _now())]
import sys, builtins
sys.path[:0] = sys.argv[1].split(":")
WRAP = %r
def wrap(module):
    short = module.__name__.split(".")[-1]
    for name in WRAP.get(module.__name__, ()):
        owner, attr = module, name
        if "." in name:
            owner = getattr(module, name.split(".")[0], None)
            attr = name.split(".")[1]
        f = getattr(owner, attr, None) if owner is not None else None
        if f is None:  # another version of sbox
            continue
        def timed(*a, __f=f, __n=short + "." + name, **k):
            marks.append((__n + " >", _now()))
            try:
                return __f(*a, **k)
            finally:
                marks.append((__n + " <", _now()))
        setattr(owner, attr, timed)
_import = builtins.__import__
def hooked(name, *a, **k):
    fresh = [m for m in WRAP if m not in sys.modules]
    out = _import(name, *a, **k)
    for m in fresh:
        if m in sys.modules and not getattr(sys.modules[m], "_staged", False):
            sys.modules[m]._staged = True
            marks.append(("imported " + m, _now()))
            wrap(sys.modules[m])
    return out
builtins.__import__ = hooked
from sbox_shim import compiled, lean
marks.append(("compiled imported", _now()))
code = compiled.run_cached(sys.argv[2:], lean.environ())
marks.append(("done", _now()))
sys.stdout.write(repr([code, marks]) + "\n")  # repr: json's import would count as exit
sys.stdout.flush()
__import__("posix")._exit(0)
"""
PRIME = ("import sys; sys.path[:0] = sys.argv[1].split(':'); sys.argv[1:2] = []; "
         "from sbox_shim.entry import main; main()")


def child(wrap: Mapping[str, Sequence[str]]) -> str:
    return _CHILD % ({k: tuple(v) for k, v in wrap.items()},)


def sbox_paths(python: str) -> str:
    """Where `python`'s installed sbox and its dependencies are (the launcher's sys.path)."""
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib') + ':' + "
                           "sysconfig.get_path('platlib'))"], capture_output=True, text=True, check=True).stdout.strip()


def prime(python: str, paths: str, argv: Sequence[str], cwd: Path, env: dict[str, str], times: int) -> None:
    """Run the command `times` times as the launcher does: the record made, the project settled."""
    for _ in range(times):
        subprocess.run([python, "-I", "-S", "-c", PRIME, paths, *argv], cwd=cwd, env=env, capture_output=True,
                       check=True)


def run(program: str, python: str, paths: str, argv: Sequence[str], cwd: Path,
        env: dict[str, str]) -> tuple[int, list[tuple[str, float]], list[str], float, int]:
    """One warm run of `program`: its exit code, its marks in ms from the moment it was started,
    the lines the command printed before them, when the parent saw it end (ms), and the wall
    clock it was started at (ns: for a time the command printed)."""
    start = time.time_ns()
    out = subprocess.run([python, "-I", "-S", "-c", program, paths, *argv], cwd=cwd, env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    end = time.time_ns()
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the warm run failed: {out.stderr[-500:]}")
    code, marks = ast.literal_eval(lines[-1])
    return int(code), [(name, (ns - start) / 1e6) for name, ns in marks], lines[:-1], (end - start) / 1e6, start
