"""Where a repeated `sbox run -- npm install` spends its time before its first step starts.

    python bench/npm_stages.py [--runs 30] [--output bench/results/npm_stages.json]

Run it with the interpreter of a venv where sbox is installed (not editable), as bench_backends.py.
In bench_backends.py's npm project (its `npm` a stub that prints the wall clock and exits), each run
is a fresh `python -I -S` that loads sbox's warm path as the launcher does, with a few functions
wrapped to note the wall-clock time when they are entered and left (a module is wrapped right
after the warm path itself imports it, so imports stay where they fall), and the time each of
those modules is first imported. The print is a timeline: the median time of each mark from the
moment the parent starts the process, to "first step" (the stub's own clock). Marks that a
version of sbox does not reach are left out, so the same bench reads sbox before and after a
change. Medians over the runs, in ms, with the load average. The hook on every import costs a few
milliseconds of its own: bench_backends.py's "npm install, to first step" is the figure to quote.

`--lockfile`: the project as a repeated install finds it, with a package-lock.json and npm's
hidden lockfile listing one installed package (the stub installs nothing): no output file to
stage, and npm's hook reads both lockfiles to find the tree settled (no copy of node_modules
kept for the rollback). Without it, bench_backends.py's project: package.json alone.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

import bench_backends  # noqa: E402
import results_file  # noqa: E402
import stages_child  # noqa: E402

WRAP = {
    "sbox_shim.compiled": ("_replay", "_read", "fact"),
    "sbox_shim.replay": ("prepare", "run"),
    "sbox_shim.runner": ("prestart", "execute", "_run_step", "_run_staged", "_Starting.begin", "_Starting.ready"),
    "sbox_shim.egress.starting": ("Starting.begin", "Starting.ready", "Starting._start"),
    "sbox_shim.backends.bwrap": ("start", "run", "Started.still_pinned"),
    "sbox_shim.backends.bwraprun": ("spawn", "finish"),
    "sbox_shim.backends.mountcheck": ("verify",),
    "sbox_shim.backends.bwrapend": ("watch",),
    "sbox_shim.egress.netns": ("serve",),
    "sbox_shim.egress.proxy": (),
    "sbox_shim.guard": ("before",),
    "sbox_shim.outputs": ("stage",),
    "sbox_shim.hooks": ("Hooks.before",),
    "sbox_shim.rollback": ("keep",),
    "sbox_shim.plan": (),
    "dataclasses": (),
}
CHILD = stages_child.child(WRAP)


def one(python: str, paths: str, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, float] | None:
    code, marks, printed, end, start = stages_child.run(CHILD, python, paths, argv, cwd, env)
    if code != 0:
        return None  # not warm (the cold path would run), or the stub failed
    if not printed:
        raise SystemExit("the stub npm printed no time")
    at: dict[str, float] = {}
    for name, ms in marks:
        at.setdefault(name, ms)  # the first of each
    # the record's facts end before the runner starts (bwrap.options_of asks compiled.fact too, later)
    ends = [ms for name, ms in marks if name == "compiled.fact <"]
    if ends and "runner.execute >" in at:
        at["facts checked"] = max([e for e in ends if e < at["runner.execute >"]], default=ends[0])
    at.pop("compiled.fact <", None)
    at["first step"] = (int(printed[0]) - start) / 1e6
    at["exit"] = end
    return at


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "npm_stages.json"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the sbox to measure")
    parser.add_argument("--lockfile", action="store_true", help="a project with its lockfiles (see above)")
    args = parser.parse_args(argv)
    paths = stages_child.sbox_paths(args.python)
    with tempfile.TemporaryDirectory(prefix="sbox-bench-npm-stages-") as tmp:
        variants, env, skipped = bench_backends.setup(Path(tmp), ["bwrap"])
        if skipped:
            raise SystemExit(f"bwrap is not usable here: {skipped}")
        cmd, cwd, extra = variants[bench_backends.NPM_FIRST]
        env = {**env, **extra}
        if args.lockfile:
            bench_backends.add_lockfiles(cwd)
        stages_child.prime(args.python, paths, cmd[1:], cwd, env, 3)  # the record, then the project settles
        load_before = bench_backends.loadavg()
        runs = [r for r in (one(args.python, paths, cmd[1:], cwd, env) for _ in range(args.runs)) if r]
        load_after = bench_backends.loadavg()
    if not runs:
        raise SystemExit("no run was warm")
    names = [n for n in runs[0] if all(n in r for r in runs)]
    medians = {name: round(statistics.median(r[name] for r in runs), 2) for name in names}
    for name, value in sorted(medians.items(), key=lambda item: item[1]):
        print(f"{name:40} {value:7.2f} ms")
    print(f"{len(runs)} warm runs; load average before {load_before}, after {load_after}")
    results_file.write({"benchmark": "npm_stages", "command": "sbox run --backend bwrap -- npm install (stub npm)",
                        "project": "with lockfiles" if args.lockfile else "package.json alone",
                        "unit": "ms", "runs": len(runs), "median_ms": medians,
                        "loadavg": {"before": load_before, "after": load_after}}, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
