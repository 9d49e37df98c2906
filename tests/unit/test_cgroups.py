"""Where bwrap's sandbox cgroup goes (backends/cgroups.py): the path of sbox's own cgroup under
each mount, as /proc/self/mountinfo and /proc/self/cgroup give them. Making one, and the limits
holding, is tested with real sandboxes in tests/conformance/test_limits.py."""
from __future__ import annotations

from sbox_shim.backends import cgroups


def test_own_cgroup_under_its_mount() -> None:
    assert cgroups._below("/sys/fs/cgroup/memory", "/", "/process_api/x") == "/sys/fs/cgroup/memory/process_api/x"
    assert cgroups._below("/sys/fs/cgroup", "/", "/") == "/sys/fs/cgroup"
    # a mount of a subtree (a container's view): the part below the mount's root
    assert cgroups._below("/sys/fs/cgroup", "/docker/abc", "/docker/abc/sub") == "/sys/fs/cgroup/sub"
    assert cgroups._below("/sys/fs/cgroup", "/docker/abc", "/docker/abc") == "/sys/fs/cgroup"
    assert cgroups._below("/sys/fs/cgroup", "/docker/abc", "/other") is None


def test_only_the_limits_set_are_needed() -> None:
    assert cgroups._needs(64 << 20, None) == ["memory"]
    assert cgroups._needs(None, 50) == ["pids"]
    assert cgroups._needs(1, 2) == ["memory", "pids"]
