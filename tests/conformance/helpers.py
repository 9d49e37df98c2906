"""Shared by the conformance tests: projects, the real `sbox` CLI, and what a run leaves behind."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Iterable, Mapping

from support.trust import trust

PY = "/usr/bin/python3"  # Debian's, visible inside through the read-only /usr
LABEL = "io.sbox.run"
STARTED: list[int] = []  # every sbox pid this session started, for the end-of-suite check


def project(tmp_path: Path, config: str = "version: 1\n", name: str = "project") -> Path:
    """A project directory with this sbox.yaml (indented text is dedented)."""
    root = tmp_path / name
    root.mkdir()
    (root / "sbox.yaml").write_text(textwrap.dedent(config).lstrip())
    trust(root / "sbox.yaml")
    return root


def profile(**keys: object) -> str:
    """An sbox.yaml whose `default` profile has these keys (lists and bools in YAML form)."""
    lines = ["version: 1", "profiles:", "  default:"]
    for key, value in keys.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n"


def marker() -> str:
    return "sbox-conformance-" + secrets.token_hex(6)


class Runs:
    """Starts the real `sbox` and remembers every pid, to check what each run left behind."""

    def __init__(self, sbox_bin: str, backend: str) -> None:
        self.sbox_bin = sbox_bin
        self.backend = backend
        self.pids: list[int] = []

    def argv(self, command: Iterable[str], *extra: str) -> list[str]:
        return [self.sbox_bin, "run", "--backend", self.backend, *extra, "--", *command]

    def run(self, cwd: Path, *command: str, env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = self.start(cwd, *command, env=env, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"sbox did not finish in {timeout}s:\n{out}\n{err}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start(self, cwd: Path, *command: str, env: Mapping[str, str] | None = None,
              stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.argv(command), cwd=cwd, env=dict(env if env is not None else os.environ),
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.track(proc.pid)
        return proc

    def track(self, pid: int) -> None:
        """Remember an sbox process started some other way (e.g. on a pseudo-terminal)."""
        self.pids.append(pid)
        STARTED.append(pid)

    def containers(self) -> list[str]:
        """Containers created by the runs this object started (docker names them sbox-PID-...)."""
        if self.backend != "docker" or not self.pids:
            return []
        return ours(docker_containers(), self.pids)


def ours(names: Iterable[str], pids: Iterable[int]) -> list[str]:
    """The docker backend names a container sbox-PID-TOKEN after the sbox process that made it."""
    prefixes = tuple(f"sbox-{pid}-" for pid in pids)
    return [n for n in names if prefixes and n.startswith(prefixes)]


def docker_client():  # type: ignore[no-untyped-def]
    import docker

    return docker.from_env(version="auto", timeout=60)


def docker_containers(label: str = LABEL) -> list[str]:
    client = docker_client()
    # sparse: no inspect per container, so one removed meanwhile (by another run) cannot fail the listing
    found = client.containers.list(all=True, filters={"label": label}, sparse=True)
    return [str(c.attrs["Names"][0]).lstrip("/") for c in found]


_LISTENER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    data = b""
    try:
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    print("HIT", data.hex(), flush=True)
    c.close()
"""


class ListenerContainer:
    """A canary listener in a container of the test's own, on Docker's default bridge.

    The sandbox could reach it over the bridge if its network let it: the target of the docker
    backend's network tests. It lives only for the test; traffic to it never leaves this machine.
    """

    port = 8080

    def __init__(self) -> None:
        from docker.types import Mount as DockerMount

        from sbox_shim.backends.docker import ensure_base_image
        from sbox_shim.layout import toolchain_mounts

        client = docker_client()
        tools = [m for m in toolchain_mounts() if m.target in ("/usr", "/bin", "/lib", "/lib64", "/sbin")]
        image = ensure_base_image(client, tuple((m.target, m.source) for m in tools if m.kind == "symlink"))
        mounts = [DockerMount(m.target, m.source, type="bind", read_only=True) for m in tools if m.kind == "bind"]
        self.container = client.containers.run(
            image, ["/usr/bin/python3", "-u", "-c", _LISTENER], detach=True, mounts=mounts,
            labels={"io.sbox.test": "listener"}, cap_drop=["ALL"], user="65534:65534",
        )
        deadline = time.monotonic() + 60
        while b"ready" not in self.container.logs():
            assert time.monotonic() < deadline, self.container.logs()
            time.sleep(0.1)
        self.container.reload()
        self.host = str(self.container.attrs["NetworkSettings"]["IPAddress"])

    def _hits(self) -> list[bytes]:
        lines = self.container.logs().decode().splitlines()
        return [bytes.fromhex(line.split(" ", 1)[1] if " " in line else "") for line in lines if line.startswith("HIT")]

    @property
    def hits(self) -> int:
        return len(self._hits())

    @property
    def received(self) -> bytes:
        return b"".join(self._hits())

    def wait_for(self, hits: int = 1, data: bytes = b"", timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not (self.hits >= hits and data in self.received):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:
            pass

    def __enter__(self) -> "ListenerContainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def processes_with(text: str) -> list[int]:
    """Host pids whose command line contains `text`."""
    needle = text.encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if needle in f.read():
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def wait_until_gone(text: str, limit: float = 15.0) -> list[int]:
    """Processes still carrying `text` once teardown has had `limit` seconds (bounded, not timed)."""
    deadline = time.monotonic() + limit
    while True:
        left = processes_with(text)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Wait for sbox to end; if it does not, kill it and fail with everything it printed."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"sbox still running after {timeout}s; stdout:\n{out}\nstderr:\n{err}") from None


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def run_in_terminal(argv: list[str], cwd: Path, env: Mapping[str, str], keys: bytes = b"",
                    after: bytes = b"") -> tuple[int, bytes, int]:
    """Run argv on a new pseudo-terminal, as at a shell prompt; type `keys` once `after` has been
    printed. Returns (exit code, everything printed, pid)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, dict(env))
        finally:
            os._exit(126)
    output, typed = b"", not keys
    while True:
        if not typed and after in output:
            os.write(fd, keys)
            typed = True
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output, pid


# Inside: try to write each path, print one verdict line per path.
WRITE = r"""
import os, sys
for path in sys.argv[1:]:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write("written from the sandbox\n")
        print("WROTE", path)
    except OSError as e:
        print("DENIED", path, e.strerror)
"""


def verdicts(stdout: str) -> dict[str, str]:
    """WRITE's output: path -> WROTE | DENIED."""
    return {line.split()[1]: line.split()[0] for line in stdout.splitlines() if line.startswith(("WROTE", "DENIED"))}
