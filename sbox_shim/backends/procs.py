"""What /proc says about a sandbox's processes, read from the host: children, the pid a process
has in its own namespace, the exit status of one that is dead but not yet reaped.

Imported on sbox's warm path (through bwraprun): posix and builtins only.
"""
from __future__ import annotations

import posix


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:  # bytes: no codec to load
            return [int(p) for p in f.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        return [int(p) for p in posix.listdir("/proc") if p.isdigit() and status_field(int(p), "PPid") == [str(pid)]]


def ns_pid(pid: int) -> int | None:
    """The pid this process has in its innermost pid namespace."""
    fields = status_field(pid, "NSpid")
    return int(fields[-1]) if fields else None


def status_field(pid: int, key: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            return next((line.split()[1:] for line in f if line.startswith(key + ":")), [])
    except OSError:
        return []


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's name (which, in parentheses, may hold
    anything): the state is [0], the start time [19], the exit code [49]; [] if it is gone."""
    try:
        fd = posix.open(f"/proc/{pid}/stat", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return []
    try:
        data = posix.read(fd, 4096)
    except OSError:
        return []
    finally:
        posix.close(fd)
    return data.rpartition(b")")[2].decode("utf-8", "replace").split()


def exit_code(pid: int) -> int | None:
    """A zombie's exit code as a shell reports it (128 + N when killed by signal N), from the
    `exit_code` field of /proc/PID/stat: its parent may never reap it (a stopped pid 1)."""
    fields = stat_fields(pid)
    if len(fields) < 50 or fields[0] not in ("Z", "X") or not fields[49].isdigit():
        return None
    try:
        code = posix.waitstatus_to_exitcode(int(fields[49]))
    except ValueError:
        return None
    return 128 - code if code < 0 else code


def pidfd(pid: int) -> int:
    """A pidfd for `pid`, or -1 if it is gone: readable once the process has exited."""
    try:
        return posix.pidfd_open(pid)
    except OSError:
        return -1
