"""The bwrap command line is a pure function of the Step: test it without running bwrap."""
from __future__ import annotations

import pytest

from sbox_shim.backends.bwrapargs import bwrap_argv, bwrap_options, mount_args
from sbox_shim.backends.scratch import scratch_bytes
from sbox_shim.plan import Limits, Mount, Network, Step

PROJECT = "/home/u/project"


def _step(policy: str = "off", **kw: object) -> Step:
    base: dict[str, object] = dict(
        label="run", argv=("npm", "install"), profile="default", reason="test", mode="sandbox",
        cwd=PROJECT, env=(("HOME", "/home/u"), ("PATH", "/usr/bin:/bin"), ("NPM_TOKEN", "s3cret")),
        network=Network(policy),
        mounts=(
            Mount("usr/bin", "/bin", kind="symlink"),
            Mount("/usr", "/usr"),
            Mount("/etc/ssl", "/etc/ssl"),
            Mount("", "/home/u", readonly=False, kind="tmpfs"),
            Mount(PROJECT, PROJECT, readonly=False),
            Mount(f"{PROJECT}/.git", f"{PROJECT}/.git"),
            Mount(f"{PROJECT}/sbox.yaml", f"{PROJECT}/sbox.yaml"),
        ),
        uid=1000, gid=1001, limits=Limits(),
    )
    base.update(kw)
    return Step(**base)  # type: ignore[arg-type]


FILES = [("/etc/resolv.conf", 7), ("/etc/hosts", 8)]  # generated files, as (target, fd)


def _pairs(argv: list[str], flag: str, width: int = 1) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1:i + 1 + width]) for i, a in enumerate(argv) if a == flag]


def _position(argv: list[str], flag: str, *operands: str) -> int:
    for i, a in enumerate(argv):
        if a == flag and tuple(argv[i + 1:i + 1 + len(operands)]) == operands:
            return i
    raise AssertionError(f"{flag} {' '.join(operands)} not in {argv}")


def test_command_follows_double_dash_verbatim() -> None:
    argv = bwrap_argv(_step(), FILES, bwrap="/usr/bin/bwrap")
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[argv.index("--") + 1:] == ["npm", "install"]


@pytest.mark.parametrize("policy, shared", [("off", False), ("proxy", False), ("dns", True), ("open", True)])
def test_network_namespace_is_shared_only_for_dns_and_open(policy: str, shared: bool) -> None:
    options = bwrap_options(_step(policy), FILES)
    assert "--unshare-all" in options
    assert ("--share-net" in options) is shared


def test_isolation_flags() -> None:
    options = bwrap_options(_step(), FILES)
    for flag in ("--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in options
    assert _pairs(options, "--cap-drop") == [("ALL",)]
    assert _pairs(options, "--uid") == [("1000",)]
    assert _pairs(options, "--gid") == [("1001",)]
    assert _pairs(options, "--chdir") == [(PROJECT,)]
    assert _pairs(options, "--proc") == [("/proc",)]
    assert _pairs(options, "--dev") == [("/dev",)]
    assert "--unsetenv" not in options


def test_environment_is_exactly_the_steps() -> None:
    options = bwrap_options(_step(), FILES)
    assert options.index("--clearenv") < options.index("--setenv")
    assert _pairs(options, "--setenv", 2) == [("HOME", "/home/u"), ("PATH", "/usr/bin:/bin"), ("NPM_TOKEN", "s3cret")]


def test_mount_kinds() -> None:
    options = bwrap_options(_step(), FILES)
    assert ("usr/bin", "/bin") in _pairs(options, "--symlink", 2)
    assert ("/usr", "/usr") in _pairs(options, "--ro-bind", 2)
    assert (PROJECT, PROJECT) in _pairs(options, "--bind", 2)
    assert (f"{PROJECT}/.git", f"{PROJECT}/.git") in _pairs(options, "--ro-bind", 2)
    assert (f"{PROJECT}/sbox.yaml", f"{PROJECT}/sbox.yaml") in _pairs(options, "--ro-bind", 2)
    assert ("0644", "--file", "7", "/etc/resolv.conf") in _pairs(options, "--perms", 4)
    tmpfs = [t for (t,) in _pairs(options, "--tmpfs")]
    assert {"/tmp", "/var/tmp", "/home/u", "/dev/shm"} <= set(tmpfs)
    assert ("1777", "--size", str(scratch_bytes(None)), "--tmpfs", "/tmp") in _pairs(options, "--perms", 5)


def test_every_tmpfs_is_sized_by_the_memory_limit() -> None:
    """A tmpfs's size must come right before it (bwrap: `--size` applies to the next `--tmpfs`)."""
    options = bwrap_options(_step(limits=Limits(memory=64 << 20)), FILES)
    sized = [(options[i - 1], options[i + 1]) for i, o in enumerate(options) if o == "--tmpfs"]
    assert sized == [(str(32 << 20), t) for _, t in sized] and len(sized) == 4
    assert options.index("--tmpfs") > options.index("--dev")  # /dev/shm over --dev's own directory
    last = options.index("--remount-ro")  # after every mount; /dev's own tmpfs cannot be sized
    assert options[last:last + 4] == ["--remount-ro", "/dev", "--remount-ro", "/"] and last > options.index("--tmpfs")


def test_default_scratch_is_a_gib_or_an_eighth_of_the_ram_never_above_a_quarter() -> None:
    assert scratch_bytes(None, ram=2 << 30) == 512 << 20
    assert scratch_bytes(None, ram=4 << 30) == 1 << 30
    assert scratch_bytes(None, ram=64 << 30) == 8 << 30
    assert scratch_bytes(256 << 20, ram=64 << 30) == 128 << 20


def test_nothing_of_the_host_run_or_home_is_bound() -> None:
    options = bwrap_options(_step(), FILES)
    sources = [s for s, _ in _pairs(options, "--bind", 2) + _pairs(options, "--ro-bind", 2)]
    assert "/" not in sources and "/run" not in sources and "/home/u" not in sources
    assert "/etc/resolv.conf" not in sources


def test_parents_are_mounted_before_children() -> None:
    options = bwrap_options(_step(), FILES)
    assert _position(options, "--bind", PROJECT, PROJECT) < _position(options, "--ro-bind", f"{PROJECT}/.git", f"{PROJECT}/.git")
    assert _position(options, "--proc", "/proc") < _position(options, "--tmpfs", "/tmp")
    # a HOME or project under /tmp must not be hidden by the scratch /tmp
    step = _step(mounts=(Mount("", "/tmp/h/home", readonly=False, kind="tmpfs"), Mount("/tmp/p", "/tmp/p")))
    options = bwrap_options(step, FILES)
    assert _position(options, "--tmpfs", "/tmp") < _position(options, "--tmpfs", "/tmp/h/home")
    assert _position(options, "--tmpfs", "/tmp") < _position(options, "--ro-bind", "/tmp/p", "/tmp/p")


def test_generated_files_come_after_the_plans_mounts_at_the_same_depth() -> None:
    args = mount_args([Mount("/etc/hosts", "/etc/hosts")], FILES)
    assert _position(args, "--ro-bind", "/etc/hosts", "/etc/hosts") < _position(args, "--ro-bind-data", "8", "/etc/hosts")


def test_a_file_in_a_bound_directory_is_bound_over_never_written_through() -> None:
    """`--file` writes where the target is: inside a bound project that would be the host's file."""
    options = bwrap_options(_step(), [("/etc/hosts", 8), (f"{PROJECT}/.npmrc", 9)])
    assert ("0644", "--file", "8", "/etc/hosts") in _pairs(options, "--perms", 4)
    assert ("0644", "--ro-bind-data", "9", f"{PROJECT}/.npmrc") in _pairs(options, "--perms", 4)
    assert not [t for _, t in _pairs(options, "--file", 2) if t.startswith(PROJECT)]


def test_copied_host_files_are_not_mounted() -> None:
    step = _step(mounts=(Mount("/usr", "/usr"), Mount("/etc/services", "/etc/services", kind="copy")))
    options = bwrap_options(step, [("/etc/services", 5)])
    assert "/etc/services" not in [t for _, t in _pairs(options, "--ro-bind", 2)]
    assert ("0644", "--file", "5", "/etc/services") in _pairs(options, "--perms", 4)


def test_root_is_read_only_after_every_mount() -> None:
    options = bwrap_options(_step(), FILES)
    i = _position(options, "--remount-ro", "/")
    assert all(a not in ("--bind", "--ro-bind", "--tmpfs", "--symlink") for a in options[i:])
