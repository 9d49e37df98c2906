"""Directories of sbox's own that live for one run only (Mount kind `run`): pip's wheelhouse.

A plan names such a directory by a parent in sbox's cache (`Mount(parent, parent, kind="run")`,
and the same path in the steps' argv and environment). For each run the runner makes it anew,
empty, at `parent/<the run directory's name>`, puts that path wherever the plan says `parent`, and
removes it when the run ends, however it ends; one an sbox that was killed left behind is swept
by the next run (its name holds the dead pid, as run directories do). So nothing a step wrote
there in one run (a wheel a hostile sdist planted in pip's download phase) is found by another,
and two runs of one project never share one. The cache, not the run directory under /tmp: a
wheelhouse can hold gigabytes, and /tmp is often in memory.
"""
from __future__ import annotations

import os

from sbox_shim.plan import Plan


def instantiate(plan: Plan, run_dir: str) -> tuple[Plan, list[str]]:
    """The plan with each `run` directory made for this run (kind `cache` from now on), and the
    directories made, to `remove` after the run."""
    parents = list(dict.fromkeys(m.source for s in plan.steps for m in s.mounts if m.kind == "run"))
    if not parents:
        return plan, []
    from sbox_shim import runner

    made: dict[str, str] = {}
    try:
        for parent in parents:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            runner.sweep_stale_run_dirs(parent)
            path = os.path.join(parent, os.path.basename(run_dir))
            os.mkdir(path, 0o700)
            made[parent] = path
    except BaseException:
        remove(list(made.values()))
        raise

    def swap(text: str) -> str:
        for parent, path in made.items():
            if text == parent or text.startswith(parent + "/"):
                return path + text[len(parent):]
        return text

    from sbox_shim.replay import decode, encode

    relocated = decode(encode(plan), swap)
    steps = tuple(step.replace(mounts=tuple(m.replace(kind="cache") if m.kind == "run" else m for m in step.mounts))
                  for step in relocated.steps)
    return relocated.replace(steps=steps), list(made.values())


def remove(paths: list[str]) -> None:
    """Remove each directory and what a sandbox left in it, even directories it made unreadable."""
    from sbox_shim import runner

    for path in paths:
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        _writable(path)
        for root, dirs, _ in os.walk(path):  # top down: each directory opened before it is listed
            for name in dirs:
                _writable(os.path.join(root, name))
        runner.remove_run_dir(path)


def _writable(path: str) -> None:
    try:
        if not os.path.islink(path):
            os.chmod(path, 0o700)
    except OSError:
        pass

