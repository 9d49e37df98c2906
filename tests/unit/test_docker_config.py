"""The container's configuration is a pure function of the Step: test it without a daemon."""
from __future__ import annotations

from sbox_shim.backends.docker import container_config
from sbox_shim.backends.scratch import scratch_bytes
from sbox_shim.plan import Limits, Mount, Network, Step


def _step(limits: Limits) -> Step:
    return Step(label="run", argv=("npm", "install"), profile="default", reason="test", mode="sandbox",
                cwd="/p", env=(("HOME", "/home/u"),), network=Network("off"),
                mounts=(Mount("/usr", "/usr"), Mount("", "/home/u", readonly=False, kind="tmpfs")),
                uid=1000, gid=1000, limits=limits)


def test_every_scratch_tmpfs_is_sized_by_the_memory_limit() -> None:
    config = container_config(_step(Limits(memory=64 << 20)), [], "sbox-test", "image", False)
    size = 32 << 20
    assert config["tmpfs"] == {t: f"rw,exec,nosuid,nodev,mode=1777,size={size}" for t in ("/tmp", "/var/tmp")}
    assert config["shm_size"] == size
    home = [m for m in config["mounts"] if m["Target"] == "/home/u"]
    assert home[0]["TmpfsOptions"]["SizeBytes"] == size


def test_scratch_has_a_default_size() -> None:
    config = container_config(_step(Limits()), [], "sbox-test", "image", False)
    assert config["shm_size"] == scratch_bytes(None)
    assert config["tmpfs"]["/tmp"].endswith(f",size={scratch_bytes(None)}")


def test_the_command_runs_under_init_with_no_wrapper_of_ours() -> None:
    """The lifeline is held on the host: nothing of sbox's inside for the command to kill."""
    config = container_config(_step(Limits()), [], "sbox-test", "image", False)
    assert config["command"][-2:] == ["npm", "install"]
    assert "/bin/sh" not in config["command"]
