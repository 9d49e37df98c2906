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

PY = "/usr/bin/python3"  # Debian's, visible inside through the read-only /usr
LABEL = "io.sbox.run"
STARTED: list[int] = []  # every sbox pid this session started, for the end-of-suite check


def project(tmp_path: Path, config: str = "version: 1\n", name: str = "project") -> Path:
    """A project directory with this sbox.yaml (indented text is dedented)."""
    root = tmp_path / name
    root.mkdir()
    (root / "sbox.yaml").write_text(textwrap.dedent(config).lstrip())
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


def docker_gateway() -> str:
    """The docker bridge's gateway: an address of this machine that containers could reach."""
    attrs = docker_client().networks.get("bridge").attrs
    gateway = attrs["IPAM"]["Config"][0].get("Gateway")
    if gateway:
        return str(gateway)
    # Older engines leave it out of IPAM: the bridge interface carries the address.
    return _interface_address(attrs["Options"].get("com.docker.network.bridge.name", "docker0"))


def _interface_address(name: str) -> str:
    import fcntl
    import socket
    import struct

    SIOCGIFADDR = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])


def host_addresses() -> list[str]:
    """Non-loopback IPv4 addresses of this machine (best effort)."""
    import socket

    found = []
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
        found = [a for a in out.split() if ":" not in a]
    except OSError:
        pass
    if not found:
        try:
            found = [socket.gethostbyname(socket.gethostname())]
        except OSError:
            pass
    return [a for a in dict.fromkeys(found) if not a.startswith("127.")]


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
