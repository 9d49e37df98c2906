"""One compat case in one way: lay the project out, run the command (directly or through sbox),
say whether it worked and what sbox said about it, and take the project's manifest.

The project is always at the same path (`<work>/area/project`), so that anything an install
writes with an absolute path in it (a venv's scripts, node-gyp's build files) compares alike.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import compat_tree

NPM_PACKAGE = {"name": "compat-app", "version": "1.0.0", "private": True}
# lines of the command's output that name a cause, best first
CAUSES = (re.compile(r"\b[A-Z]\w*Error: "), re.compile(r"ERROR: "),
          re.compile(r"(?i)failed, reason|read-only file system|no such file|not found|denied|refused|could not"))
# a line that speaks of an error, and lines that never name the cause
ERROR = re.compile(r"(?i)error|not found|no such file|ENOENT|EROFS|EACCES|denied|refused|"
                   r"no matching distribution|from versions")
NOISE = re.compile(r"(?i)^(note:|npm error (a complete log|command|path|code|node\.js|\s*$|\s+at ))|"
                   r"originates from a subprocess|subprocess-exited-with-error|^npm error\s*$")
# the line that says where a step runs: sbox's announcement, not an explanation
ANNOUNCE = re.compile(r"^sbox: (step \d+(/\d+)? \[[\w-]+\] )?.* -> (sandbox|host)")
# progress, not a cause: a step that stopped the run, or one that had nothing to do
PROGRESS = re.compile(r"exited \d+; stopping$|^sbox: step \d+(/\d+)? \[[\w-]+\] skipped: ")


@dataclass
class Outcome:
    ok: bool
    status: str                 # ok | failed (rc N) | timeout | check missing: PATH | ...
    seconds: float
    explanation: str = ""       # sbox's own line about it, or the tail of stderr
    sbox_lines: list[str] = field(default_factory=list)
    stderr_tail: str = ""
    manifest: compat_tree.Manifest = field(default_factory=dict)


def _write_files(area: Path, project: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = (project / rel).resolve()
        if not path.is_relative_to(area):
            raise SystemExit(f"compat_cases.toml: file {rel!r} lies outside the case's area")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _quiet_run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")


def prepare(case: dict[str, Any], area: Path, env: dict[str, str], python: str) -> Path:
    """A fresh project for this case at `area/project`; returns it."""
    if area.exists():
        shutil.rmtree(area)
    project = area / "project"
    project.mkdir(parents=True)
    (project / "sbox.yaml").write_text("version: 1\n")  # in every way, so the trees compare
    if case["ecosystem"] == "npm":
        (project / "package.json").write_text(json.dumps(NPM_PACKAGE, indent=2) + "\n")
    _write_files(area, project, case.get("files", {}))
    if case["ecosystem"] == "pip":
        _quiet_run([python, "-m", "venv", str(project / ".venv")], project, env, "setup:")
    for argv in case.get("setup", []):
        _quiet_run(argv, project, env, "setup:")
    return project


def case_env(case: dict[str, Any], base: dict[str, str], project: Path) -> dict[str, str]:
    env = dict(base, **case.get("env", {}))
    if case["ecosystem"] == "pip":
        venv = project / ".venv"
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """rc (None on timeout), stdout, stderr; a timed-out command's whole process group is ended."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # sbox removes its containers on SIGTERM
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return None, out, err


def _cause(lines: list[str]) -> list[str]:
    """The command's own line naming the cause: the first exception or `ERROR:` line, else the
    first system error, else the last line that speaks of an error, else the last line."""
    for pattern in CAUSES:
        found = [ln for ln in lines if pattern.search(ln)]
        if found:
            return found[:1]
    errors = [ln for ln in lines if ERROR.search(ln) and not NOISE.search(ln)]
    return (errors or lines)[-1:]


def explain(stderr: str, failed: bool) -> tuple[str, list[str]]:
    """sbox's own lines (announcements aside) and the one that explains the most (its hint, else
    its exit line); for a failure, with the command's own line that names the cause."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.startswith("sbox:")]
    said = [ln for ln in lines if not ANNOUNCE.match(ln)]
    other = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("sbox:")]
    cause = _cause(other) if failed else []
    last = f" (output: {cause[0][:160]})" if cause else ""
    hints = [ln for ln in said if not PROGRESS.search(ln)]
    if hints:
        return hints[0] + last, said
    if said:
        return said[-1] + last, said
    return (f"(sbox said nothing){last}" if failed else ""), said


def run_case(case: dict[str, Any], way: str, area: Path, base_env: dict[str, str], sbox: str,
             python: str, timeout: float) -> Outcome:
    try:
        project = prepare(case, area, base_env, python)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return Outcome(False, "setup failed", 0.0, explanation=str(exc)[:300])
    env = case_env(case, base_env, project)
    if way != "direct":
        _quiet_run([sbox, "trust"], project, env, "sbox trust:")
    steps = case.get("steps") or [case["command"]]
    start = time.perf_counter()
    out_all, err_all, status = "", "", "ok"
    for argv in steps:
        full = argv if way == "direct" else [sbox, "run", "--backend", way, "--", *argv]
        left = timeout - (time.perf_counter() - start)
        rc, out, err = _run(full, project, env, max(left, 1.0))
        out_all, err_all = out_all + out, err_all + err
        if rc is None:
            status = f"timeout ({timeout:.0f} s)"
            break
        if rc != 0:
            status = f"failed (rc {rc})"
            break
    seconds = time.perf_counter() - start
    if status == "ok" and case.get("check") and not (project / case["check"]).exists():
        status = f"missing {case['check']}"
    if status == "ok" and case.get("stdout") and case["stdout"] not in out_all:
        status = f"output lacks {case['stdout']!r}"
    explanation, said = explain(err_all, status != "ok")
    return Outcome(status == "ok", status, round(seconds, 2), explanation, said,
                   err_all[-2000:], compat_tree.manifest(project, case.get("compare")))
