"""The command's life: exit codes, signals, terminal, stdin, and nothing outliving it."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from .helpers import (PY, Runs, finish, kill_all, marker, processes_with, profile, project, read_line, run_in_terminal,
                      wait_until_gone)


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 1", 1), ("exit 7", 7), ("exit 255", 255)])
def test_the_commands_exit_code(runs: Runs, tmp_path: Path, script: str, code: int) -> None:
    result = runs.run(project(tmp_path), "sh", "-c", script)
    assert result.returncode == code, result.stderr


def test_missing_command_is_127(runs: Runs, tmp_path: Path) -> None:
    result = runs.run(project(tmp_path), "no-such-command-sbox-test", "--version")
    assert result.returncode == 127
    assert "no-such-command-sbox-test" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_killed_by_a_signal_is_128_plus_n(runs: Runs, tmp_path: Path, sig: signal.Signals) -> None:
    result = runs.run(project(tmp_path), "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert result.returncode == 128 + sig, result.stderr


def test_config_error_is_2_and_runs_nothing(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(network="sometimes"))
    result = runs.run(root, "touch", "ran")
    assert result.returncode == 2
    assert "sbox.yaml" in result.stderr and "network" in result.stderr
    assert not (root / "ran").exists()


def test_unknown_key_is_2_and_runs_nothing(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, "version: 1\nprofiles:\n  default:\n    netwrok: off\n")
    result = runs.run(root, "touch", "ran")
    assert result.returncode == 2
    assert not (root / "ran").exists()


def test_stdin_reaches_the_command(runs: Runs, tmp_path: Path) -> None:
    data = "".join(f"line {i}\n" for i in range(2000))
    result = runs.run(project(tmp_path), "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_stdout_and_stderr_stay_apart(runs: Runs, tmp_path: Path) -> None:
    result = runs.run(project(tmp_path), "sh", "-c", "echo to-out; echo to-err >&2")
    assert (result.stdout, result.stderr) == ("to-out\n", "to-err\n")


def test_without_a_terminal_there_is_none_inside(runs: Runs, tmp_path: Path) -> None:
    result = runs.run(project(tmp_path), "sh", "-c", "if [ -t 0 ] || [ -t 1 ]; then echo TTY; else echo NOTTY; fi")
    assert result.stdout.strip() == "NOTTY"


def test_under_a_terminal_the_command_has_one(runs: Runs, tmp_path: Path) -> None:
    argv = runs.argv(["sh", "-c", "if [ -t 0 ] && [ -t 1 ]; then echo TTY-YES; else echo TTY-NO; fi"])
    code, output, pid = run_in_terminal(argv, project(tmp_path), os.environ)
    runs.track(pid)
    assert code == 0, output
    assert b"TTY-YES" in output, output


def test_ctrl_c_at_a_terminal_reaches_the_command(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    argv = runs.argv(["sh", "-c", "trap 'echo caught-int; exit 130' INT; echo ready; sleep 300 & wait"])
    code, output, pid = run_in_terminal(argv, root, os.environ, keys=b"\x03", after=b"ready")
    runs.track(pid)
    assert code == 130, output
    assert b"caught-int" in output, output


TRAP = ("trap 'echo TERM > caught; exit 143' TERM; trap 'echo INT > caught; exit 130' INT; "
        "{py} -c 'import time; time.sleep(300)' {tag} & echo ready; wait; echo not-interrupted > caught")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_reaches_the_command(runs: Runs, tmp_path: Path, sig: signal.Signals, code: int) -> None:
    root = project(tmp_path)
    tag = marker()
    proc = runs.start(root, "sh", "-c", TRAP.format(py=PY, tag=tag))
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(sig)
        out, err = finish(proc)
        assert proc.returncode == code, err
        assert (root / "caught").read_text().strip() == sig.name[3:]
        assert wait_until_gone(tag) == []  # its background child went with it
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(processes_with(tag))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_an_untrapping_command(runs: Runs, tmp_path: Path, sig: signal.Signals, code: int) -> None:
    tag = marker()
    proc = runs.start(project(tmp_path), PY, "-c", "import time; print('ready', flush=True); time.sleep(300)", tag)
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(sig)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert wait_until_gone(tag) == []


DAEMON = (
    "setsid {py} -c \"import os, time; open('daemon-up', 'w').close(); time.sleep(300)\" {tag} "
    "</dev/null >/dev/null 2>&1 &\n"
    "while [ ! -e daemon-up ]; do sleep 0.05; done\n"
    "exit 0\n"
)


def test_daemonised_children_die_with_the_command(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    tag = marker()
    result = runs.run(root, "sh", "-c", DAEMON.format(py=PY, tag=tag))
    try:
        assert result.returncode == 0, result.stderr
        assert (root / "daemon-up").exists()  # it really ran, detached, in its own session
        assert wait_until_gone(tag) == []
    finally:
        kill_all(processes_with(tag))


def test_double_forked_children_die_with_the_command(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    tag = marker()
    script = ("import os, sys, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        open('daemon-up', 'w').close(); time.sleep(300)\n"
              "    os._exit(0)\n"
              "while not os.path.exists('daemon-up'): time.sleep(0.05)\n")
    result = runs.run(root, PY, "-c", script, tag)
    try:
        assert result.returncode == 0, result.stderr
        assert (root / "daemon-up").exists()
        assert wait_until_gone(tag) == []
    finally:
        kill_all(processes_with(tag))


def test_interrupted_run_leaves_nothing_behind(runs: Runs, tmp_path: Path) -> None:
    """^C during a run that has started a daemon: the run ends, the daemon with it."""
    root = project(tmp_path)
    tag = marker()
    script = "trap 'exit 130' INT\n" + DAEMON.format(py=PY, tag=tag).replace("exit 0\n", "sleep 300 & echo ready; wait\n")
    proc = runs.start(root, "sh", "-c", script)
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(signal.SIGINT)
        finish(proc)
        assert proc.returncode == 130
        assert wait_until_gone(tag) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(processes_with(tag))



def test_sbox_killed_outright_takes_its_sandbox_along(runs: Runs, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """SIGKILL gives sbox no chance to clean up: the sandbox must still go."""
    tag = marker()
    proc = runs.start(project(tmp_path), PY, "-c", "import time; print('ready', flush=True); time.sleep(300)", tag)
    try:
        assert read_line(proc) == "ready"
        proc.kill()
        proc.wait(timeout=60)
        left = wait_until_gone(tag, limit=5 if runs.backend == "docker" else 15)
        containers = [c for c in runs.containers() if _running(c)]  # a stopped one is reaped by the next run
    finally:
        kill_all(processes_with(tag))
        if runs.backend == "docker":
            from .helpers import docker_client

            import docker

            for name in runs.containers():
                try:
                    docker_client().containers.get(name).remove(force=True)
                except docker.errors.APIError as exc:  # sbox's watcher removed it, or is removing it
                    if exc.status_code not in (404, 409):
                        raise
    assert left == [] and containers == []


def _running(name: str) -> bool:
    from .helpers import docker_client

    try:
        return bool(docker_client().containers.get(name).status == "running")
    except Exception:
        return False


def test_a_sandbox_that_cannot_be_set_up_is_125_and_runs_nothing(runs: Runs, tmp_path: Path) -> None:
    """Fail closed: a mount the sandbox cannot make (here the throwaway HOME, at a path under /proc
    where no mount point can be made)."""
    root = project(tmp_path, profile(writable=True))
    result = runs.run(root, "touch", "ran", env=dict(os.environ, HOME="/proc/sbox-no-such-home"))
    assert result.returncode == 125, result.stderr
    assert "sbox:" in result.stderr
    assert not (root / "ran").exists()
