"""Plans the warm path cannot run alone (an ecosystem's phases, an allowlist, limits), replayed.

compiled.py runs a one-step plan from finished bwrap options. A built-in two-phase install, or a
step behind the egress proxy, needs the runner: its step loop, the proxy, the guard, the report.
So for those recorder.py keeps the Plan itself (as plain data: `encode`), with the facts and the
digest of every file planning looked at (probe.py), and the warm path, once every fact holds,
hands the decoded plan to `runner.execute` with the bwrap backend: the very code the cold path
runs after planning. What is skipped is only the planning (YAML, dispatch, the ecosystem's
reading of its config, name resolution, the layout) and the imports it needs.

The plan's paths under the cold run's run directory are moved to this run's; its environment
values are references to the caller's variables (the key holds every variable's value, so they
are the same ones), so no token reaches the disk.
"""
from __future__ import annotations

from sbox_shim.plan import File, Limits, Mount, Network, Plan, Step, Value

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

TYPES = {t.__name__: t for t in (Plan, Step, Mount, File, Network, Limits)}
REF = "\0"  # compiled.REF


def encode(value: Any) -> Any:
    """A Plan as marshal-able data: a plan.Value is ["@", its name, {field: value}], a tuple ["(", items]."""
    if isinstance(value, Value):
        return ["@", type(value).__name__, {name: encode(v) for name, v in value.fields().items()}]
    if isinstance(value, tuple):
        return ["(", [encode(v) for v in value]]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"a plan holds a {type(value).__name__}")


def decode(data: Any, swap: Any = None) -> Any:
    """What `encode` made, each string passed through `swap`; raises on anything else (a record of
    another shape)."""
    if isinstance(data, list) and len(data) == 3 and data[0] == "@":
        cls = TYPES[data[1]]
        return cls(**{k: decode(v, swap) for k, v in data[2].items()})
    if isinstance(data, list) and len(data) == 2 and data[0] == "(":
        return tuple(decode(v, swap) for v in data[1])
    if isinstance(data, str):
        return swap(data) if swap else data
    if data is None or isinstance(data, (int, float, bool)):
        return data
    raise ValueError("not an encoded plan")


def referenced(plan: Plan, env: Mapping[str, str]) -> Plan:
    """The plan with each environment value that is the caller's own replaced by a reference."""
    steps = tuple(step.replace(env=tuple(
        (name, REF + "env" + REF + name if env.get(name) == value else value) for name, value in step.env))
        for step in plan.steps)
    return plan.replace(steps=steps)


def restore(data: Any, recorded_run_dir: str, run_dir: str, env: Mapping[str, str]) -> Plan | None:
    """The recorded plan for this run: its run directory, the caller's values; None if a
    referenced variable is gone."""
    missing: list[str] = []

    def swap(text: str) -> str:
        if text.startswith(REF):
            name = text.split(REF)[2]
            if name not in env:
                missing.append(name)
            return env.get(name, "")
        if text == recorded_run_dir or text.startswith(recorded_run_dir + "/"):
            return run_dir + text[len(recorded_run_dir):]
        return text

    plan = decode(data, swap)
    if not isinstance(plan, Plan):
        raise ValueError("not an encoded plan")
    return None if missing else plan


def prepare(record: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Plan, str] | None:
    """The recorded plan for this run and its new run directory; None (nothing made) if a
    referenced variable is gone. Raises on a record of another shape."""
    from sbox_shim import runner

    run_dir = runner.make_run_dir(env)
    try:
        plan = restore(record["plan"], str(record["run_dir"]), run_dir, env)
    except BaseException:
        runner.remove_run_dir(run_dir)
        raise
    if plan is None:
        runner.remove_run_dir(run_dir)
        return None
    return plan, run_dir


def run(plan: Plan, run_dir: str, env: Mapping[str, str], state_dir: str, backend: str = "bwrap",
        holds: Callable[[], bool] | None = None) -> int | None:
    """What the cold path does once it has planned: the runner, on the recorded backend, once
    `holds` (the record's facts), which is asked while bwrap sets the first step's sandbox up,
    held before its command (runner.prestart). None when they do not hold: the sandbox killed
    unrun, the run directory gone, nothing run."""
    from sbox_shim import runner
    from sbox_shim.backends.select import module
    from sbox_shim.errors import SboxError

    try:
        chosen = module(backend)
        started = runner.prestart(plan, chosen, run_dir, state_dir) if holds is not None else None
        fresh = False
        try:
            fresh = holds is None or holds()
        finally:
            if not fresh:
                if started is not None:
                    started.abandon()
                runner.remove_run_dir(run_dir)
        if not fresh:
            return None
        return runner.execute(plan, chosen, run_dir, env, state_dir, started=started)
    except (SboxError, OSError) as exc:  # as the cold path reports them (cli.main)
        from sbox_shim.errors import reported

        return reported(exc)
    except KeyboardInterrupt:
        return 130
