"""A small yarn 4 ("berry") install: directly on the host vs `sbox run --backend bwrap` / `docker`.

    python bench/bench_yarn.py [--runs 5] [--packages 8] [--linker pnp|node-modules]
                               [--output bench/results/yarn.json]

The yarn release is the one run-tests.sh fetches (`.tools/yarn-4.18.1`). A loopback npm registry
serves bench_install.py's small tree (the last package with a postinstall). Each way has one
project directory for the whole run, so that its yarn cache is warm as a developer's is (sbox's
is per project); two kinds of run, interleaved:

- `first`: the project without its lockfile, `.yarn/`, Plug'n'Play files and node_modules, as a
  fresh clone: berry resolves, fetches from its warm cache, links and builds. Through sbox: the
  download with the build step skipped, the scripts phase offline, and the state step that keeps
  the install state as the download wrote it with the scripts phase's build record.
- `repeat`: `yarn install` again in the installed project: nothing to fetch or build; through sbox
  the note of the first install matches, so no scripts phase at all.
- `settled`: `yarn install` once more, the same.

Prints the median (and min/max) of each and its ratio to direct; writes the numbers as JSON, with
the load average before and after. All traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
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
from bench_install import packages, results_file_load, sbox_command, unavailable  # noqa: E402
from support import yarns  # noqa: E402
from support.registries import NpmRegistry  # noqa: E402

WAYS = ("direct", "bwrap", "docker")
KINDS = ("first", "repeat", "settled")
FRESH = ("yarn.lock", ".yarn", ".pnp.cjs", ".pnp.loader.mjs", "node_modules")


def project(work: Path, way: str, top: dict[str, str], linker: str, env: dict[str, str]) -> Path:
    where = work / way
    where.mkdir()
    (where / "package.json").write_text(json.dumps({
        "name": "bench-app", "version": "0.0.0", "private": True, "packageManager": f"yarn@{yarns.BERRY}",
        "dependencies": top}))
    (where / ".yarnrc.yml").write_text(
        f"nodeLinker: {linker}\nenableScripts: true\nenableTelemetry: false\nunsafeHttpWhitelist: ['127.0.0.1']\n")
    if way != "direct":
        (where / "sbox.yaml").write_text(f"version: 1\nbackend: {way}\n")
        trusting.trust(env, where / "sbox.yaml", where / ".yarnrc.yml")
    return where


def one_run(way: str, where: Path, kind: str, env: dict[str, str]) -> float:
    if kind == "first":
        for name in FRESH:
            path = where / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    argv = ["yarn", "install"] if way == "direct" else [sbox_command(), "run", "--", "yarn", "install"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{way}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    if kind == "first" and "must be built" not in proc.stdout:
        raise SystemExit(f"{way}: the postinstall was not built:\n{proc.stdout[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=8)
    parser.add_argument("--linker", choices=("pnp", "node-modules"), default="pnp")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "yarn.json"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not (yarns.TOOLS / f"yarn-{yarns.BERRY}" / "package" / "bin" / "yarn.js").is_file():
        raise SystemExit(f"yarn {yarns.BERRY} is not in {yarns.TOOLS}: run ./run-tests.sh once (it fetches it)")
    skipped = {w: r for w in WAYS if w != "direct" and (r := unavailable(w))}
    ways = [w for w in WAYS if w not in skipped]
    tarballs, top = packages(args.packages)
    times: dict[str, list[float]] = {f"{w} {k}": [] for w in ways for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="sbox-bench-yarn-") as tmp, \
            NpmRegistry(tarballs) as registry:
        work = Path(tmp)
        (work / "home").mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.upper().startswith(("YARN_", "NPM_CONFIG_", "SBOX_")) and k != "CI"}
        env.update(HOME=str(work / "home"), PATH=yarns.path_with(yarns.BERRY), SBOX_QUIET="1",
                   SBOX_CACHE_DIR=str(work / "sbox-cache"), SBOX_STATE_DIR=str(work / "sbox-state"),
                   SBOX_USER_CONFIG=str(work / "none.yaml"), YARN_NPM_REGISTRY_SERVER=registry.url,
                   YARN_ENABLE_IMMUTABLE_INSTALLS="false", YARN_GLOBAL_FOLDER=str(work / "direct-yarn"))
        projects = {w: project(work, w, top, args.linker, env) for w in ways}
        for way in ways:  # warm-up: the caches, docker's base image, the page cache
            for kind in KINDS:
                one_run(way, projects[way], kind, env)
        load_before = results_file_load()
        for run in range(args.runs):
            for kind in KINDS:
                for way in ways:
                    key = f"{way} {kind}"
                    times[key].append(one_run(way, projects[way], kind, env))
                    print(f"  run {run + 1}/{args.runs} {key:<15} {times[key][-1]:.2f} s", file=sys.stderr)
        load_after = results_file_load()
    results = results_file.summary(times, {key: statistics.median(times["direct " + key.split()[1]]) for key in times})
    record = {
        "benchmark": f"yarn {yarns.BERRY} install ({args.linker}) of a small tree from a loopback registry",
        "packages": args.packages, "runs": args.runs, "machine": {**results_file.machine(), "yarn": yarns.BERRY},
        "results": results, "skipped": skipped, "loadavg": {"before": load_before, "after": load_after},
    }
    results_file.write(record, args.output)
    results_file.table(f"yarn {yarns.BERRY} install, {args.linker}, {args.packages} packages, median of {args.runs} runs",
                       results, skipped)
    print(f"load average before {load_before}, after {load_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
