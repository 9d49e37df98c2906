"""The seccomp filter's definition and its two renderings (BPF for bwrap, a profile for Docker)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbox_shim import kept
from sbox_shim.backends import bwrapargs, seccomp
from sbox_shim.errors import SandboxError

MUST_DENY = ("keyctl", "add_key", "request_key", "ptrace", "perf_event_open", "userfaultfd", "bpf", "mount",
             "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
             "mount_setattr", "setns")


def by_name() -> dict[str, list[seccomp.Rule]]:
    out: dict[str, list[seccomp.Rule]] = {}
    for rule in seccomp.rules():
        out.setdefault(rule.syscall, []).append(rule)
    return out


@pytest.mark.parametrize("name", MUST_DENY)
def test_the_kernel_surface_is_refused_outright(name: str) -> None:
    assert by_name()[name] == [seccomp.Rule(name, errno.EPERM)]


@pytest.mark.parametrize("name, arg", [("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2)])
def test_chmod_is_refused_only_with_a_setid_bit(name: str, arg: int) -> None:
    rules = by_name()[name]
    assert {r.masked for r in rules} == {((arg, 0o4000, 0o4000),), ((arg, 0o2000, 0o2000),)}
    assert all(r.errno == errno.EPERM for r in rules)


def test_open_is_refused_only_when_it_creates_a_setid_file() -> None:
    rules = by_name()["openat"]
    assert ((2, os.O_CREAT, os.O_CREAT), (3, 0o4000, 0o4000)) in {r.masked for r in rules}
    assert all(len(r.masked) == 2 and r.masked[0][0] == 2 for r in rules)  # never on the flags alone


def test_calls_whose_arguments_a_filter_cannot_read_say_enosys() -> None:
    for name in ("clone3", "openat2"):
        assert by_name()[name] == [seccomp.Rule(name, errno.ENOSYS)]


def test_unshare_is_refused_only_for_new_namespaces() -> None:
    flags = {r.masked[0][1] for r in by_name()["unshare"]}
    assert 0x10000000 in flags and 0x00020000 in flags  # CLONE_NEWUSER, CLONE_NEWNS
    assert not flags & {0x00000200, 0x00000400}  # CLONE_FILES, CLONE_FS stay allowed (no bit of them)
    assert all(bin(f).count("1") == 1 for f in flags)


def test_the_compat_abis_are_filtered_too() -> None:
    assert seccomp.arches("x86_64") == ("x86_64", "x86", "x32")
    assert seccomp.arches("riscv64") == ("riscv64",)


def test_the_key_changes_with_definition_arch_and_library() -> None:
    rules = seccomp.rules()
    base = seccomp.digest(rules, "x86_64", "2.5.4")
    assert base == seccomp.digest(seccomp.rules(), "x86_64", "2.5.4")
    assert len({base, seccomp.digest(rules[1:], "x86_64", "2.5.4"), seccomp.digest(rules, "aarch64", "2.5.4"),
                seccomp.digest(rules, "x86_64", "2.6.0")}) == 4


def test_the_docker_profile_says_the_same() -> None:
    profile = seccomp.docker_profile(seccomp.rules(), "x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    entries = profile["syscalls"]
    assert isinstance(entries, list) and len(entries) == len(seccomp.rules())
    chmod = [e for e in entries if e["names"] == ["chmod"]]
    assert {"index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"} in [a for e in chmod for a in e["args"]]
    assert {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM} in entries
    opt = seccomp.docker_security_opt()
    assert opt.startswith("seccomp=") and json.loads(opt[len("seccomp="):]) == seccomp.docker_profile(seccomp.rules(), os.uname().machine)


def test_the_filter_compiles_to_bpf_and_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bpf = seccomp.kept_filter(str(tmp_path))
    assert bpf and len(bpf) % 8 == 0
    kept = list((tmp_path / "seccomp").glob("*.bpf"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600

    def no_build(*args: object) -> bytes:
        raise AssertionError("the filter was built again")

    monkeypatch.setattr(seccomp, "compile_bpf", no_build)
    assert seccomp.kept_filter(str(tmp_path)) == bpf


def test_a_filter_that_cannot_be_built_is_a_sandbox_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails
    with pytest.raises(SandboxError, match="cannot build the seccomp filter"):
        seccomp.compile_bpf(seccomp.rules(), "x86_64")


def test_bwrap_gets_the_filter_and_the_masks() -> None:
    from sbox_shim.plan import Network, Step

    step = Step(label="run", argv=("true",), profile="default", reason="test", mode="sandbox", cwd="/", env=(),
                network=Network("off"))
    options = bwrapargs.bwrap_options(step, seccomp=7, masked=["/proc/keys"])
    assert options[options.index("--seccomp") + 1] == "7"
    at = options.index("/proc/keys")
    assert options[at - 2:at + 1] == ["--ro-bind", "/dev/null", "/proc/keys"]
    assert options.index("/proc") < at  # bound over the fresh /proc, not under it


LOADS = ("import sys; sys.path.insert(0, sys.argv[1]); from sbox_shim.backends import seccomp; "
         "bpf = seccomp.kept_filter(sys.argv[2]); "
         "print(bool(bpf), 'ctypes' in sys.modules, '/libseccomp.so' in open('/proc/self/maps').read())")


def _repeat(state: Path) -> str:
    root = str(Path(seccomp.__file__).parents[2])
    out = subprocess.run([sys.executable, "-I", "-S", "-c", LOADS, root, str(state)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_kept_filter_is_used_without_loading_libseccomp(tmp_path: Path) -> None:
    """The version that keys the kept filter is kept with the identity of the library file: a
    repeat loads neither ctypes nor libseccomp."""
    first = seccomp.kept_filter(str(tmp_path))
    where, _, version = kept.read_private(str(tmp_path / "seccomp" / seccomp.LIBRARY))  # type: ignore[misc]
    assert "/libseccomp.so" in where and version == seccomp.library_version()
    assert _repeat(tmp_path) == "True False False"
    assert seccomp.kept_filter(str(tmp_path)) == first


def test_a_changed_library_file_is_loaded_again(tmp_path: Path) -> None:
    """The note names a file whose identity changed (an upgrade replaces it): libseccomp is loaded
    again and the note follows the file it was read from."""
    seccomp.kept_filter(str(tmp_path))
    note = str(tmp_path / "seccomp" / seccomp.LIBRARY)
    where, ident, version = kept.read_private(note)  # type: ignore[misc]
    kept.write_private(note, [where, [*ident[:-1], ident[-1] + 1], "0.0.0"])  # another ctime: not that file
    assert _repeat(tmp_path) == "True True True"
    assert kept.read_private(note) == [where, ident, version]
