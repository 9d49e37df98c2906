"""Where a warm `sbox run -- true` on bubblewrap spends its time, stage by stage.

    python bench/warm_stages.py [--runs 30] [--output bench/results/warm_stages.json]

Run it with the interpreter of a venv where sbox is installed (not editable), as bench_backends.py.
In the same temporary project (a writable one, network off, the persistence guard on), each run is
a fresh `python -I -S` that loads sbox's warm path as the launcher does, with the functions that
mark a stage wrapped to note the time on the wall clock (bench/stages_child.py); nothing else is
changed (a module is wrapped right after the warm path itself imports it, so imports stay where
they fall). Stages, from the moment the parent starts the process:

- python start: to the first line of the program (the interpreter's own start-up);
- imports before bwrap: entry, compiled and what they load before the record is read;
- record: the plan directory's checks, the key, reading the record;
- bwrap's data: the memfds of the files bwrap copies in, the seccomp filter, the pinned sources;
- spawn: bwrap started, held before the command (`--block-fd`);
- set-up, overlapped: from the spawn until bwrap has made its mounts, while sbox checks the
  record's facts and the guard takes its snapshot (both shown, with the imports they need);
- mount check: the pinned binds checked where bwrap mounted them, the command let go;
- command + teardown: until bwrap has exited (`true` itself is about a millisecond);
- guard after: the persistence guard's comparison;
- exit: to the parent seeing the process end (the marks are printed first: a few tens of µs).

Medians over the runs, in ms, with the load average; "overlapped" rows run while bwrap works.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
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
    "sbox_shim.compiled": ("in_a_project", "_read", "_materials", "_still_holds", "_prepare", "record_fds"),
    "sbox_shim.backends.bwraprun": ("spawn", "finish"),
    "sbox_shim.backends.mountcheck": ("verify",),
    "sbox_shim.backends.bwrapend": ("watch",),
    "sbox_shim.guard": ("before", "after"),
}
CHILD = stages_child.child(WRAP)


def one(python: str, paths: str, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, float] | None:
    code, marks, _, end, _ = stages_child.run(CHILD, python, paths, argv, cwd, env)
    if code != 0:
        return None  # not warm (the cold path would run): the record is being made
    at: dict[str, float] = {}
    for name, ms in marks:
        at.setdefault(name, ms)  # the first of each (the guard runs once)
    at["end"] = end
    return stages(at)


def stages(at: dict[str, float]) -> dict[str, float]:
    """The stages of one run from its marks. Also for an sbox whose warm path checked the facts
    and took the guard's snapshot before starting bwrap (then those rows are not overlapped)."""
    spawned = at["bwraprun.spawn <"]
    held = "compiled._still_holds >" in at  # facts checked while bwrap sets up
    facts = ((at["compiled._still_holds >"], at["compiled._still_holds <"]) if held
             else (at["compiled._prepare >"], at["compiled.record_fds >"]))
    data = at["compiled._materials >"] if held else at["compiled.record_fds >"]
    out = {
        "python start": at["python started"],
        "imports before the record": at["compiled imported"] - at["python started"],
        "record (checks, key, read)": min(data, facts[0]) - at["compiled imported"],
        "bwrap's data (memfds, pins)": (at["bwraprun.spawn >"] - data if held
                                        else at["compiled.record_fds <"] - at["compiled.record_fds >"]),
        "facts" + (" (overlapped)" if held else ""): facts[1] - facts[0],
        "guard imports + snapshot" + (" (overlapped)" if held else ""):
            at["guard.before <"] - (facts[1] if held else at["compiled.record_fds <"]),
        "spawn": spawned - at["bwraprun.spawn >"],
        "set-up: spawn to mounts made": at["mountcheck.verify <"] - spawned,
        "mount check, command let go": at["bwrapend.watch >"] - at["mountcheck.verify <"],
        "command + teardown": at["bwrapend.watch <"] - at["bwrapend.watch >"],
        "guard after": at["guard.after <"] - at["guard.after >"],
        "exit (after the guard)": at["end"] - at["guard.after <"],
        "total": at["end"],
    }
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "warm_stages.json"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the sbox to measure")
    parser.add_argument("--git", action="store_true", help="the project a git repository (`git init`), as most are")
    args = parser.parse_args(argv)
    paths = stages_child.sbox_paths(args.python)
    with tempfile.TemporaryDirectory(prefix="sbox-bench-stages-") as tmp:
        variants, env, skipped = bench_backends.setup(Path(tmp), ["bwrap"])
        if skipped:
            raise SystemExit(f"bwrap is not usable here: {skipped}")
        cmd, cwd, _ = variants["sbox bwrap"]
        if args.git:
            subprocess.run(["git", "init", "-q", str(cwd)], check=True)
        stages_child.prime(args.python, paths, cmd[1:], cwd, env, 2)  # the record, then the directory index settles
        load_before = bench_backends.loadavg()
        runs = [r for r in (one(args.python, paths, cmd[1:], cwd, env) for _ in range(args.runs)) if r]
        load_after = bench_backends.loadavg()
    if not runs:
        raise SystemExit("no run was warm")
    medians = {name: round(statistics.median(r[name] for r in runs), 2) for name in runs[0]}
    for name, value in medians.items():
        print(f"{name:40} {value:7.2f} ms")
    print(f"{len(runs)} warm runs; load average before {load_before}, after {load_after}")
    results_file.write({"benchmark": "warm_stages", "command": "sbox run --backend bwrap -- true", "unit": "ms",
                        "project": "a git repository" if args.git else "no .git",
                        "runs": len(runs), "median_ms": medians,
                        "loadavg": {"before": load_before, "after": load_after}}, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
