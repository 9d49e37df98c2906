"""The one seam for child processes: every subprocess sbox starts goes through here."""
from __future__ import annotations

import os

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping, Sequence
    import subprocess  # imported where used: a plain `sbox run` on bwrap never needs it


def capture(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a short helper command and capture its output."""
    import subprocess

    return subprocess.run(list(argv), env=dict(env) if env is not None else None, capture_output=True,
                          text=True, timeout=timeout, check=False)


def exit_code(returncode: int) -> int:
    """A shell's exit code for a child's returncode (negative means killed by a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def run_foreground(argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None,
                   timeout: float | None = None, pass_fds: Sequence[int] = ()) -> int:
    """Run argv with our stdio, relaying SIGINT/SIGTERM/SIGHUP/SIGQUIT; return a shell exit code."""
    import signal
    import subprocess

    proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, pass_fds=tuple(pass_fds))
    previous = {}

    def relay(signum: int, _frame: object) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        previous[sig] = signal.signal(sig, relay)
    try:
        try:
            return exit_code(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return 124
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exec_host(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> None:
    """Replace this process with argv: for `mode: host`, explicitly unsandboxed."""
    os.chdir(cwd)
    os.execvpe(argv[0], list(argv), dict(env))
