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


def _mountinfo(pid: int) -> list[tuple[str, str, str, str]] | None:
    """(root, mount point, options, device) of each mount the process sees, in mount order; None
    once it is gone."""
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
            out.append((_unescape(fields[3]), _unescape(fields[4]), fields[5], fields[2]))
    return out


def _settled(mounts: Sequence[tuple[str, str, str, str]]) -> bool:
    """bwrap has pivoted into the new root and made it read-only: every mount of ours is made."""
    root = any(point == "/" and source == "/newroot" and opts.startswith("ro") for source, point, opts, _ in mounts)
    return root and not any(point.startswith(("/newroot", "/oldroot")) for _, point, _, _ in mounts)


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


def mismatch(pid: int, mounts: Sequence[tuple[str, str, str, str]] | None,
             expected: Sequence[tuple[str, int, int]]) -> str | None:
    """"" when each (target, device, inode) is a mount point in the view of process `pid` (whose
    mount table `mounts` is, as _mountinfo reads it) holding that very file, mounted on itself;
    None once the process is gone; otherwise what differs. Also the docker backend's check of a
    container started ahead."""
    if mounts is None:
        return None
    points = {point for _, point, _, _ in mounts}
    for target, dev, ino in expected:
        if target not in points:
            return f"{target} was not mounted where sbox checked it (swapped for a link while the sandbox was set up?)"
        try:
            st = posix.stat(f"/proc/{pid}/root{target}")
        except OSError:
            return None if _mountinfo(pid) is None else f"{target} cannot be checked in the sandbox"
        if (st.st_dev, st.st_ino) != (dev, ino):
            return f"{target} is not what sbox checked (swapped while the sandbox was set up?)"
        if not _on_itself(mounts, target):
            return (f"{target} was mounted over another directory while it lay elsewhere (its parent moved "
                    "while the sandbox was set up?)")
    return ""


def _on_itself(mounts: Sequence[tuple[str, str, str, str]], target: str) -> bool:
    """Is the mount at `target` (the last made there) on the very file it shows? Every bind sbox
    pins under the project binds a path onto itself, so the mount's root (the file's place in its
    file system now, which the kernel reads off the file itself) must be the place of `target`
    in the mount that holds it (the project's). Without this, another sandbox that moves a parent
    of a nested `.git` away between sbox's look and bwrap's mounts, and puts a directory of its
    own in its place, has the real `.git` mounted read-only over the decoy while it stays
    writable, and its config unredacted, where it went (red team 8)."""
    mine = [m for m in mounts if m[1] == target][-1]
    holders = [m for m in mounts if m[1] != target and (m[1] == "/" or target.startswith(m[1].rstrip("/") + "/"))]
    if not holders:
        return True
    root, point, _, device = max(reversed(holders), key=lambda m: len(m[1]))  # the nearest; the last made there
    if device != mine[3]:
        return True  # another file system holds it: nothing to compare the place with
    return mine[0] == root.rstrip("/") + target[len(point.rstrip("/")):]
