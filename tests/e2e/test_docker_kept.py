"""The kept docker helper (dockerkept.py): the next run reaches it in place of starting its own;
it serves no sandbox, uses no socket a sandbox made, holds no credential of the run that started
it, keeps each run's lifeline, and ends when idle or told to."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.trust import trust

CANARY = "kept-helper-canary-5f1e"

# A client of the helper's protocol (dockerhelper.frame): a ping, then a request to create a
# container binding the host's / (what a sandbox that reached the helper would ask for).
CLIENT = r"""
import marshal, os, socket, struct, sys
directory, name = sys.argv[1], sys.argv[2]
fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(f"/proc/self/fd/{fd}/{name}")
    for message in ((-1, "ping", ()), (-2, "create", ({"image": "x", "command": ["true"],
                                                         "mounts": [{"Source": "/", "Target": "/host"}]},))):
        data = marshal.dumps(message)
        sock.sendall(struct.pack(">I", len(data)) + data)
    reply = sock.recv(4096)
    print("answered" if reply else "refused")
except OSError as exc:
    print("refused", type(exc).__name__)
"""

# A server at the helper's name that records what reaches it and answers nothing.
ROGUE = r"""
import os, socket, sys
directory, name, log = sys.argv[1], sys.argv[2], sys.argv[3]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(os.path.join(directory, name))
server.listen(4)
print("listening", flush=True)
server.settimeout(60)
got = b""
try:
    while True:
        conn, _ = server.accept()
        conn.settimeout(3)
        try:
            while chunk := conn.recv(4096):
                got += chunk
        except OSError:
            pass
        with open(log, "ab") as f:
            f.write(b"connection:" + str(len(got)).encode() + b"\n")
except OSError:
    pass
"""


@pytest.fixture
def project(tmp_path: Path, docker_backend: str) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "sbox.yaml").write_text("version: 1\nbackend: docker\n")
    trust(root / "sbox.yaml")
    return root


@pytest.fixture
def kept_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ, SBOX_DOCKER_HELPER_IDLE="120")
    yield env
    for pid in _helpers(env):  # what the test left
        os.kill(pid, signal.SIGTERM)


def _run(sbox_bin: str, cwd: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sbox_bin, "run", "--", *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _directory(env: dict[str, str]) -> Path:
    return Path(env["SBOX_STATE_DIR"]) / "docker"


def _sockets(env: dict[str, str]) -> list[str]:
    directory = _directory(env)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _peer(env: dict[str, str], name: str) -> int:
    """The pid of the process listening at the kept helper's socket."""
    fd = os.open(_directory(env), os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(f"/proc/self/fd/{fd}/{name}")
            return int(struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])
    finally:
        os.close(fd)


def _helpers(env: dict[str, str]) -> list[int]:
    pids = []
    for name in _sockets(env):
        try:
            pids.append(_peer(env, name))
        except OSError:
            pass
    return pids


def _gone(pid: int, within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or " Z " in _stat(pid):
            return True
        time.sleep(0.1)
    return False


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    except OSError:
        return " Z "


def test_the_next_run_is_served_by_the_kept_helper(project: Path, sbox_bin: str, kept_env: dict[str, str]) -> None:
    first = _run(sbox_bin, project, kept_env, "sh", "-c", "echo one")
    assert (first.returncode, first.stdout) == (0, "one\n"), first.stderr
    names = _sockets(kept_env)
    assert len(names) == 1, names
    helper = _peer(kept_env, names[0])

    second = _run(sbox_bin, project, kept_env, "sh", "-c", "echo two; exit 3")
    assert (second.returncode, second.stdout) == (3, "two\n"), second.stderr
    # A run that started a helper of its own would have put its socket in place of this one.
    assert _sockets(kept_env) == names and _peer(kept_env, names[0]) == helper

    # Control: told to go, the helper ends and takes its socket away; the next run starts another.
    os.kill(helper, signal.SIGTERM)
    assert _gone(helper)
    assert _sockets(kept_env) == []
    third = _run(sbox_bin, project, kept_env, "sh", "-c", "echo three")
    assert (third.returncode, third.stdout) == (0, "three\n"), third.stderr
    assert _sockets(kept_env) == names and _peer(kept_env, names[0]) != helper


def test_runs_whose_path_differs_only_in_a_venv_share_one_helper(tmp_path: Path, project: Path, sbox_bin: str,
                                                                 kept_env: dict[str, str]) -> None:
    """Each project with its venv activated used to start a helper of its own (PATH was digested
    whole), paying the SDK's import. A helper is given only PATH's entries no sandbox could fill,
    and only those tell helpers apart: two venvs' `bin` on PATH share one helper, which holds
    neither. The control: a directory no sandbox writes, first on PATH, gets a helper of its own."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sbox.yaml").write_text("version: 1\nbackend: docker\n")
    trust(other / "sbox.yaml")
    seen = []
    for root, venv in ((project, tmp_path / "venv-a"), (other, tmp_path / "venv-b")):
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        env = dict(kept_env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{kept_env['PATH']}")
        run = _run(sbox_bin, root, env, "true")
        assert run.returncode == 0, run.stderr
        seen.append(_sockets(kept_env))
    assert len(seen[0]) == 1 and seen[1] == seen[0]
    helper = _peer(kept_env, seen[0][0])
    environ = Path(f"/proc/{helper}/environ").read_bytes()
    assert b"venv-a" not in environ and b"venv-b" not in environ
    tools = tmp_path / "tools"
    tools.mkdir()
    run = _run(sbox_bin, project, dict(kept_env, PATH=f"{tools}:{kept_env['PATH']}"), "true")
    assert run.returncode == 0, run.stderr
    assert len(_sockets(kept_env)) == 2


def test_the_kept_helper_ends_when_idle(project: Path, sbox_bin: str, kept_env: dict[str, str]) -> None:
    kept_env["SBOX_DOCKER_HELPER_IDLE"] = "1"
    run = _run(sbox_bin, project, kept_env, "true")
    assert run.returncode == 0, run.stderr
    names = _sockets(kept_env)
    helper = _peer(kept_env, names[0]) if names else 0  # it may have gone already
    assert not helper or _gone(helper)
    assert _sockets(kept_env) == []


def test_a_sandbox_that_sees_the_socket_is_refused(project: Path, sbox_bin: str, kept_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """The state directory is read-only in the sandboxes that see it, and a socket on a read-only
    mount still accepts connections: the helper itself must refuse a process in a sandbox."""
    run = _run(sbox_bin, project, kept_env, "true")
    assert run.returncode == 0, run.stderr
    name = _sockets(kept_env)[0]
    directory = str(_directory(kept_env))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)

    host = subprocess.run([sys.executable, str(script), directory, name], capture_output=True, text=True, timeout=30)
    assert host.stdout.startswith("answered"), host.stdout + host.stderr  # control: this client works

    # The same client in a bwrap sandbox (a mount namespace of its own, the same uid), the
    # directory bound read-only as sbox binds its state.
    sandboxed = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
         "--ro-bind", directory, directory, "--ro-bind", str(script), str(script), "--unshare-pid",
         "--die-with-parent", sys.executable, str(script), directory, name],
        capture_output=True, text=True, timeout=30)
    assert sandboxed.stdout.startswith("refused"), sandboxed.stdout + sandboxed.stderr
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "ancestor=x"], capture_output=True, text=True).stdout
    assert left.strip() == ""


@pytest.mark.parametrize("where", ["host", "sandbox"])
def test_a_socket_a_sandbox_made_is_not_used(project: Path, sbox_bin: str, kept_env: dict[str, str],
                                             tmp_path: Path, where: str) -> None:
    """A server a sandbox put at the helper's name (had it been able to write there) gets nothing
    from sbox: not even the first message. The host control shows that the name is the one runs
    reach: a server of this user's outside every sandbox does get it."""
    run = _run(sbox_bin, project, kept_env, "true")
    assert run.returncode == 0, run.stderr
    name = _sockets(kept_env)[0]
    helper = _peer(kept_env, name)
    os.kill(helper, signal.SIGTERM)
    assert _gone(helper) and _sockets(kept_env) == []

    directory, log = str(_directory(kept_env)), tmp_path / "rogue.log"
    script = tmp_path / "rogue.py"
    script.write_text(ROGUE)
    argv = [sys.executable, str(script), directory, name, str(log)]
    if where == "sandbox":
        argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", directory, directory,
                "--bind", str(tmp_path), str(tmp_path), "--unshare-pid", "--die-with-parent", *argv]
    rogue = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert rogue.stdout is not None and rogue.stdout.readline().strip() == "listening"
        second = _run(sbox_bin, project, kept_env, "sh", "-c", "echo served")
        assert (second.returncode, second.stdout) == (0, "served\n"), second.stderr
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = log.read_text() if log.exists() else ""
    finally:
        rogue.kill()
        rogue.wait()
    if where == "host":
        assert seen.startswith("connection:") and seen != "connection:0\n", seen
    else:
        assert seen in ("", "connection:0\n"), seen


def test_the_kept_helper_holds_no_credential(project: Path, sbox_bin: str, kept_env: dict[str, str]) -> None:
    kept_env["NPM_TOKEN"] = CANARY
    run = _run(sbox_bin, project, kept_env, "true")
    assert run.returncode == 0, run.stderr
    helper = _peer(kept_env, _sockets(kept_env)[0])
    for part in ("environ", "cmdline"):
        assert CANARY.encode() not in Path(f"/proc/{helper}/{part}").read_bytes()
    # Control: the way it is read finds a variable a process was given.
    control = subprocess.Popen(["sh", "-c", "echo ready; read line"], env=kept_env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    try:  # once it has said ready, the shell has exec'd and waits, its environment in place
        assert control.stdout is not None and control.stdout.readline() == b"ready\n"
        assert CANARY.encode() in Path(f"/proc/{control.pid}/environ").read_bytes()
    finally:
        control.kill()
        control.wait()


def _serving(env: dict[str, str]) -> list[int]:
    """Every helper process kept for this state directory (its argv names the directory)."""
    directory = str(_directory(env))
    pids = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"dockerserve" in a for a in argv) and directory.encode() in argv and " Z " not in _stat(int(entry)):
            pids.append(int(entry))
    return pids


def test_helpers_started_at_the_same_moment_leave_one(project: Path, sbox_bin: str, kept_env: dict[str, str]) -> None:
    """Runs that start together, with no helper kept yet, each start one; each renames its socket
    into place, and all but the last are then unreachable: they waited for their whole idle time
    (a red team's runs in a loop left 17). Now one that has lost its name ends with its last run."""
    seen: set[int] = set()
    for _ in range(5):  # until two helpers were started at once (the case this is about)
        runs = [subprocess.Popen([sbox_bin, "run", "--", "sleep", "1"], cwd=project, env=kept_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        while any(run.poll() is None for run in runs):
            seen.update(_serving(kept_env))
            time.sleep(0.05)
        for run in runs:
            assert run.returncode == 0, run.communicate()[1]
        if len(seen) > 1:
            break
        for pid in _serving(kept_env):  # one was started: let it go, and start together again
            os.kill(pid, signal.SIGTERM)
            assert _gone(pid)
        seen.clear()
    assert len(seen) > 1, "the runs never started two helpers at once"
    names = _sockets(kept_env)
    assert len(names) == 1, names
    kept = _peer(kept_env, names[0])
    deadline = time.monotonic() + 30
    while _serving(kept_env) != [kept]:
        assert time.monotonic() < deadline, (_serving(kept_env), kept)
        time.sleep(0.2)
    # the one left serves the next run
    again = _run(sbox_bin, project, kept_env, "sh", "-c", "echo again")
    assert (again.returncode, again.stdout) == (0, "again\n"), again.stderr
    assert _serving(kept_env) == [kept]


def test_a_killed_run_s_container_goes_and_the_helper_stays(project: Path, sbox_bin: str,
                                                            kept_env: dict[str, str]) -> None:
    warm = _run(sbox_bin, project, kept_env, "true")
    assert warm.returncode == 0, warm.stderr
    helper = _peer(kept_env, _sockets(kept_env)[0])
    run = subprocess.Popen([sbox_bin, "run", "--", "sleep", "60"], cwd=project, env=kept_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mine = ["docker", "ps", "-aq", "--filter", "label=io.sbox.run", "--filter", f"name=sbox-{run.pid}-"]
    deadline = time.monotonic() + 60
    while not subprocess.run(mine, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline and run.poll() is None, "the run's container never appeared"
        time.sleep(0.2)
    run.kill()
    run.wait()
    deadline = time.monotonic() + 60
    while subprocess.run(mine, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the killed run's container was left"
        time.sleep(0.2)
    assert os.path.exists(f"/proc/{helper}") and _peer(kept_env, _sockets(kept_env)[0]) == helper


def test_a_repeated_docker_run_is_replayed_and_a_changed_config_is_not(project: Path, sbox_bin: str,
                                                                       kept_env: dict[str, str]) -> None:
    config = project / "sbox.yaml"
    config.write_text("version: 1\nbackend: docker\nprofiles:\n  default:\n    env: [WHO=first]\n")
    trust(config)
    for _ in range(2):
        run = _run(sbox_bin, project, kept_env, "sh", "-c", "echo $WHO")
        assert (run.returncode, run.stdout) == (0, "first\n"), run.stderr
    plans = list((Path(kept_env["SBOX_STATE_DIR"]) / "plans").glob("*.plan"))
    assert plans, "the docker plan was not kept"

    config.write_text("version: 1\nbackend: docker\nprofiles:\n  default:\n    env: [WHO=second]\n")
    refused = _run(sbox_bin, project, kept_env, "sh", "-c", "echo $WHO")  # not trusted: nothing runs
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout
    trust(config)
    run = _run(sbox_bin, project, kept_env, "sh", "-c", "echo $WHO")
    assert (run.returncode, run.stdout) == (0, "second\n"), run.stderr


def test_a_replayed_docker_run_that_cannot_start_says_why_in_one_line(project: Path, sbox_bin: str,
                                                                      kept_env: dict[str, str]) -> None:
    """The image a replayed plan names is gone (no fact covers the daemon's images): the pull fails,
    and the replay reports it as the cold path would, one line and 125, not a traceback."""
    tag = "127.0.0.1:9/sbox-replay-test:1"  # a registry that is not there: a pull fails at once
    context = project.parent / "image"
    for path in ("/bin/sh", "/usr/bin/true", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        (context / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(path), context / path.lstrip("/"))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY bin /bin\nCOPY usr /usr\nCOPY lib /lib\nCOPY lib64 /lib64\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, "--label", "io.sbox.run=test", str(context)],
                   check=True, capture_output=True, timeout=300)
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: docker\nprofiles:\n  default:\n    image: {tag}\n")
    trust(project / "sbox.yaml")
    try:
        first = _run(sbox_bin, project, kept_env, "/usr/bin/true")
        assert first.returncode == 0, first.stderr
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)
    again = _run(sbox_bin, project, kept_env, "/usr/bin/true")
    assert again.returncode == 125, again.stderr
    assert again.stderr.startswith("sbox: image") and "Traceback" not in again.stderr, again.stderr
