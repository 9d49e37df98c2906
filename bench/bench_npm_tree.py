"""`npm ci` of real trees from a loopback registry: directly vs through sbox (bwrap, docker).

    python bench/bench_npm_tree.py [--rounds 5] [--trees small,large] [--caches warm,cold]
                                   [--ways direct,direct-2phase,bwrap,docker]
                                   [--fixtures ~/.cache/sbox-bench] [--output bench/results/npm_tree.json]

Two real apps, fetched once from the real registry by npm itself with the machine's default
configuration and kept under `--fixtures` (outside the repository; see npm_fixture.py):

    large  a Vite + React + TypeScript + ESLint app (create-vite's react-ts template, ~180
           packages; esbuild's postinstall runs, and works offline: it checks the platform
           package npm installed as an optional dependency)
    small  esbuild, lodash, chalk (a handful of packages, one install script)

Each run is `npm ci` in a fresh copy of the app (package.json + lockfile), the registry being a
loopback server with no uplink, named by `npm_config_registry` as a user would. Ways: `direct`
(npm ci), `direct-2phase` (npm ci --ignore-scripts, then npm rebuild, no sandbox: what the split
cost by npm's own means), `direct-split` (npm ci --ignore-scripts, then sbox's scripts driver,
npm_scripts.js, for the packages sbox's scope picks, no sandbox: what sbox's split costs without
the sandboxes), `bwrap` and `docker` (`sbox run --backend B -- npm ci`, the built-in two-phase
policy). npm cache: `warm` (kept between runs, filled by an untimed warm-up) or `cold` (emptied
before each run: a fresh directory for npm, sbox's `npm` cache directory removed). Rounds are
interleaved (every tree, cache and way once per round) so that other load hits all alike; the
load average is recorded before and after each round. Reports medians and the spread (min–max)
and each median's ratio to `direct`. All traffic stays on 127.0.0.1.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))

import npm_fixture  # noqa: E402
import results_file  # noqa: E402
import trusting  # noqa: E402

TREES = {
    "large": {  # create-vite's react-ts template
        "react": "^18.3.1", "react-dom": "^18.3.1", "vite": "^5.4.0", "@vitejs/plugin-react": "^4.3.1",
        "esbuild": "^0.21.5", "typescript": "^5.5.3", "eslint": "^9.9.0", "@eslint/js": "^9.9.0",
        "eslint-plugin-react-hooks": "^5.1.0-rc.0", "eslint-plugin-react-refresh": "^0.4.9",
        "globals": "^15.9.0", "typescript-eslint": "^8.0.1", "@types/react": "^18.3.3",
        "@types/react-dom": "^18.3.0",
    },
    "small": {"esbuild": "^0.21.5", "lodash": "^4.17.21", "chalk": "^4.1.2"},
}
WAYS = ("direct", "direct-2phase", "direct-split", "bwrap", "docker")
CACHES = ("warm", "cold")


def unavailable(way: str) -> str | None:
    if way == "direct":
        return None if shutil.which("npm") else "npm is not installed"
    try:
        if way == "docker":
            from sbox_shim.backends import docker

            return docker.unavailable()  # type: ignore[no-any-return]
        from sbox_shim.backends import bwrap

        return bwrap.unavailable()  # type: ignore[no-any-return]
    except ImportError as exc:
        return f"backend not importable: {exc}"


SPLIT: list[str] = []  # stands for sbox's scripts phase, decided after the download (split_argv)


def split_argv(project: Path) -> list[str]:
    """What sbox's scripts phase runs after `npm ci --ignore-scripts` here, without a sandbox."""
    from sbox_shim.ecosystems import npm_scope

    driver = Path(npm_scope.__file__).with_name("npm_scripts.js")
    argv = ("node", str(driver), "npm", "ci")
    chosen = npm_scope.scripts_argv(argv, str(project), None, npm_scope.read_after(str(project)),
                                    npm_scope.root_due(str(project)))
    return list(chosen or ("true",))


def sbox_command() -> str:
    beside = Path(sys.executable).parent / "sbox"
    return str(beside) if beside.exists() else shutil.which("sbox") or "sbox"


class Bench:
    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env, self.count = work, env, 0

    def sbox_cache(self, cache: str) -> Path:
        return self.work / f"sbox-cache-{cache}"

    def run(self, tree: str, fixture: Path, registry: npm_fixture.LoopbackNpm, cache: str, way: str) -> float:
        self.count += 1
        project = self.work / f"{tree}-{cache}-{way}-{self.count}"
        project.mkdir()
        shutil.copyfile(fixture / "package.json", project / "package.json")
        (project / "package-lock.json").write_text(registry.lockfile(fixture))
        env = dict(self.env, npm_config_registry=f"{registry.url}/", SBOX_CACHE_DIR=str(self.sbox_cache(cache)))
        npm_cache = self.work / ("npm-cache-warm" if cache == "warm" else f"npm-cache-cold-{self.count}")
        if cache == "cold":
            shutil.rmtree(self.sbox_cache(cache) / "npm", ignore_errors=True)
        if way.startswith("direct"):
            env["npm_config_cache"] = str(npm_cache)
            argvs = {"direct": [["npm", "ci"]],
                     "direct-2phase": [["npm", "ci", "--ignore-scripts"], ["npm", "rebuild"]],
                     "direct-split": [["npm", "ci", "--ignore-scripts"], SPLIT]}[way]
        else:
            (project / "sbox.yaml").write_text("version: 1\n")
            trusting.trust(env, project / "sbox.yaml")
            argvs = [[sbox_command(), "run", "--backend", way, "--", "npm", "ci"]]
        start = time.perf_counter()
        for argv in argvs:
            if argv is SPLIT:
                argv = split_argv(project)
            proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise SystemExit(f"{tree}/{cache}/{way}: {' '.join(argv)} exited {proc.returncode}:\n"
                                 f"{proc.stderr[-3000:]}")
        elapsed = time.perf_counter() - start
        self.verify(project, tree, way)
        shutil.rmtree(project)
        if cache == "cold":
            shutil.rmtree(npm_cache, ignore_errors=True)
        return elapsed

    @staticmethod
    def verify(project: Path, tree: str, way: str) -> None:
        """Every package of the lockfile is there, and esbuild's binary answers (its postinstall ran
        or was not needed: either way the install works)."""
        lock = json.loads((project / "package-lock.json").read_text())
        wanted = [k for k, e in lock["packages"].items() if k and not e.get("optional")]
        missing = [k for k in wanted if not (project / k / "package.json").is_file()]
        if missing:
            raise SystemExit(f"{tree}/{way}: {len(missing)} packages missing, e.g. {missing[:3]}")
        esbuild = project / "node_modules" / ".bin" / "esbuild"
        out = subprocess.run([str(esbuild), "--version"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{tree}/{way}: esbuild does not run: {out.stderr.strip()[:300]}")


def summarise(times: list[float], direct: list[float] | None) -> dict[str, Any]:
    med = statistics.median(times)
    row: dict[str, Any] = {"median_s": round(med, 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3),
                           "runs_s": [round(x, 3) for x in times]}
    if direct:
        row["ratio_to_direct"] = round(med / statistics.median(direct), 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trees", default="small,large")
    parser.add_argument("--caches", default=",".join(CACHES))
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--fixtures", default=str(Path.home() / ".cache" / "sbox-bench"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "npm_tree.json"))
    args = parser.parse_args()
    trees, caches = args.trees.split(","), args.caches.split(",")
    if args.rounds < 1 or not set(trees) <= set(TREES) or not set(caches) <= set(CACHES):
        parser.error("--rounds ≥ 1; --trees from small,large; --caches from warm,cold")
    asked = [w for w in args.ways.split(",") if w]
    if "direct" not in asked or not set(asked) <= set(WAYS):
        parser.error(f"--ways must include direct and name only {', '.join(WAYS)}")
    skipped = {w: why for w in asked if (why := unavailable(w.split("-")[0]))}
    ways = [w for w in asked if w not in skipped]
    if "direct" not in ways:
        raise SystemExit(f"direct: {skipped['direct']}")
    fixtures = {t: npm_fixture.fetch(f"npm-tree-{t}", TREES[t], Path(args.fixtures)) for t in trees}

    times: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {c: {w: [] for w in ways} for c in caches} for t in trees}
    rounds: list[dict[str, Any]] = []
    servers = {t: npm_fixture.LoopbackNpm(fixtures[t]) for t in trees}
    try:
        with tempfile.TemporaryDirectory(prefix="sbox-bench-npm-tree-") as tmp:
            work = Path(tmp)
            (work / "home").mkdir()
            env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("npm_config_", "sbox_"))}
            env.update(HOME=str(work / "home"), SBOX_QUIET="1", SBOX_STATE_DIR=str(work / "sbox-state"),
                       SBOX_USER_CONFIG=str(work / "none.yaml"), npm_config_update_notifier="false",
                       npm_config_audit="false", npm_config_fund="false")
            bench = Bench(work, env)
            for t in trees:  # warm-up: the warm caches, docker's image, the page cache
                for c in caches:
                    for w in ways:
                        bench.run(t, fixtures[t], servers[t], c, w)
            for r in range(args.rounds):
                load_before = os.getloadavg()[0]
                for t in trees:
                    for c in caches:
                        for w in ways:
                            times[t][c][w].append(bench.run(t, fixtures[t], servers[t], c, w))
                            print(f"  round {r + 1}/{args.rounds} {t:<5} {c:<4} {w:<13} {times[t][c][w][-1]:6.2f} s",
                                  file=sys.stderr)
                rounds.append({"round": r + 1, "loadavg_1min_before": round(load_before, 2),
                               "loadavg_1min_after": round(os.getloadavg()[0], 2)})
    finally:
        for s in servers.values():
            s.close()

    results = {t: {c: {w: summarise(times[t][c][w], times[t][c]["direct"] if w != "direct" else None)
                       for w in ways} for c in caches} for t in trees}
    sizes = {t: {"packages_served": servers[t].package_count,
                 "lockfile_entries": json.loads((fixtures[t] / "fixture.json").read_text())["installed_entries"],
                 "dependencies": TREES[t]} for t in trees}
    versions = {tool: subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
                for tool in ("node", "npm")}
    results_file.write({
        "benchmark": "npm ci of real trees from a loopback registry (no uplink), fresh project per run",
        "rounds": args.rounds, "trees": sizes, "machine": {**results_file.machine(), **versions},
        "load_per_round": rounds, "results": results, "skipped": skipped,
    }, args.output)

    print(f"npm ci, loopback registry, median (min–max) of {args.rounds} interleaved rounds; "
          f"load average {min(r['loadavg_1min_before'] for r in rounds):.1f}–"
          f"{max(r['loadavg_1min_after'] for r in rounds):.1f}")
    print(f"{'tree':<6} {'cache':<5} {'way':<14} {'median':>8} {'min–max':>15} {'vs direct':>10}")
    for t in trees:
        for c in caches:
            for w, row in results[t][c].items():
                ratio = f"{row['ratio_to_direct']:.2f}x" if "ratio_to_direct" in row else "1.00x"
                print(f"{t:<6} {c:<5} {w:<14} {row['median_s']:>7.2f}s "
                      f"{row['min_s']:>6.2f}–{row['max_s']:<6.2f}s {ratio:>9}")
    for w, why in skipped.items():
        print(f"{w:<8} skipped: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
