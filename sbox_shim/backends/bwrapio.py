"""What sbox hands bwrap and what bwrap says back: the files it copies in and its options, as
memfds (`--file`, `--args`), and its `--json-status-fd` lines. Lean, like bwraprun.py, which
re-exports these: posix and built-in modules only.
"""
from __future__ import annotations

import posix

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

HOST_DNS = ("/etc/resolv.conf", "/etc/hosts")
REDACTED = "\0redacted"  # the content of a host file copied in without its credentials (redact.py)


def file_data(files: Sequence[tuple[str, str, str]], host_dns: bool, project: str = "") -> list[tuple[str, bytes]]:
    """The bytes of each file sbox puts in, as (target, content, source): generated content, or
    the host's file `source` (content "", or REDACTED: without its credentials), read now. With the
    host's network (`network: on`) names resolve as on the host: its resolv.conf and hosts are read
    now too (often through a link into /run), never bound."""
    out = []
    for target, content, source in files:
        if content == REDACTED:
            from sbox_shim import redact

            out.append((target, redact.read(source, project)))
            continue
        data = content.encode("utf-8", "surrogateescape")
        if host_dns and target in HOST_DNS:
            source = target
        if source:
            try:
                with open(source, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
        out.append((target, data))
    return out


def memfd(name: str, data: bytes) -> int:
    """An anonymous file holding `data`, positioned at its start (close-on-exec until passed on)."""
    fd = posix.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]
    posix.lseek(fd, 0, 0)
    return fd


def data_fds(files: Sequence[tuple[str, str, str]], host_dns: bool, project: str = "") -> list[int]:
    """`file_data` as memfds, in that order: the fds bwrap's --file/--ro-bind-data options name."""
    fds: list[int] = []
    try:
        for target, data in file_data(files, host_dns, project):
            fds.append(memfd("sbox" + target.replace("/", "-"), data))
    except BaseException:
        for fd in fds:
            posix.close(fd)
        raise
    return fds


class Status:
    """bwrap's `--json-status-fd`: `{"child-pid": N, ...}` once cloned, `{"exit-code": N}` only if
    the command was exec'd. Read without blocking whenever we need it (a signal, the end).

    bwrap writes one flat object per line with integer values; the two keys are read directly.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.child_pid: int | None = None
        self.exit_code: int | None = None
        self.set_up: bool | None = None  # held bwrap: did it finish setting the sandbox up? (None: not watched)
        self._buf = b""
        posix.set_blocking(fd, False)

    def poll(self, wait: float = 0.0) -> None:
        while self.fd >= 0:
            if wait and not _readable(self.fd, wait):
                return
            try:
                chunk = posix.read(self.fd, 65536)
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
        pid, code = _integer(line, b'"child-pid"'), _integer(line, b'"exit-code"')
        if pid is not None:
            self.child_pid = pid
        if code is not None:
            self.exit_code = code

    def finish(self) -> None:
        """After bwrap has exited: read what it wrote (its last line comes before its exit)."""
        self.poll()
        self.close()

    def command_pid(self) -> int | None:
        """The command's pid as the host sees it: the child of bwrap's pid 1 that is pid 2 inside."""
        self.poll()
        if self.child_pid is None:
            return None
        from sbox_shim.backends import procs

        for pid in procs.children(self.child_pid):
            if procs.ns_pid(pid) == 2:
                return pid
        return None

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1


def _integer(line: bytes, key: bytes) -> int | None:
    at = line.find(key)
    if at < 0:
        return None
    rest = line[at + len(key):].lstrip()
    if not rest.startswith(b":"):
        return None
    digits = rest[1:].lstrip().split(b",")[0].split(b"}")[0].strip()
    return int(digits) if digits.isdigit() else None


def command_line(path: str, options: Sequence[str], argv: Sequence[str],
                 block: int | None = None) -> tuple[list[str], list[int], Status]:
    """bwrap's command line, the fds to pass it (close them once it has started), its status.
    With `block`, bwrap waits on that fd once the sandbox is set up, before the command runs.

    The options go through a memfd and `--args`: environment values stay out of /proc/PID/cmdline.
    """
    args_fd = memfd("sbox-bwrap-args", b"".join(o.encode() + b"\0" for o in options))
    status_r, status_w = posix.pipe()
    blocking = ["--block-fd", str(block)] if block is not None else []
    command = [path, "--args", str(args_fd), "--json-status-fd", str(status_w), *blocking, "--", *argv]
    return command, [args_fd, status_w, *([block] if block is not None else [])], Status(status_r)


def _readable(fd: int, wait: float) -> bool:
    from sbox_shim.backends.bwrapend import readable

    return readable(fd, wait)
