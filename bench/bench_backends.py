"""Sandbox start-up: `true` run directly vs through `sbox run` on each backend.

    python bench/bench_backends.py [--runs 20] [--output bench/results/backends.json]

Run it with the interpreter of a venv where sbox is installed (not editable). Variants, all in a
temporary project whose `default` profile has the network off:
- direct: `/usr/bin/true`;
- sbox (mode: host): `sbox run -- true` with the profile unsandboxed: sbox's own cold cost;
- sbox bwrap: `sbox run --backend bwrap -- true` as a user repeats it: the plan cache is warm, and
  `sbox` is the launcher install.sh writes (Python with -I -S);
- sbox bwrap, pip's script: the same through the `sbox` script pip installs (Python with `site`);
- sbox bwrap, new command: a command line never run before (`sh -c : run-N`): the plan is built,
  from a config parsed before, as when a developer types a new command in a known project;
- sbox bwrap, cold: sbox's caches off (SBOX_PLAN_CACHE=0): nothing kept from earlier runs, as on
  a fresh CI machine;
- sbox docker: `sbox run --backend docker -- true` (the docker backend is never cached);
- sbox bwrap, read-only project: the same `true` where the profile has `writable: false` (no
  persistence guard to run);
- sbox bwrap, git repository: the same `true` in a project that is a git repository with one
  commit, as real projects are (its `.git` rebuilt in the sandbox around the redacted config);
- npm install, to first step: `sbox run -- npm install` repeated in an unchanged project, from
  sbox's start to the moment the first step's command starts in its sandbox (warm: from the
  plan cache's record of the whole two-phase plan; cold: SBOX_PLAN_CACHE=0). `npm` is a stub on
  PATH that prints the wall clock (`date +%s%N`, under /bin/sh: about a millisecond of its own
  counted in) and exits, so the time is sbox's (planning or the record's checks, the egress proxy
  of the download phase, bwrap), not npm's; the scripts phase's driver, which loads the `npm` it
  finds as JavaScript, finds a file that exits at once. The cold run resolves the registry names of npm's
  built-in allowlist, as every `sbox run -- npm install` does; warm runs reuse the pinned
  addresses while the record lives (recorder_plan.PIN_TTL). That project holds package.json
  alone, so each run stages the lockfile npm may write (the step waits for that before bwrap);
- npm install, to first step, lockfiles: the same in a project as a repeated install finds it
  (package-lock.json and npm's hidden lockfile, one package installed: nothing to stage, npm's
  hook finds the tree settled), so bwrap sets the step up while sbox checks the record;
- docker run (bare): `docker run --rm --network none` of sbox's own base image with the host's
  toolchain directories bound read-only (the image holds only links: `true` comes from /usr),
  `true`: what a container costs through the docker CLI, the floor for `sbox docker`;
- python -I -S alone, and bwrap alone with the options of the cached plan: the two fixed costs
  inside a warm run, so that what is left is sbox's own work.
Variants are interleaved run by run, so drift on the machine hits them all alike; a backend that
is not usable here is reported with its reason instead of a figure. Medians in ms, and the CPU time
(user + system) of each command's own process, which other load on the machine disturbs less; the
load average before and after. Everything runs under a temporary HOME, cache and state.
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
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import results_file  # noqa: E402
import trusting  # noqa: E402

SANDBOX_CONFIG = "version: 1\nprofiles:\n  default:\n    network: off\n"
READONLY_CONFIG = "version: 1\nprofiles:\n  default:\n    network: off\n    writable: false\n"
# The first step's start, on the wall clock shared with the host (sh: `//bin/true` is /bin/true). The
# same file is JavaScript that exits at once (the first line a hashbang, the second a comment): the
# scripts phase's driver (npm_scripts.js) loads the `npm` it finds as npm's own entry point.
NPM_STUB = "#!/bin/sh\n//bin/true; date +%s%N; exit 0\nprocess.exit(0)\n"
HOST_CONFIG = "version: 1\nprofiles:\n  default:\n    mode: host\n"


def sbox_executable() -> str:
    beside = Path(sys.executable).with_name("sbox")
    found = str(beside) if beside.exists() else shutil.which("sbox")
    if not found:
        raise SystemExit("no `sbox` command: run from the project's venv (./install.sh)")
    return found


CPU_MS: dict[str, list[float]] = {}  # variant -> CPU time of its process in each run


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str], name: str = "") -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {cwd} exited {proc.returncode}: {err.decode()[-500:]}")
    if name:
        CPU_MS.setdefault(name, []).append((usage.ru_utime + usage.ru_stime) * 1000)
    return elapsed


def bare_docker_run() -> list[str]:
    """`docker run --rm --network none` of the image sbox's docker backend uses, with the host's
    toolchain bound read-only: the same `true`, through the docker CLI alone."""
    from sbox_shim import layout
    from sbox_shim.backends import docker

    mounts = layout.toolchain_mounts()
    image = docker.ensure_base_image(docker._client(), tuple((m.target, m.source) for m in mounts
                                                             if m.kind == "symlink"))
    binds = [a for m in mounts if m.kind == "bind" and m.target in layout.TOOLCHAIN
             for a in ("-v", f"{m.source}:{m.target}:ro")]
    return ["docker", "run", "--rm", "--network", "none", *binds, image, "/usr/bin/true"]


BWRAP_ALONE = "bwrap alone (sbox's options)"
NPM_FIRST = "npm install, to first step"
NPM_FIRST_COLD = "npm install, to first step, cold"
NPM_FIRST_LOCKED = "npm install, to first step, lockfiles"
IN_GIT = "sbox bwrap, git repository"
LOCK = ('{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": '
        '{%s"node_modules/a": {"version": "1.0.0", "resolved": "http://127.0.0.1:9/a/-/a-1.0.0.tgz", '
        '"integrity": "sha512-AAAA"}}}\n')


def add_lockfiles(project: Path) -> None:
    """A settled tree of one package, as npm leaves it: package.json asks for it, both lockfiles list it."""
    (project / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true, '
                                          '"dependencies": {"a": "1.0.0"}}\n')
    (project / "package-lock.json").write_text(
        LOCK % '"": {"name": "app", "version": "1.0.0", "dependencies": {"a": "1.0.0"}}, ')
    (project / "node_modules" / "a").mkdir(parents=True, exist_ok=True)
    (project / "node_modules" / "a" / "package.json").write_text('{"name": "a", "version": "1.0.0"}\n')
    (project / "node_modules" / ".package-lock.json").write_text(LOCK % "")


def timed_first_step(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """From just before sbox starts to the first line the stub `npm` prints: its start time."""
    start = time.time_ns()
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"{' '.join(argv)} in {cwd} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return (int(proc.stdout.split()[0]) - start) / 1e6


DOCKER_BARE = "docker run (bare)"
FIRST_RUN = "sbox bwrap, new command"
PYTHON_ALONE = "python -I -S alone"


def timed_bwrap_alone(state: Path, env: dict[str, str]) -> float:
    """bwrap with exactly the options of the cached `true` plan, started directly: what the
    sandbox itself costs, without sbox's Python around it."""
    import marshal

    from sbox_shim import compiled
    from sbox_shim.backends import bwraprun

    record = next(r for r in (marshal.loads(p.read_bytes()) for p in (state / "plans").glob("*.plan"))
                  if r.get("argv") == ["true"] and r.get("guard"))  # the writable project's
    fds = compiled.record_fds(record)
    options = compiled._fill(record["options"], env, fds)
    assert options is not None
    command, passed, status = bwraprun.command_line(record["bwrap"], options, record["argv"])
    try:
        start = time.perf_counter()
        code = subprocess.run(command, env={}, pass_fds=[*passed, *fds], stdin=subprocess.DEVNULL).returncode
        elapsed = (time.perf_counter() - start) * 1000
    finally:
        for fd in [*passed, *fds]:
            os.close(fd)
        status.close()
    if code != 0:
        raise SystemExit(f"bwrap alone exited {code}")
    return elapsed


def unusable(backend: str) -> str | None:
    from sbox_shim.backends.select import module

    try:
        return module(backend).unavailable()  # type: ignore[no-any-return]
    except Exception as exc:  # a backend that cannot even be probed
        return str(exc)


Variant = tuple[list[str], Path, dict[str, str]]  # argv, cwd, environment on top of the common one


def add_repository(root: Path) -> None:
    """A git repository with one commit, as every real project is: its `.git` is rebuilt in each
    sandbox (skeleton.py), its config shown redacted."""
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="b",
               GIT_AUTHOR_EMAIL="b@example.invalid", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")
    (root / "README").write_text("bench\n")
    for args in (["init", "-q"], ["add", "README"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def setup(base: Path, backends: Sequence[str] = ("bwrap", "docker")) -> tuple[dict[str, Variant], dict[str, str], dict[str, str]]:
    sandboxed, host, home = base / "project", base / "host-project", base / "home"
    readonly, npm, stubs = base / "readonly-project", base / "npm-project", base / "stubs"
    locked, repo = base / "npm-locked-project", base / "git-project"
    for d in (sandboxed, host, home, readonly, npm, stubs, locked, repo):
        d.mkdir(parents=True)
    (sandboxed / "sbox.yaml").write_text(SANDBOX_CONFIG)
    (repo / "sbox.yaml").write_text(SANDBOX_CONFIG)
    add_repository(repo)
    (host / "sbox.yaml").write_text(HOST_CONFIG)
    (readonly / "sbox.yaml").write_text(READONLY_CONFIG)
    (npm / "sbox.yaml").write_text("version: 1\n")
    (npm / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}\n')
    (npm / "node_modules").mkdir()
    (locked / "sbox.yaml").write_text("version: 1\n")
    add_lockfiles(locked)
    (stubs / "npm").write_text(NPM_STUB)
    (stubs / "npm").chmod(0o755)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "SBOX_QUIET": "1",
        "SBOX_CACHE_DIR": str(base / "cache"),
        "SBOX_STATE_DIR": str(base / "state"),
        "SBOX_USER_CONFIG": str(base / "user-config.yaml"),
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    trusting.trust(env, sandboxed / "sbox.yaml", host / "sbox.yaml", readonly / "sbox.yaml", npm / "sbox.yaml",
                  locked / "sbox.yaml", repo / "sbox.yaml")
    script = sbox_executable()
    from sbox_shim import launcher

    sbox = str(base / "bin" / "sbox")  # what install.sh puts in its venv
    (base / "bin").mkdir()
    import sysconfig

    paths = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if not (Path(paths[0]) / "sbox_shim").is_dir():  # an editable install: the launcher names the tree
        paths.insert(0, str(ROOT))
    launcher.write(sbox, paths=paths)
    variants: dict[str, Variant] = {
        "direct": (["/usr/bin/true"], sandboxed, {}),
        "sbox (mode: host)": ([sbox, "run", "--", "true"], host, {}),
    }
    skipped = {}
    for backend in backends:
        reason = unusable(backend)
        if reason:
            skipped[f"sbox {backend}"] = reason
            continue
        argv = ["run", "--backend", backend, "--", "true"]
        variants[f"sbox {backend}"] = ([sbox, *argv], sandboxed, {})
        if backend == "bwrap":
            variants["sbox bwrap, pip's script"] = ([script, *argv], sandboxed, {})
            variants[FIRST_RUN] = ([sbox, *argv[:-1], "sh", "-c", ":"], sandboxed, {})  # + a new word each run
            variants["sbox bwrap, cold"] = ([sbox, *argv], sandboxed, {"SBOX_PLAN_CACHE": "0"})
            variants["sbox bwrap, read-only project"] = ([sbox, *argv], readonly, {})
            variants[IN_GIT] = ([sbox, *argv], repo, {})
            stub_path = {"PATH": f"{stubs}:{env['PATH']}"}
            variants[NPM_FIRST] = ([sbox, "run", "--backend", "bwrap", "--", "npm", "install"], npm, stub_path)
            variants[NPM_FIRST_COLD] = ([sbox, "run", "--backend", "bwrap", "--", "npm", "install"], npm,
                                        {**stub_path, "SBOX_PLAN_CACHE": "0"})
            variants[NPM_FIRST_LOCKED] = ([sbox, "run", "--backend", "bwrap", "--", "npm", "install"], locked,
                                          stub_path)
            variants[PYTHON_ALONE] = ([sys.executable, "-I", "-S", "-c", "pass"], sandboxed, {})
            variants[BWRAP_ALONE] = ([], sandboxed, {})  # timed by timed_bwrap_alone
        if backend == "docker":
            variants[DOCKER_BARE] = (bare_docker_run(), sandboxed, {})
    return variants, env, skipped


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, argv in (("bwrap", ["bwrap", "--version"]), ("docker", ["docker", "version", "--format",
                                                                       "{{.Server.Version}}"])):
        try:
            versions[name] = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "unavailable"
    return versions


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each variant (>= 20)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "backends.json"))
    parser.add_argument("--backends", default="bwrap,docker", help="comma-separated: bwrap, docker")
    args = parser.parse_args(argv)
    runs = max(args.runs, 20)

    with tempfile.TemporaryDirectory(prefix="sbox-bench-backends-") as tmp:
        variants, env, skipped = setup(Path(tmp), [b for b in args.backends.split(",") if b])
        samples: dict[str, list[float]] = {name: [] for name in variants}
        fresh = iter(range(10**9))

        def measure(name: str, cmd: list[str], cwd: Path, extra: dict[str, str]) -> float:
            if name == BWRAP_ALONE:
                return timed_bwrap_alone(Path(env["SBOX_STATE_DIR"]), {**env, **extra})
            if name == FIRST_RUN:  # an argv never run before: no plan to reuse, the config parsed
                cmd = [*cmd, f"run-{next(fresh)}"]
            if name in (NPM_FIRST, NPM_FIRST_COLD, NPM_FIRST_LOCKED):
                return timed_first_step(cmd, cwd, {**env, **extra})
            return timed(cmd, cwd, {**env, **extra}, name)

        for _ in range(2):  # warm up (docker's image, the plan cache: npm's plan is kept after its tree settles)
            for name, (cmd, cwd, extra) in variants.items():
                measure(name, cmd, cwd, extra)
        CPU_MS.clear()
        load_before = loadavg()
        for _ in range(runs):
            for name, (cmd, cwd, extra) in variants.items():
                samples[name].append(measure(name, cmd, cwd, extra))

        load_after = loadavg()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    cpu = {name: statistics.median(values) for name, values in CPU_MS.items()}
    direct = medians["direct"]
    print(f"{'variant':34} {'runs':>5} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'+ vs direct':>12} {'cpu ms':>7}")
    for name, value in medians.items():
        extra = "" if name == "direct" else f"{value - direct:+12.1f}"
        print(f"{name:34} {len(samples[name]):5d} {value:10.1f} {min(samples[name]):9.1f} "
              f"{max(samples[name]):9.1f} {extra:>12} {cpu.get(name, float('nan')):7.1f}")
    docker_ratio = (medians["sbox docker"] / medians[DOCKER_BARE]) if DOCKER_BARE in medians else None
    if docker_ratio is not None:
        print(f"sbox docker / docker run (bare): {docker_ratio:.2f}x")
    print(f"load average before {load_before}, after {load_after}")
    for name, reason in skipped.items():
        print(f"{name:26} skipped: {reason}")

    if "sbox bwrap" in medians and BWRAP_ALONE in medians:
        own = medians["sbox bwrap"] - medians[BWRAP_ALONE] - medians[PYTHON_ALONE]
        print(f"sbox's own work on the warm path: {own:.1f} ms (sbox bwrap - bwrap alone - python alone)")
    result = {
        "benchmark": "backends",
        "command": "true",
        "network": "off",
        "unit": "ms",
        "runs": {name: len(values) for name, values in samples.items()},
        "median_ms": {name: round(v, 2) for name, v in medians.items()},
        "min_ms": {name: round(min(v), 2) for name, v in samples.items()},
        "max_ms": {name: round(max(v), 2) for name, v in samples.items()},
        "overhead_vs_direct_ms": {name: round(v - direct, 2) for name, v in medians.items() if name != "direct"},
        "sbox_own_warm_ms": (round(medians["sbox bwrap"] - medians[BWRAP_ALONE] - medians[PYTHON_ALONE], 2)
                             if BWRAP_ALONE in medians else None),
        "cpu_ms": {name: round(v, 2) for name, v in cpu.items()},
        "sbox_docker_vs_bare_docker_run": round(docker_ratio, 3) if docker_ratio is not None else None,
        "loadavg": {"before": load_before, "after": load_after},
        "skipped": skipped,
        "tools": tool_versions(),
    }
    results_file.write(result, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
