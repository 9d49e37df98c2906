"""The Docker SDK in a process of its own, started as soon as sbox knows that a run uses docker.

Importing the SDK (requests, urllib3, ssl, http.client: ~95 ms of CPU) and agreeing the API version
with the daemon came after planning, one after the other, on every docker run. Now sbox forks a helper
the moment it knows the backend (the command line's --backend, or the config): the helper imports the
SDK, connects and removes what killed runs left, on the other core, while sbox plans. sbox then makes
each request through it (`Remote`: the APIClient's methods that dockerapi.Box calls, one request
each); an attached stream comes back as the socket itself (SCM_RIGHTS), so stdio flows between sbox
and the daemon as before. The helper decides nothing: it carries out the requests sbox makes from
its plan, and it sees no project file.

It is also the lifeline of the containers it creates (in place of dockerwatch.py's process per
container): in a session of its own, its stdio on /dev/null, it reads its end of the socket; when
sbox's end closes (sbox exits, or is killed), the helper removes every container sbox has not
removed. The helper's side is dockerserve.py; dockerkept.py keeps it for the next runs, which then
reach it in place of starting their own.
Only for a daemon on a unix socket (an attached TLS stream cannot be handed over); otherwise sbox
uses the SDK itself, as before.
"""
from __future__ import annotations

import itertools
import marshal
import os
import signal
import socket
import struct
import threading
from typing import Any, Mapping

FD = "\0fd"  # a response whose value is the file descriptor that came with it
_HELPER: list["Remote"] = []


def start(env: Mapping[str, str] | None = None) -> None:
    """Reach the kept helper (dockerkept.py), or start one (once per sbox process)."""
    env = os.environ if env is None else env
    host = env.get("DOCKER_HOST", "")
    if _HELPER or (host and not host.startswith("unix://")):
        return
    from sbox_shim.backends import dockerkept

    where = dockerkept.place(env)
    if where is not None:
        kept = dockerkept.reach(where, frame((-1, "ping", ())))
        if kept is not None:
            _HELPER.append(Remote(kept, 0))
            return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = _spawn(theirs, env, where)
    except OSError:
        ours.close()
        return
    finally:
        theirs.close()
    _HELPER.append(Remote(ours, pid))


SERVE = "import sys; from sbox_shim.backends import dockerserve; dockerserve.main(sys.argv[1:])"


def _spawn(sock: socket.socket, env: Mapping[str, str], where: Any) -> int:
    """A fresh interpreter (-I: nothing from the project's directory or the environment is
    imported) in a session of its own, its stdio on /dev/null, holding only its end of `sock`."""
    import sys

    from sbox_shim.backends.dockerkept import helper_env

    # What the helper gets of the run's environment: what its socket's name digests, and the
    # locale; no credential (a kept helper outlives the run that started it).
    kept = {**helper_env(env), **{name: env[name] for name in ("LANG", "LC_ALL") if name in env}}
    sock.set_inheritable(True)
    argv = [sys.executable, "-I", "-c", SERVE, str(sock.fileno())]
    if where is not None:
        argv += [where.directory, where.name, repr(where.idle)]
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        return os.posix_spawn(sys.executable, argv, kept,
                              file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)], setsid=True,
                              setsigmask=(), setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    finally:
        os.close(null)


def remote() -> "Remote | None":
    return _HELPER[0] if _HELPER else None


class RemoteError(Exception):
    """An SDK error raised in the helper: its class name, text, HTTP status and explanation."""

    def __init__(self, kind: str, text: str, status: int | None = None, explanation: str | None = None) -> None:
        super().__init__(text)
        self.kind, self.status_code, self.explanation = kind, status, explanation


class Remote:
    """The APIClient's methods that sbox uses, each a request through the helper."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock, self.pid = sock, pid
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.slots: dict[int, list[Any]] = {}  # request id -> [event, result]
        self.gone = False  # the helper has exited: every call fails at once
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def call(self, method: str, *args: Any) -> Any:
        slot: list[Any] = [threading.Event(), None]
        with self.lock:
            if self.gone:
                raise RemoteError("gone", "sbox's docker helper exited")
            rid = next(self.ids)
            self.slots[rid] = slot
            try:
                self.sock.sendall(frame((rid, method, args)))
            except OSError:
                self.slots.pop(rid, None)
                raise RemoteError("gone", "sbox's docker helper is gone") from None
        slot[0].wait()
        ok, value = slot[1]
        if ok:
            return value
        raise RemoteError(*value)

    def _read(self) -> None:
        """Hand each response to its caller; if the helper goes, fail every caller still waiting."""
        stream = Stream(self.sock)
        while (message := stream.next()) is not None:
            rid, ok, value = message
            if value == FD:
                value = stream.fds.pop(0)
            slot = self.slots.pop(rid, None)
            if slot is not None:
                slot[1] = (ok, value)
                slot[0].set()
        with self.lock:
            self.gone = True
            for slot in self.slots.values():
                slot[1] = (False, ("gone", "sbox's docker helper exited", None, None))
                slot[0].set()
            self.slots.clear()

    # the APIClient's signatures, as dockerapi.Box and dockerimage call them
    def ping(self) -> None:
        self.call("ping")

    def create(self, config: dict[str, Any]) -> str:
        return str(self.call("create", config))

    def attach_socket(self, container: str, params: dict[str, int]) -> socket.socket:
        return socket.socket(fileno=self.call("attach", container, params))

    def start(self, container: str) -> None:
        self.call("start", container)

    def wait(self, container: str) -> dict[str, Any]:
        return dict(self.call("wait", container))

    def kill(self, container: str, signal: str) -> None:
        self.call("kill", container, signal)

    def resize(self, container: str, height: int, width: int) -> None:
        self.call("resize", container, height, width)

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"State": dict(self.call("state", container))}

    def remove_container(self, container: str, force: bool = True) -> None:
        self.call("remove", container, force)

    def pull(self, image: str) -> None:
        self.call("pull", image)

    def build(self, context: bytes, tag: str, labels: dict[str, str]) -> None:
        self.call("build", context, tag, labels)


def frame(message: Any) -> bytes:
    data = marshal.dumps(message)
    return struct.pack(">I", len(data)) + data


class Stream:
    """Length-prefixed marshal messages from a socket, with the descriptors that came along."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""
        self.fds: list[int] = []

    def next(self) -> Any:
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack(">I", self.buffer[:4])[0]
                if len(self.buffer) >= 4 + size:
                    data, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                    return marshal.loads(data)
            try:
                chunk, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
            except OSError:
                return None
            self.fds.extend(fds)
            if not chunk:
                return None
            self.buffer += chunk
