"""A small real `npm install`: directly on the host vs `sbox run --backend bwrap` vs `--backend docker`.

    python bench/bench_install.py [--runs 5] [--packages 8] [--command install|ci] [--no-scripts]
                                  [--output bench/results/install.json]

A local npm registry on 127.0.0.1 serves a handful of packages (a small dependency tree, one
with a postinstall script), configured in the project's `.npmrc`. Every run starts from a fresh
project directory (no node_modules, no lockfile); npm's cache is warm (one untimed warm-up run
per way first), as it is for a developer. Sandboxed runs go through the built-in two-phase policy
(`npm install --ignore-scripts` with the registry allowlist via the egress proxy, then the
postinstall offline, run by sbox's driver of npm's modules), so they include two sandbox starts (on docker the second container is
started while the first phase runs). `docker by hand` is the floor for the docker backend: the
same `npm install` (scripts included) in one `docker run --rm` of sbox's base image with the host's
toolchain bound read-only and the host's network (for the loopback registry), as a user would
type it. Runs are interleaved so that other load on the machine hits all ways alike; the load
average is recorded before and after. Prints the median (and min/max) of each and its
ratio to direct; writes the numbers as JSON. All traffic stays on 127.0.0.1.
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
from support.packages import npm_package  # noqa: E402
from support.registries import NpmRegistry  # noqa: E402

WAYS = ("direct", "bwrap", "docker", "docker by hand")


def packages(count: int, scripts: bool = True) -> tuple[list[bytes], dict[str, str]]:
    """`count` packages: a chain of dependencies, a few files each, the last with a postinstall
    (unless `scripts` is False: then no package has an install script)."""
    tarballs = []
    names = [f"sbox-bench-{i}" for i in range(count)]
    for i, name in enumerate(names):
        files = {"index.js": f"module.exports = {i};\n", "README.md": "bench fixture\n" * 20,
                 "lib/util.js": "exports.id = (x) => x;\n" * 50}
        deps = {names[i + 1]: "1.0.0"} if i % 2 == 0 and i + 1 < count else None
        postinstall = {"postinstall": "node -e \"require('fs').writeFileSync('built.txt', 'ok')\""} \
            if i == count - 1 and scripts else None
        tarballs.append(npm_package(name, "1.0.0", files, scripts=postinstall, dependencies=deps))
    top = {n: "1.0.0" for i, n in enumerate(names) if i % 2 == 0}
    return tarballs, top


def unavailable(way: str) -> str | None:
    if way == "direct":
        return None if shutil.which("npm") else "npm is not installed"
    try:
        if way.startswith("docker"):
            from sbox_shim.backends import docker

            return docker.unavailable()  # type: ignore[no-any-return]
        from sbox_shim.backends import bwrap

        return bwrap.unavailable()  # type: ignore[no-any-return]
    except ImportError as exc:
        return f"backend not importable: {exc}"


def by_hand(project: Path, cache: Path, env: dict[str, str]) -> list[str]:
    """`npm install` in one `docker run --rm` of the docker backend's base image, as a user would."""
    from sbox_shim import layout
    from sbox_shim.backends import docker

    mounts = layout.toolchain_mounts()
    image = docker.ensure_base_image(docker._client(), tuple((m.target, m.source) for m in mounts
                                                             if m.kind == "symlink"))
    cache.mkdir(exist_ok=True)
    binds = [a for m in mounts if m.kind != "symlink" for a in ("-v", f"{m.source}:{m.target}:ro")]
    return ["docker", "run", "--rm", "--network", "host", "-u", f"{os.getuid()}:{os.getgid()}", *binds,
            "-v", f"{project}:{project}", "-v", f"{cache}:{cache}", "-w", str(project), "--tmpfs", "/tmp",
            "-e", "HOME=/tmp", "-e", f"npm_config_cache={cache}", "-e", "npm_config_update_notifier=false",
            "-e", f"npm_config_registry={env['npm_config_registry']}", image, "npm", "install"]


def sbox_command() -> str:
    beside = Path(sys.executable).parent / "sbox"
    return str(beside) if beside.exists() else shutil.which("sbox") or "sbox"


def one_run(way: str, work: Path, registry: NpmRegistry, top: dict[str, str], env: dict[str, str],
            run: int, command: str = "install", lock: str | None = None) -> float:
    project = work / f"{way.replace(' ', '-')}-{run}"
    project.mkdir()
    (project / "package.json").write_text(json.dumps(
        {"name": "bench-app", "version": "0.0.0", "private": True, "dependencies": top}))
    (project / ".npmrc").write_text(f"registry={registry.url}/\naudit=false\nfund=false\n")
    if lock is not None:  # npm ci: the lockfile made once, the same for every way
        (project / "package-lock.json").write_text(lock)
    if way == "direct":
        argv = ["npm", command]
        run_env = dict(env, npm_config_cache=str(work / "direct-cache"))
    elif way == "docker by hand":
        argv = by_hand(project, work / "by-hand-cache", env)
        run_env = env
    else:
        (project / "sbox.yaml").write_text("version: 1\n")
        trusting.trust(env, project / "sbox.yaml", project / ".npmrc")
        argv = [sbox_command(), "run", "--backend", way, "--", "npm", command]
        run_env = env
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=project, env=run_env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{way}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    last = sorted(top)[-1]
    if not (project / "node_modules" / last / "package.json").is_file():
        raise SystemExit(f"{way}: {last} is not installed")
    shutil.rmtree(project)
    return elapsed


def results_file_load() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def make_lock(work: Path, registry: NpmRegistry, top: dict[str, str], env: dict[str, str]) -> str:
    """The lockfile `npm ci` installs from, made once directly (no scripts run for it)."""
    project = work / "lock"
    project.mkdir()
    (project / "package.json").write_text(json.dumps(
        {"name": "bench-app", "version": "0.0.0", "private": True, "dependencies": top}))
    subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts"], cwd=project, check=True,
                   env=dict(env, npm_config_cache=str(work / "direct-cache")), capture_output=True, timeout=600)
    return (project / "package-lock.json").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=8)
    parser.add_argument("--command", choices=("install", "ci"), default="install")
    parser.add_argument("--no-scripts", action="store_true", help="no package has an install script")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "install.json"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    skipped = {w: r for w in WAYS if (r := unavailable(w))}
    ways = [w for w in WAYS if w not in skipped]
    if "direct" not in ways:
        raise SystemExit(f"direct: {skipped['direct']}")
    tarballs, top = packages(args.packages, scripts=not args.no_scripts)
    times: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="sbox-bench-install-") as tmp, NpmRegistry(tarballs) as registry:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("npm_config_", "sbox_"))}
        env.update(HOME=str(home), SBOX_QUIET="1", SBOX_CACHE_DIR=str(work / "sbox-cache"),
                   SBOX_STATE_DIR=str(work / "sbox-state"), SBOX_USER_CONFIG=str(work / "none.yaml"),
                   npm_config_update_notifier="false",
                   # the user names the loopback registry (a project .npmrc's never reaches loopback)
                   npm_config_registry=f"{registry.url}/")
        lock = make_lock(work, registry, top, env) if args.command == "ci" else None
        for way in ways:  # warm-up: npm's cache, docker's base image, the page cache
            one_run(way, work, registry, top, env, -1, args.command, lock)
        load_before = results_file_load()
        for run in range(args.runs):
            for way in ways:
                times[way].append(one_run(way, work, registry, top, env, run, args.command, lock))
                print(f"  run {run + 1}/{args.runs} {way:<15} {times[way][-1]:.2f} s", file=sys.stderr)

        load_after = results_file_load()
    results = results_file.summary(times, {way: statistics.median(times["direct"]) for way in times})
    versions = {tool: subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
                for tool in ("node", "npm")}
    record = {
        "benchmark": f"npm {args.command} of a small tree from a loopback registry, fresh node_modules per run",
        "install_scripts": not args.no_scripts, "packages": args.packages, "top_level_dependencies": len(top), "runs": args.runs,
        "machine": {**results_file.machine(), **versions},
        "results": results, "skipped": skipped, "loadavg": {"before": load_before, "after": load_after},
    }
    results_file.write(record, args.output)

    results_file.table(f"npm {args.command}, {args.packages} packages{', no install scripts' if args.no_scripts else ''}, "
                       f"median of {args.runs} runs (fresh node_modules each)", results, skipped)
    print(f"load average before {load_before}, after {load_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
