"""The seccomp filter every sandbox runs under: the kernel surface a package's script may not use.

One definition (`rules`), two renderings: compiled BPF for bwrap's `--seccomp FD`, and a Docker
seccomp profile (JSON) for the docker backend's `security_opt`.

What is refused, with EPERM unless said otherwise:
- the kernel keyring (`keyctl`, `add_key`, `request_key`), `ptrace` and `process_vm_readv/writev`
  (pid 1 of a bwrap sandbox is bwrap itself), `perf_event_open`, `userfaultfd`, `bpf`;
- the mount family (`mount`, `umount`, `umount2`, `pivot_root`, `move_mount`, `open_tree`,
  `fsopen`, `fsmount`, `fsconfig`, `fspick`, `mount_setattr`), `setns`, and `unshare`/`clone` with
  a CLONE_NEW* flag (new namespaces); `clone3` says ENOSYS (its flags sit in memory a filter
  cannot read; libc then falls back to `clone`, which is checked), as Docker's profile does;
- what else Docker's documentation lists as blocked by its default profile: modules, kexec,
  reboot, swap, clock and time setting, `acct`, `quotactl`, `lookup_dcookie`, `open_by_handle_at`,
  `name_to_handle_at`, `ioperm`/`iopl`, `uselib`, `ustat`, `sysfs`, `_sysctl`, `vm86`,
  `nfsservctl`, `kcmp`, the NUMA policy calls; all but `personality`, which is left alone;
- io_uring (ENOSYS: its submissions bypass this filter; libuv and others fall back to threads);
- setuid and setgid files: `chmod`, `fchmod`, `fchmodat`, `fchmodat2` with S_ISUID or S_ISGID in
  the mode, `open`/`openat`/`creat` creating a file with either bit, `mknod`/`mknodat` with
  either; `openat2` says ENOSYS (its mode sits in memory), so callers fall back to `openat`.

Everything else is allowed (the default action): a denylist, like bubblewrap's and Flatpak's, so
that npm, pip, cargo and go keep working whatever syscalls their toolchains add next.

Which library: libseccomp, through pyseccomp (PyPI), a ctypes binding to the system's
libseccomp.so.2 that is API-compatible with libseccomp's own Python module. libseccomp's own
binding ships only as Debian's python3-seccomp, built for /usr/bin/python3, which sbox's venv
(its own interpreter, no system site-packages) cannot import; pyseccomp needs only libseccomp2,
which bubblewrap already depends on. The BPF is built once and kept in sbox's state directory
(kept.py's private files), keyed by libseccomp's version, the architecture and this definition,
so the binding is imported only when the key changes; the version itself is kept with the identity
of the library file it was read from, so that libseccomp is loaded only when that file changes
(kept_library_version). A plan-cache record carries the BPF itself.

Docker: a container takes one seccomp profile, and Docker's default is an allowlist that cannot
be extended from outside without copying it. sbox therefore passes its own profile rendered from
the same rules (default allow, the denials above), so both backends refuse the same calls; it
covers what Docker's documentation lists as blocked by the default profile (but `personality`),
plus ptrace, process_vm_*, io_uring and setuid files, which Docker's 20.10 default allows. The
price: a syscall that neither list names (say, one newer than this file) is allowed, where
Docker's allowlist would refuse it. The docker.io engine here (20.10) takes this profile as is,
`errnoRet` included.
"""
from __future__ import annotations

import errno
import os

from sbox_shim.errors import SandboxError
from sbox_shim.plan import Value

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

FORMAT = 1
S_ISUID, S_ISGID = 0o4000, 0o2000
O_CREAT = os.O_CREAT
O_TMPFILE_BIT = getattr(os, "O_TMPFILE", 0o20200000) & ~getattr(os, "O_DIRECTORY", 0o200000)
CLONE_NEW = (0x00000080, 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
# (time, mount, cgroup, uts, ipc, user, pid, net)

DENIED = (
    "keyctl", "add_key", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "perf_event_open", "userfaultfd", "bpf",
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "setns",
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "clock_adjtime", "clock_settime", "settimeofday", "stime", "adjtimex",
    "lookup_dcookie", "open_by_handle_at", "name_to_handle_at", "ioperm", "iopl",
    "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "nfsservctl",
    "kcmp", "mbind", "set_mempolicy", "get_mempolicy", "move_pages",
)
NOT_IMPLEMENTED = ("clone3", "openat2", "io_uring_setup", "io_uring_enter", "io_uring_register")
MODE_ARG = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2), ("creat", 1),
            ("mknod", 1), ("mknodat", 2))
OPEN_ARGS = (("open", 1, 2), ("openat", 2, 3))  # (name, flags arg, mode arg)
NAMESPACE_ARG = (("unshare", 0), ("clone", 0))  # clone's flags come first on x86 and arm
# The compat ABIs a 64-bit kernel also accepts: filtered alike, as Docker does.
ARCHES = {"x86_64": ("x86_64", "x86", "x32"), "aarch64": ("aarch64", "arm")}
DOCKER_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
               "aarch64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM"}


EPERM = errno.EPERM  # Rule's default (its field `errno` hides the module there)


class Rule(Value):
    """Refuse `syscall` with `errno` when, for every (arg, mask, value), `arg & mask == value`.
    (Its repr, which names the kept filter, is a dataclass's.)"""

    __slots__ = ("syscall", "errno", "masked")
    syscall: str
    errno: int
    masked: tuple[tuple[int, int, int], ...]

    def __init__(self, syscall: str, errno: int = EPERM, masked: tuple[tuple[int, int, int], ...] = ()) -> None:
        self._set(syscall=syscall, errno=errno, masked=masked)


def rules() -> tuple[Rule, ...]:
    """The whole definition, as data."""
    out = [Rule(name) for name in DENIED] + [Rule(name, errno.ENOSYS) for name in NOT_IMPLEMENTED]
    for bit in (S_ISUID, S_ISGID):
        out += [Rule(name, errno.EPERM, ((arg, bit, bit),)) for name, arg in MODE_ARG]
        for name, flags, mode in OPEN_ARGS:
            out += [Rule(name, errno.EPERM, ((flags, how, how), (mode, bit, bit))) for how in (O_CREAT, O_TMPFILE_BIT)]
    out += [Rule(name, errno.EPERM, ((arg, flag, flag),)) for name, arg in NAMESPACE_ARG for flag in CLONE_NEW]
    return tuple(out)


def arches(machine: str) -> tuple[str, ...]:
    """The ABIs filtered on this machine (`uname -m`); the filter kills any other."""
    return ARCHES.get(machine, (machine,))


def digest(definition: Sequence[Rule], machine: str, library: str) -> str:
    from sbox_shim import kept

    return kept.digest(repr((FORMAT, tuple(definition), arches(machine), library)).encode())


# ---------------------------------------------------------------- BPF for bwrap (libseccomp)


def library_version() -> str:
    """libseccomp's version, e.g. "2.5.4"; "" if it cannot be loaded."""
    import ctypes

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return ""
    lib.seccomp_version.restype = ctypes.POINTER(Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def compile_bpf(definition: Sequence[Rule], machine: str) -> bytes:
    """The definition as a BPF program for this machine, by libseccomp. Raises SandboxError."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 not found
        raise SandboxError(f"cannot build the seccomp filter: {exc}; install libseccomp2 and pyseccomp "
                           "(pip install pyseccomp in sbox's venv)") from None
    import tempfile

    try:
        f = sc.SyscallFilter(sc.ALLOW)
        for name in arches(machine)[1:]:
            f.add_arch(getattr(sc.Arch, name.upper()))
        for rule in definition:
            if sc.resolve_syscall(sc.Arch.NATIVE, rule.syscall) == -1:  # unknown to this libseccomp
                continue
            f.add_rule(sc.ERRNO(rule.errno), rule.syscall,
                       *(sc.Arg(arg, sc.MASKED_EQ, mask, value) for arg, mask, value in rule.masked))
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            bpf = out.read()
    except (OSError, ValueError, AttributeError) as exc:
        raise SandboxError(f"cannot build the seccomp filter with libseccomp: {exc}") from None
    if not bpf or len(bpf) % 8:
        raise SandboxError("cannot build the seccomp filter: libseccomp returned no program")
    return bpf


def kept_filter(state_dir: str | None) -> bytes:
    """The BPF for this machine: kept in `state_dir` (when given) and built only when libseccomp,
    the architecture or the definition changed. Raises SandboxError when it cannot be built."""
    from sbox_shim import kept

    machine = os.uname().machine
    definition = rules()
    version = kept_library_version(state_dir)
    path = state_dir and os.path.join(state_dir, "seccomp", digest(definition, machine, version) + ".bpf")
    found = kept.read_private(path) if path else None
    if isinstance(found, bytes) and found and len(found) % 8 == 0:
        return found
    bpf = compile_bpf(definition, machine)
    if path:
        try:
            kept.write_private(path, bpf)
        except OSError:
            pass  # built again next time
    return bpf


LIBRARY = "library"  # the kept note of which libseccomp file has which version


def kept_library_version(state_dir: str | None) -> str:
    """`library_version`, without loading the library (ctypes and libseccomp: milliseconds on
    every command) while the file it was read from is unchanged: the version is kept in
    `state_dir` with that file's path and identity (device, inode, size, times). Another file
    the loader would now prefer is not looked for: the filter kept for the old one is still
    libseccomp's rendering of the same definition."""
    from sbox_shim import kept

    note = os.path.join(state_dir, "seccomp", LIBRARY) if state_dir else None
    found = kept.read_private(note) if note else None
    if isinstance(found, list) and len(found) == 3 and isinstance(found[2], str) and found[2]:
        where, ident, version = found
        if isinstance(where, str) and _identity(where) == ident:
            return str(version)
    version = library_version()
    where = loaded_library()
    if note and version and where:
        try:
            kept.write_private(note, [where, _identity(where), version])
        except (OSError, ValueError):
            pass
    return version


def loaded_library() -> str | None:
    """The libseccomp file this process has loaded (after `library_version`), from its memory map."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else ""
                if "/libseccomp.so" in path and path.startswith("/"):
                    return path
    except OSError:
        pass
    return None


def _identity(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def memfd(bpf: bytes) -> int:
    """The program as bwrap's `--seccomp FD` reads it."""
    from sbox_shim.backends import bwraprun

    return bwraprun.memfd("sbox-seccomp", bpf)


# ---------------------------------------------------------------- a profile for Docker


def docker_profile(definition: Sequence[Rule], machine: str) -> dict[str, object]:
    """The definition as a Docker seccomp profile (the JSON `security_opt=["seccomp=…"]` takes)."""
    syscalls: list[dict[str, object]] = []
    for rule in definition:
        entry: dict[str, object] = {"names": [rule.syscall], "action": "SCMP_ACT_ERRNO", "errnoRet": rule.errno}
        if rule.masked:
            entry["args"] = [{"index": arg, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}
                             for arg, mask, value in rule.masked]
        syscalls.append(entry)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [DOCKER_ARCH[a] for a in arches(machine) if a in DOCKER_ARCH],
        "syscalls": syscalls,
    }


def docker_security_opt() -> str:
    import json

    return "seccomp=" + json.dumps(docker_profile(rules(), os.uname().machine), separators=(",", ":"))
