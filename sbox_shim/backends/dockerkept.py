"""The docker helper kept between runs: one per user and Docker environment, for a few minutes.

Every docker run forked a helper (dockerhelper.py) that imported the Docker SDK (~120 ms here)
and agreed the API version with the daemon: with the planning done in a few milliseconds, that
import was the run's critical path. So the first helper also listens on a unix socket in sbox's
state directory, and the next run, sbox's or another project's, asks it instead of forking its own;
it exits once no run has used it for SBOX_DOCKER_HELPER_IDLE seconds (default IDLE; 0: not kept).

What the helper does for a run is unchanged: it carries out the requests that run makes from its
own plan, and is that run's lifeline (its containers go when the run's connection closes). It
decides nothing; what it can do, any process of this user that can reach the Docker socket can do.
So the one thing to keep out is a sandbox: the state directory is read-only in the sandboxes that
see it, but a socket on a read-only mount still accepts connections. Both ends therefore check the
other's credentials: the same uid, and the same mount namespace as the helper's own, which no
bwrap sandbox or container shares. The socket is reached through a descriptor of its directory,
which must be this user's and writable by no one else, and never inside a project; its name is a
digest of what the helper was started with (sbox's code, the Docker SDK's version, the interpreter,
the Docker variables, PATH and the cache directory), so a run with other settings, or after an
upgrade, starts a helper of its own.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Mapping, NamedTuple

IDLE = 600  # seconds a kept helper waits for the next run
# What the SDK's APIClient and its pulls read from the environment (docker.utils.kwargs_from_env,
# the auth config, credential helpers on PATH), and sbox's own directories: all a helper is given
# (dockerhelper._spawn), and a helper serves only runs that agree on all of them.
DOCKER_VARS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG", "HOME", "PATH",
               "SBOX_CACHE_DIR", "XDG_CACHE_HOME", "SBOX_STATE_DIR", "XDG_STATE_HOME")


class Place(NamedTuple):
    directory: str
    name: str
    idle: float


def place(env: Mapping[str, str]) -> Place | None:
    """Where this run's kept helper listens; None when none is to be kept."""
    try:
        idle = float(env.get("SBOX_DOCKER_HELPER_IDLE", IDLE))
    except ValueError:
        idle = IDLE
    if not idle > 0:
        return None
    from sbox_shim import compiled, kept
    from sbox_shim.paths import sbox_dir

    directory = os.path.join(sbox_dir("state", env), "docker")
    if not directory.startswith("/") or compiled.in_a_project(directory):
        return None
    parts = [sys.executable, str(os.getuid())]
    try:
        parts += _code()
    except OSError:
        return None
    given = helper_env(env)
    parts += [f"{name}={given.get(name, '')}" for name in DOCKER_VARS]
    return Place(directory, kept.digest("\0".join(parts).encode("utf-8", "surrogateescape"))[:32], idle)


def helper_env(env: Mapping[str, str]) -> dict[str, str]:
    """What a helper is given of the run's environment (DOCKER_VARS), PATH with only the entries
    no sandbox could have filled: all the helper looks up on it is a pull's credential helper, which
    it finds only there (dockerapi.pull). So one helper serves the runs of projects whose PATH
    differs only in a venv's or a project's own directories: each project with its venv activated
    no longer starts a helper of its own, and pays the SDK's import."""
    from sbox_shim.paths import sbox_dir
    from sbox_shim.trust.written import network_path

    given = {name: env[name] for name in DOCKER_VARS if name in env}
    if "PATH" in given:
        given["PATH"] = network_path(given["PATH"], (os.path.realpath(sbox_dir("cache", env)),))
    return given


def _code() -> list[str]:
    """What the helper runs: sbox's code (every source file, as the plan cache counts it) and the
    Docker SDK's version file (found on sys.path, not imported)."""
    from sbox_shim import compiled

    here = repr(compiled.fact("code", compiled.PACKAGE, ""))
    for entry in sys.path:
        candidate = os.path.join(entry, "docker", "version.py")
        if entry.startswith("/") and os.path.isfile(candidate):
            return [here, _identity(candidate)]
    raise OSError("no Docker SDK")


def _identity(path: str) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _directory(where: Place, make: bool) -> int | None:
    """A descriptor of the socket's directory if it is this user's and no one else can write it."""
    if make:
        try:
            os.makedirs(where.directory, mode=0o700, exist_ok=True)
        except OSError:
            return None
    try:
        fd = os.open(where.directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def same_host(sock: socket.socket) -> bool:
    """Is the process at the other end of `sock` this user's, outside every sandbox: in the mount
    namespace this process is in?"""
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        theirs, ours = os.stat(f"/proc/{pid}/ns/mnt"), os.stat("/proc/self/ns/mnt")
    except OSError:
        return False
    return pid > 0 and uid == os.getuid() and (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def reach(where: Place, hello: bytes, timeout: float = 1.0) -> socket.socket | None:
    """A connection to the kept helper, once it has answered `hello` (a ping); None if there is
    none, or it is not one to trust."""
    fd = _directory(where, make=False)
    if fd is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(f"/proc/self/fd/{fd}/{where.name}")
        if not same_host(sock):
            raise OSError("not a helper of this user's")
        sock.sendall(hello)
        size = struct.unpack(">I", _exactly(sock, 4))[0]
        if size > 4096:
            raise OSError("not a helper's answer")
        _exactly(sock, size)
        sock.settimeout(None)
        return sock
    except (OSError, struct.error):
        sock.close()
        return None
    finally:
        os.close(fd)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the helper closed")
        data += chunk
    return data


class Listener:
    """The kept helper's listening socket, bound under a temporary name and renamed into place
    (a helper started at the same moment may win the name: each serves whoever reached it)."""

    def __init__(self, sock: socket.socket, dir_fd: int, name: str, ino: int) -> None:
        self.sock, self.dir_fd, self.name, self.ino = sock, dir_fd, name, ino

    @classmethod
    def open(cls, where: Place) -> "Listener | None":
        fd = _directory(where, make=True)
        if fd is None:
            return None
        temporary = f"{where.name}.{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.umask(0o077)
            sock.bind(f"/proc/self/fd/{fd}/{temporary}")
            sock.listen(16)
            os.rename(temporary, where.name, src_dir_fd=fd, dst_dir_fd=fd)
            ino = os.stat(where.name, dir_fd=fd, follow_symlinks=False).st_ino
        except OSError:
            sock.close()
            try:
                os.unlink(temporary, dir_fd=fd)
            except OSError:
                pass
            os.close(fd)
            return None
        return cls(sock, fd, where.name, ino)

    def superseded(self) -> bool:
        """Whether the name is no longer this socket's (a helper started at the same moment
        renamed its own into place: each run that came at once started one, and those that lost
        waited, unreachable, for their whole idle time)."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False).st_ino != self.ino
        except OSError:
            return True

    def close(self) -> None:
        """Take the name away first (if it is still ours), so that no run connects to a helper
        about to go; then stop listening. Once."""
        if self.dir_fd < 0:
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread waiting in accept
        except OSError:
            pass
        try:
            if os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False).st_ino == self.ino:
                os.unlink(self.name, dir_fd=self.dir_fd)
        except OSError:
            pass
        self.sock.close()
        os.close(self.dir_fd)
        self.dir_fd = -1
