"""A wheel-only `pip install` into a venv: directly on the host vs `sbox run --backend bwrap` vs `--backend docker`.

    python bench/bench_pip.py [--runs 5] [--packages 6] [--output bench/results/pip.json]

A PEP 503 index on 127.0.0.1 serves a handful of pure-Python wheels (a small dependency chain),
named by `PIP_INDEX_URL` as a user would; `PIP_CONFIG_FILE=/dev/null` keeps this machine's pip
configuration out. Every run installs into a fresh venv in a fresh project (made untimed, with
the `python3` on PATH); pip's caches are warm (one untimed warm-up run per way first), as they are
for a developer. Sandboxed runs go through the built-in pip policy: every distribution is a wheel, so
sbox's own pip installs them in its one network phase, through the egress proxy (pip_install.py;
the download phase and the offline install are skipped): one sandbox start, one pip process.
Runs are interleaved so that other load hits every way alike. Prints the median (and min/max) of
each and its ratio to direct; writes the numbers as JSON. All traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))

import results_file  # noqa: E402
import trusting  # noqa: E402
from bench_install import sbox_command, unavailable  # noqa: E402
from support.packages import wheel  # noqa: E402
from support.registries import PypiIndex  # noqa: E402

WAYS = ("direct", "bwrap", "docker")
PYTHON = shutil.which("python3") or sys.executable


def packages(count: int) -> tuple[list[tuple[str, bytes]], str]:
    """`count` wheels, each depending on the next, a few modules each; returns them and the top name."""
    names = [f"sbox-bench-{i}" for i in range(count)]
    dists = []
    for i, name in enumerate(names):
        module = name.replace("-", "_")
        files = {f"{module}/__init__.py": f"N = {i}\n", f"{module}/util.py": "def ident(x):\n    return x\n" * 50,
                 f"{module}/data.py": f"TABLE = {list(range(200))!r}\n"}
        dists.append(wheel(name, "1.0", files, requires=[f"{names[i + 1]}==1.0"] if i + 1 < count else []))
    return dists, names[0]


def one_run(way: str, work: Path, index: PypiIndex, top: str, env: dict[str, str], run: int) -> float:
    project = work / f"{way}-{run}"
    project.mkdir()
    venv = project / ".venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=600)
    run_env = dict(env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    if way == "direct":
        argv = ["pip", "install", top]
        run_env["PIP_CACHE_DIR"] = str(work / "direct-cache")
    else:
        (project / "sbox.yaml").write_text("version: 1\n")
        trusting.trust(env, project / "sbox.yaml")
        argv = [sbox_command(), "run", "--backend", way, "--", "pip", "install", top]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=project, env=run_env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{way}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    if not list(venv.glob(f"lib/python3*/site-packages/{top.replace('-', '_')}/__init__.py")):
        raise SystemExit(f"{way}: {top} is not installed in {venv}")
    shutil.rmtree(project)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=6)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "pip.json"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    skipped = {w: r for w in WAYS if w != "direct" and (r := unavailable(w))}
    ways = [w for w in WAYS if w not in skipped]
    dists, top = packages(args.packages)
    times: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="sbox-bench-pip-") as tmp, PypiIndex(dists) as index:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIP_", "SBOX_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(HOME=str(home), SBOX_QUIET="1", SBOX_CACHE_DIR=str(work / "sbox-cache"),
                   SBOX_STATE_DIR=str(work / "sbox-state"), SBOX_USER_CONFIG=str(work / "none.yaml"),
                   PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
        for name in ("PYENV_ROOT",):  # a pyenv python3 stays reachable with HOME elsewhere
            if os.environ.get(name):
                env[name] = os.environ[name]
        for way in ways:  # warm-up: pip's caches, docker's base image, the page cache
            one_run(way, work, index, top, env, -1)
        for run in range(args.runs):
            for way in ways:
                times[way].append(one_run(way, work, index, top, env, run))
                print(f"  run {run + 1}/{args.runs} {way:<7} {times[way][-1]:.2f} s", file=sys.stderr)

    results = results_file.summary(times, {way: statistics.median(times["direct"]) for way in times})
    pip = subprocess.run([PYTHON, "-m", "pip", "--version"], capture_output=True, text=True).stdout.split(" from ")[0]
    record = {
        "benchmark": "wheel-only pip install into a fresh venv from a loopback index",
        "packages": args.packages, "runs": args.runs,
        "machine": {**results_file.machine(), "pip": pip},
        "results": results, "skipped": skipped,
    }
    results_file.write(record, args.output)

    results_file.table(f"pip install, {args.packages} wheels, median of {args.runs} runs (fresh venv each)", results,
                       skipped, width=8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
