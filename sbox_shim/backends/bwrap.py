"""The bubblewrap backend: Linux namespaces, no daemon, the host toolchain mounted read-only.

bwrap's own processes: the monitor we start (outside), pid 1 of the sandbox (bwrap's reaper) and
the command, pid 2. `--die-with-parent` chains them: when we die the monitor dies, when the monitor
exits pid 1 dies, and with it the whole pid namespace, daemonised children included.

bwrap does not forward signals, so we do: to the command itself, found through the pid namespace.
`--json-status-fd` tells setup failures (no `exit-code` line) from the command's own exit status.
"""
from __future__ import annotations

import functools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
from typing import Callable, Sequence

from sbox_shim.backends import materialize
from sbox_shim.backends.bwrapargs import bwrap_options, namespace_args
from sbox_shim.errors import CommandNotFound, SandboxError, SboxError
from sbox_shim.plan import Mount, Step

NAME = "bwrap"
KNOWN_PATHS = ("/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap")
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH)
KILL_GRACE = 5.0
REQUIRED_OPTIONS = ("--json-status-fd", "--args", "--perms", "--cap-drop", "--die-with-parent")


def bwrap_path() -> str | None:
    """A system bwrap first: a PATH entry is not trusted to pick the sandbox."""
    for path in KNOWN_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def options_of(path: str) -> frozenset[str]:
    """The options this bwrap knows, from its --help (bubblewrap has grown them over the years)."""
    try:
        text = subprocess.run([path, "--help"], env={}, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(word for word in text.split() if word.startswith("--"))


def unavailable() -> str | None:
    path = bwrap_path()
    if path is None:
        return "bwrap (bubblewrap) is not installed; apt-get/dnf/pacman install bubblewrap"
    missing = [o for o in REQUIRED_OPTIONS if o not in options_of(path)]
    if missing:
        return f"{path} is too old (no {', '.join(missing)}); a newer bubblewrap is needed"
    probe = [path, *namespace_args(os.getuid(), os.getgid(), False, "--disable-userns" in options_of(path)),
             "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
             "--", "true"]
    try:
        result = subprocess.run(probe, env={}, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap probe failed: {exc}"
    if result.returncode != 0:
        return f"bwrap cannot create a sandbox here (user namespaces?): {_message(result.stderr, result.returncode)}"
    return None


def _message(stderr: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {code}"


def run(step: Step, run_dir: str, index: int = 0) -> int:
    if step.image:
        raise SandboxError(f"profile {step.profile!r} sets image: {step.image}, which only the docker backend can run")
    path = bwrap_path()
    if path is None:
        raise SandboxError("bwrap (bubblewrap) is not installed; install it or use backend: docker")
    if step.limits.memory:
        sys.stderr.write("sbox: warning: limits.memory is not enforced by the bwrap backend (no cgroups); "
                         "use backend: docker to enforce it\n")
    files = _host_dns(step, materialize(step, run_dir, index), run_dir, index)
    options = bwrap_options(step, files, disable_userns="--disable-userns" in options_of(path))
    code, status = _run_bwrap(path, options, step.argv, step.limits.timeout, step.limits.pids)
    if status is not None and status.exit_code is None and code == 1:
        _diagnose(path, options, step.argv[0])
    return code


def _host_dns(step: Step, files: list[Mount], run_dir: str, index: int) -> list[Mount]:
    """With the full network (`network: on`, no allowlist) names resolve as on the host.

    The host's resolv.conf is read (often through a link into /run) and copied, never bound.
    """
    if step.network.policy != "open":
        return files
    out = []
    for m in files:
        if m.target in ("/etc/resolv.conf", "/etc/hosts") and os.access(m.target, os.R_OK):
            copy = os.path.join(run_dir, f"files-{index}", "host-" + os.path.basename(m.target))
            shutil.copyfile(m.target, copy)  # follows the link; the copy is what gets bound
            os.chmod(copy, 0o644)
            m = Mount(copy, m.target)
        out.append(m)
    return out


class _Status:
    """bwrap's `--json-status-fd`: `{"child-pid": N, ...}` once cloned, `{"exit-code": N}` only if
    the command was exec'd. Read without blocking whenever we need it (a signal, the end)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.child_pid: int | None = None
        self.exit_code: int | None = None
        self._buf = b""
        os.set_blocking(fd, False)

    def poll(self, wait: float = 0.0) -> None:
        while self.fd >= 0:
            if wait and not select.select([self.fd], [], [], wait)[0]:
                return
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            if not chunk:  # end of file: bwrap has exited
                lines.append(self._buf)
                self._buf = b""
                self.close()
            for line in lines:
                self._parse(line)

    def _parse(self, line: bytes) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            return
        if "child-pid" in doc:
            self.child_pid = int(doc["child-pid"])
        if "exit-code" in doc:
            self.exit_code = int(doc["exit-code"])

    def finish(self) -> None:
        """After bwrap has exited: read what is left, to the end."""
        self.poll(wait=1.0)
        self.close()

    def command_pid(self) -> int | None:
        """The command's pid as the host sees it: the child of bwrap's pid 1 that is pid 2 inside."""
        self.poll()
        if self.child_pid is None:
            return None
        for pid in _children(self.child_pid):
            if _ns_pid(pid) == 2:
                return pid
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and _status_field(int(p), "PPid") == [str(pid)]]


def _ns_pid(pid: int) -> int | None:
    fields = _status_field(pid, "NSpid")
    return int(fields[-1]) if fields else None


def _status_field(pid: int, key: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            return next((line.split()[1:] for line in f if line.startswith(key + ":")), [])
    except OSError:
        return []


def _launch(path: str, options: Sequence[str], argv: Sequence[str]) -> tuple[list[str], tuple[int, int], _Status]:
    """bwrap's command line, the fds to pass it (close them once it has started), its status.

    The options go through a memfd and `--args`: environment values stay out of /proc/PID/cmdline.
    """
    args_fd = os.memfd_create("sbox-bwrap-args")
    os.write(args_fd, b"".join(o.encode() + b"\0" for o in options))
    os.lseek(args_fd, 0, os.SEEK_SET)
    status_r, status_w = os.pipe()
    command = [path, "--args", str(args_fd), "--json-status-fd", str(status_w), "--", *argv]
    return command, (args_fd, status_w), _Status(status_r)


def _nproc_limit(pids: int | None) -> Callable[[], None] | None:
    """RLIMIT_NPROC, which user namespaces count per namespace (Linux >= 5.14). The kernel exempts
    host root from it, so for root it would only pretend: skipped."""
    if not pids or os.getuid() == 0:
        return None

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (pids, pids))

    return limit


def _run_bwrap(path: str, options: Sequence[str], argv: Sequence[str], timeout: float | None,
               pids: int | None) -> tuple[int, _Status | None]:
    """Run bwrap in the foreground, relaying signals to the command; return (exit code, status)."""
    command, fds, status = _launch(path, options, argv)
    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        if not started:
            pending.append(signum)  # before bwrap even started: it will not be set up at all
            return
        target = status.command_pid()
        try:
            if target is not None:
                os.kill(target, signum)
            elif signum != signal.SIGWINCH:
                started[0].send_signal(signum)  # still setting up: the sandbox goes, nothing has run
        except ProcessLookupError:
            pass

    previous = _install(relay)
    try:
        # A session of its own: a terminal's ^C reaches sbox alone, and sbox relays it.
        started.append(subprocess.Popen(command, env={}, pass_fds=fds, start_new_session=True,
                                        preexec_fn=_nproc_limit(pids)))
    except OSError as exc:
        _restore(previous)
        status.close()
        raise SandboxError(f"cannot start bwrap: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)
    proc = started[0]
    for signum in pending:
        proc.send_signal(signum)
    try:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc, status)
            sys.stderr.write(f"sbox: timed out after {timeout:g}s; the sandbox was killed\n")
            status.close()
            return 124, None
    finally:
        _restore(previous)
    status.finish()
    if code < 0:
        return 128 - code, None
    return (status.exit_code if status.exit_code is not None else code), status


def _stop(proc: subprocess.Popen[bytes], status: _Status) -> None:
    """SIGTERM to the command, then SIGKILL to bwrap (which takes the whole pid namespace along)."""
    target = status.command_pid()
    if target is not None:
        try:
            os.kill(target, signal.SIGTERM)
            proc.wait(KILL_GRACE)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    proc.kill()
    proc.wait()


def _install(handler: Callable[[int, object], None]) -> dict[int, object]:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in RELAYED}


def _restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def _diagnose(path: str, options: Sequence[str], name: str) -> None:
    """bwrap exited 1 before exec'ing the command: was it the sandbox or the command? Set the same
    sandbox up again around `command -v NAME`, which runs nothing, and find out."""
    command, fds, status = _launch(path, options, ["/bin/sh", "-c", 'command -v "$1" >/dev/null', "sh", name])
    try:
        result = subprocess.run(command, env={}, pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"bwrap could not create the sandbox ({exc}); nothing ran") from None
    finally:
        for fd in fds:
            os.close(fd)
    status.finish()
    if status.exit_code is None:
        raise SandboxError(f"bwrap could not create the sandbox: {_message(result.stderr, result.returncode)}; nothing ran")
    if status.exit_code != 0:
        raise CommandNotFound(f"{name}: command not found in the sandbox (is it under a directory that is not mounted?)")
    raise _NotExecutable(f"{name}: found in the sandbox but could not be executed")


class _NotExecutable(SboxError):
    """The command exists but cannot be executed: 126, as a shell says."""

    exit_code = 126
