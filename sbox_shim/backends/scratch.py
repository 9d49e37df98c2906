"""How big the sandbox's scratch filesystems may grow: the same bound on every backend.

`/tmp`, `/var/tmp`, the throwaway HOME and `/dev/shm` are tmpfs, which the kernel sizes at half the
RAM unless told otherwise: four of them let a command pin twice the machine's memory. Each gets
its own cap instead: half of `limits.memory` when set (on Docker, files in a tmpfs count against the
memory cgroup: the command keeps room to run and meets ENOSPC, not the OOM killer), else a GiB or
an eighth of the RAM, whichever is larger, but never above a quarter of it.
"""
from __future__ import annotations

DEFAULT_BYTES = 1 << 30
RAM_FRACTION = 8


def scratch_bytes(memory: int | None, ram: int | None = None) -> int:
    """The size of each scratch tmpfs for a step with this memory limit, on a machine with `ram`
    bytes (None: this machine's)."""
    if memory:
        return max(memory // 2, 1 << 20)
    if ram is None:
        import os

        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(max(DEFAULT_BYTES, ram // RAM_FRACTION), ram // 4)
