"""Before the command runs, each bind under the project is checked where bwrap mounted it.

bwrap resolves every bind source with realpath() before it mounts (even `--bind-fd`, through the
fd's /proc link), and each destination through the sandbox's view of the project. Another sandbox
writing the same project can swap a directory for a link between sbox's checks and those
resolutions, and have HOME mounted. So bwrap waits (`--block-fd`) once its mounts are made; sbox
reads the sandbox's mount table and, through /proc/PID/root, the identity of what is mounted at
each target: every pinned target must be a mount point there, of the very directory or file sbox
opened. Only then is the command let go; otherwise the sandbox is killed and nothing has run.
Lean: the warm path uses it (posix and time only).
"""
from __future__ import annotations

import posix
import time

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Sequence

TIMEOUT = 20.0  # seconds for bwrap to set the sandbox up


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline and backslash in a path as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mountinfo(pid: int) -> list[tuple[str, str, str]] | None:
    """(root, mount point, options) of each mount the process sees; None once it is gone."""
    try:
        fd = posix.open(f"/proc/{pid}/mountinfo", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    data = b""
    try:
        while chunk := posix.read(fd, 65536):
            data += chunk
    except OSError:
        return None
    finally:
        posix.close(fd)
    out = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        fields = line.split(" ")
        if len(fields) > 5:
            out.append((_unescape(fields[3]), _unescape(fields[4]), fields[5]))
    return out


def _settled(mounts: Sequence[tuple[str, str, str]]) -> bool:
    """bwrap has pivoted into the new root and made it read-only: every mount of ours is made."""
    root = any(point == "/" and source == "/newroot" and opts.startswith("ro") for source, point, opts in mounts)
    return root and not any(point.startswith(("/newroot", "/oldroot")) for _, point, _ in mounts)


def verify(status: Any, expected: Sequence[tuple[str, int, int]], timeout: float = TIMEOUT) -> str | None:
    """"" when each (target, device, inode) is mounted at its target; None when bwrap ended before
    (its own failure, which the caller reports); otherwise why the sandbox must not run."""
    from sbox_shim.backends.bwrapend import readable

    deadline = time.monotonic() + timeout
    while status.child_pid is None:
        if status.fd < 0:
            return None
        if readable(status.fd, 0.05):
            status.poll()  # what is there now (poll with a wait would wait again after it)
        elif time.monotonic() > deadline:
            return "bwrap did not report its sandbox"
    pid = status.child_pid
    while True:
        mounts = _mountinfo(pid)
        if mounts is None:
            return None
        if _settled(mounts):
            break
        if time.monotonic() > deadline:
            return "the sandbox did not finish setting up"
        time.sleep(0.0005)
    return mismatch(pid, mounts, expected)


def mismatch(pid: int, mounts: Sequence[tuple[str, str, str]] | None,
             expected: Sequence[tuple[str, int, int]]) -> str | None:
    """"" when each (target, device, inode) is a mount point in the view of process `pid` (whose
    mount table `mounts` is, as _mountinfo reads it) holding that very file; None once the process
    is gone; otherwise what differs. Also the docker backend's check of a container started ahead."""
    if mounts is None:
        return None
    points = {point for _, point, _ in mounts}
    for target, dev, ino in expected:
        if target not in points:
            return f"{target} was not mounted where sbox checked it (swapped for a link while the sandbox was set up?)"
        try:
            st = posix.stat(f"/proc/{pid}/root{target}")
        except OSError:
            return None if _mountinfo(pid) is None else f"{target} cannot be checked in the sandbox"
        if (st.st_dev, st.st_ino) != (dev, ino):
            return f"{target} is not what sbox checked (swapped while the sandbox was set up?)"
    return ""
