"""The persistence guard around a step: snapshot, run, compare, quarantine, report.

Used by the runner (cold path) and by the plan cache's warm path (compiled.py), where nothing
heavy is imported unless the step actually left something: the snapshot and comparison load only
`posix`, `stat` and the guard's own small records (not even `os`); the mover, JSON and the plan's
dataclasses come only with a change.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence, TextIO


class _Mount:
    """What the guard reads of a mount, for the warm path (plan.Mount costs its dataclasses)."""

    __slots__ = ("source", "target", "readonly", "kind")

    def __init__(self, source: str, target: str, readonly: bool, kind: str) -> None:
        self.source, self.target, self.readonly, self.kind = source, target, readonly, kind


class _Step:
    """What the guard and its record read of a step, for the warm path."""

    __slots__ = ("label", "command", "profile", "cwd", "mode", "mounts")

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.label, self.profile, self.cwd = str(info["label"]), str(info["profile"]), str(info["cwd"])
        self.command = tuple(str(w) for w in info["command"])
        self.mode = "sandbox"
        self.mounts = tuple(_Mount(str(a), str(b), bool(c), str(d)) for a, b, c, d in info["mounts"])


def guarded(step: Any, root: str, state_dir: str, err: TextIO, run: Callable[[], int]) -> int:
    """Run a step; if it is sandboxed and can write the project, quarantine the host-executed
    files it created or changed."""
    if step.mode != "sandbox":
        return run()
    from sbox_shim import guard
    from sbox_shim.guard import running

    for orphan in running.orphans(state_dir, root):  # steps whose sbox died before their own check
        _recover(orphan, state_dir, err)
    if not guard.writable_parts(step.mounts, root):
        return run()
    # the baseline of the writable steps already running on this tree, if any: what a step that
    # overlaps this one planted is not taken for the host's own
    snapshot, registered = running.join(guard.before(root, step.mounts, state_dir), state_dir, step.mounts,
                                        step.command)
    interrupted: BaseException | None = None
    try:
        code = run()
    except BaseException as exc:  # ^C while the command ran: checked all the same, then it goes on
        interrupted, code = exc, 1
    held = _hold()  # signals from now on wait for the check
    try:
        try:
            _inspect(step, snapshot, code, state_dir, err)
            running.leave(registered)  # only a check that ran to its end lets the baseline go
        except Exception as exc:  # OSError, MemoryError, ...: the baseline stays, the next step checks again
            why = exc if isinstance(exc, OSError) else repr(exc)
            _forget(snapshot, step.mounts, state_dir)
            err.write(f"sbox: the persistence guard could not check or quarantine {root}: {why}; "
                      f"review its host-executed files (.husky, .envrc, Makefile, .vscode, ...) before using them; "
                      f"the next sbox step here checks them again\n")
            code = code or 125
    finally:
        _release(held)
    if interrupted is not None:
        raise interrupted
    return code


def _forget(snapshot: Any, mounts: Any, state_dir: str) -> None:
    """No kept index of a step's writable parts: the next walk lists them whole and judges what
    is there against the baseline (after a check that failed, whose walk had kept one; before the
    check of a step whose sbox died, since walks for later steps may have kept one)."""
    from sbox_shim import guard
    from sbox_shim.guard import index

    for part in guard.writable_parts(mounts, snapshot.root):
        try:
            index.forget(part, state_dir)
        except OSError:
            pass


def guarded_warm(info: Mapping[str, Any], run: Callable[[], int | None]) -> int | None:
    """The guard around a plan-cache run; `info` is what recorder.store kept. None: the sandbox
    could not be set up (nothing ran), as `run` says."""
    result: list[int | None] = []

    def once() -> int:
        result.append(run())
        return result[0] or 0

    code = guarded(_Step(info), str(info["root"]), str(info["state"]), sys.stderr, once)
    return None if result == [None] else code


def _hold() -> tuple[dict[int, Any], list[int]]:
    """^C, SIGTERM, SIGHUP and SIGQUIT noted, not acted on, until `_release`: a signal the user
    (or a CI job's timeout) sends as the step ends must not cut the check short. One that cuts in
    before this is done leaves the step's baseline kept (guard/running.py), for the next step."""
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal  # built in; `signal` imports enum

    got: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT):
            previous[signum] = _signal.signal(signum, lambda n, _frame: got.append(n))
    except ValueError:  # not the main thread: signals go to the main thread's handlers anyway
        pass
    return previous, got


def _release(held: tuple[dict[int, Any], list[int]]) -> None:
    """The handlers back, then each signal noted meanwhile sent again, to be acted on as usual."""
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal

    import posix

    previous, got = held
    for signum, handler in previous.items():
        _signal.signal(signum, handler if handler is not None else _signal.SIG_DFL)
    for signum in dict.fromkeys(got):
        posix.kill(posix.getpid(), signum)


def _inspect(step: Any, snapshot: Any, code: int, state_dir: str, err: TextIO) -> None:
    from sbox_shim import guard

    tests: list[str] = []
    changes = guard.after(snapshot, step.mounts, state_dir, tests)
    lines = guard.script_changes(snapshot)
    if tests:
        shown = ", ".join(tests[:4]) + (f" and {len(tests) - 4} more" if len(tests) > 4 else "")
        lines.append(f"sbox: this step made test modules git does not track, which pytest runs wherever it collects: "
                     f"{shown}; review them before you run pytest (git status --ignored shows what a step added)")
    moved = None
    if changes:
        from sbox_shim.guard import quarantine
        from sbox_shim.runner import write_record

        moved = quarantine.quarantine(changes, snapshot, state_dir, step.command)
        if moved:
            ident, records = moved
            lines = quarantine.report_lines(ident, records) + lines
            write_record(state_dir, step, "quarantine", {"quarantine": ident, "entries": records})
    if step.label != "download":  # pip's and uv's installs into a venv run as the download phase
        venv = guard.venv_writes(snapshot, step.mounts)
        if venv:
            shown = ", ".join(venv[:4]) + (f" and {len(venv) - 4} more" if len(venv) > 4 else "")
            lines.append(f"sbox: this step wrote a venv's startup code, which runs whenever you use that venv: {shown}; "
                         f"sbox leaves it (an install writes it too): if this step installed nothing there, review "
                         f"it or make the venv again")
    shadows = guard.bin_shadows(snapshot)
    if shadows:
        lines.append(f"sbox: node_modules/.bin now holds {', '.join(shadows)}, named as your system's commands: a shell "
                     f"with node_modules/.bin on PATH (direnv's layout node) runs these instead; see what each is "
                     f"(ls -l node_modules/.bin/{shadows[0]}) before you use one there")
    hooks = moved is not None and _touches_hooks(moved[1], guard.hooks_path(snapshot.root))
    # .git is read-only in every sandbox: a hook installer never succeeds there, even when it exits 0
    # (husky 9 does, having failed to set core.hooksPath)
    if hooks or guard.installs_hooks(step.command, snapshot):
        lines.append("sbox: the git hooks were not installed (the sandbox cannot write .git or the hooks); "
                     "run npx husky (or the project's hook installer) outside sbox after reviewing it")
    for line in lines:
        err.write(line + "\n")


def _recover(orphan: Any, state_dir: str, err: TextIO) -> None:
    """The check a dead step's guard never made: what the tree holds now against its baseline."""
    from sbox_shim import guard
    from sbox_shim.guard import running
    from sbox_shim.text import printable

    mounts = [_Mount(*m) for m in orphan.mounts]
    _forget(orphan.snapshot, mounts, state_dir)  # the index kept since its start may have taken in what it left
    try:
        changes = guard.after(orphan.snapshot, mounts, state_dir)  # type: ignore[arg-type]  # what it reads of a Mount
        if changes:
            from sbox_shim.guard import quarantine

            moved = quarantine.quarantine(changes, orphan.snapshot, state_dir, orphan.command)
            if moved:
                err.write(printable(f"sbox: an earlier step in {orphan.snapshot.root} ({' '.join(orphan.command)}, "
                                    f"sbox pid {orphan.pid}) ended before its persistence check; checked now:") + "\n")
                for line in quarantine.report_lines(*moved):
                    err.write(line + "\n")
    except OSError as exc:
        err.write(printable(f"sbox: the persistence guard could not check what an earlier step left in "
                            f"{orphan.snapshot.root}: {exc}; review its host-executed files before using them; "
                            f"the next sbox step here checks them again") + "\n")
        _forget(orphan.snapshot, mounts, state_dir)
        running.unclaim(orphan)
        return
    running.done(orphan)


def _touches_hooks(records: Sequence[Mapping[str, Any]], hooks: str | None) -> bool:
    from sbox_shim.guard import quarantine

    return quarantine.touches_hooks(records, hooks)
