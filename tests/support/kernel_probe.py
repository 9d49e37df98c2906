"""Tries the kernel calls sbox's seccomp filter refuses and prints one `NAME RESULT` line each.

Run inside a sandbox and, as the live control, on the host: `python3 kernel_probe.py NAME [ARG]...`.
RESULT is OK, or the errno's name (EPERM when refused). A standalone script: it runs with the
system's python3 inside the sandbox, so it imports nothing from the tests.

    keyring SERIAL     read that key by serial number (KEYCTL_READ), print its payload
    request_key        request_key("user", ...): ENOKEY where the call is allowed
    ptrace PID|child   PTRACE_SEIZE the pid, or a child of our own
    perf_event_open    with no attribute: EFAULT where the call is allowed
    userfaultfd        in user mode only, which unprivileged callers may use
    bpf                BPF_MAP_CREATE with no attribute: EINVAL/EFAULT where allowed
    mount              a filesystem type that does not exist: ENODEV where allowed
    setns              fd -1: EBADF where allowed
    unshare            a new user namespace, in a child
    chmod MODE PATH    chmod, then `fchmodat2` by number, with an octal mode
    create PATH        open(O_CREAT) with mode 04755
    mknod PATH         mknod a regular file with mode 04755
    seccomp            the Seccomp line of /proc/self/status (2: a filter)
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

NR = {  # the syscalls libc has no wrapper for
    "x86_64": {"keyctl": 250, "request_key": 249, "perf_event_open": 298, "userfaultfd": 323, "bpf": 321,
               "fchmodat2": 452},
    "aarch64": {"keyctl": 219, "request_key": 218, "perf_event_open": 241, "userfaultfd": 282, "bpf": 280,
                "fchmodat2": 452},
}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long


def result(r: int) -> str:
    return "OK" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def syscall(name: str, *args: object) -> str:
    ctypes.set_errno(0)
    return result(libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args]))


def keyring(serial: str) -> str:
    buf = ctypes.create_string_buffer(256)
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR["keyctl"]), ctypes.c_long(11), ctypes.c_long(int(serial)), buf, ctypes.c_long(256))
    return result(r) + (" " + buf.raw[:r].decode(errors="replace") if r >= 0 else "")


def ptrace(target: str) -> str:
    child = 0
    if target == "child":
        child = os.fork()
        if child == 0:
            os.execv("/bin/sleep", ["sleep", "30"])
    ctypes.set_errno(0)
    try:
        return result(libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(child or int(target)), None, None))
    finally:
        if child:
            os.kill(child, 9)
            os.waitpid(child, 0)


def unshare() -> str:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        ctypes.set_errno(0)
        os.write(write, result(libc.unshare(ctypes.c_int(0x10000000))).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    return os.read(read, 100).decode()


def chmod(mode: str, path: str) -> str:
    ctypes.set_errno(0)
    first = result(libc.chmod(path.encode(), ctypes.c_uint(int(mode, 8))))
    return first + " fchmodat2=" + syscall("fchmodat2", -100, path.encode(), int(mode, 8), 0)


def create(path: str) -> str:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o4755))
    except OSError as e:
        return errno.errorcode[e.errno]
    return "OK"


def mknod(path: str) -> str:
    try:
        os.mknod(path, 0o100000 | 0o4755)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "OK"


def seccomp() -> str:
    with open("/proc/self/status", encoding="ascii") as f:
        return next((line.split()[1] for line in f if line.startswith("Seccomp:")), "absent")


PROBES = {
    "keyring": keyring,
    "request_key": lambda: syscall("request_key", b"user", b"sbox-probe-no-such-key", None, 0),
    "ptrace": ptrace,
    "perf_event_open": lambda: syscall("perf_event_open", None, 0, -1, -1, 0),
    "userfaultfd": lambda: syscall("userfaultfd", 1 | os.O_CLOEXEC),
    "bpf": lambda: syscall("bpf", 0, None, 0),
    "mount": lambda: result(libc.mount(b"none", b"/tmp", b"sbox-no-such-fs", ctypes.c_ulong(0), None)),
    "setns": lambda: result(libc.setns(ctypes.c_int(-1), ctypes.c_int(0))),
    "unshare": unshare,
    "chmod": chmod,
    "create": create,
    "mknod": mknod,
    "seccomp": seccomp,
}

if __name__ == "__main__":
    for word in sys.argv[1].split(","):
        print(word, PROBES[word](*sys.argv[2:]), flush=True)
