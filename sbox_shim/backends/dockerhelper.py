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
removed, and exits.
Only for a daemon on a unix socket (an attached TLS stream cannot be handed over), and only forked
while sbox has a single thread; otherwise sbox uses the SDK itself, as before.
"""
from __future__ import annotations

import itertools
import marshal
import os
import signal
import socket
import struct
import threading
from typing import Any

FD = "\0fd"  # a response whose value is the file descriptor that came with it
_HELPER: list["Remote"] = []


def start(env: dict[str, str] | None = None) -> None:
    """Fork the helper (once per sbox process), if this is a process it may be forked from."""
    host = (os.environ if env is None else env).get("DOCKER_HOST", "")
    if _HELPER or (host and not host.startswith("unix://")) or threading.active_count() > 1:
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the helper: never returns into sbox's code
        code = 1
        try:
            ours.close()
            _serve(theirs)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    _HELPER.append(Remote(ours, pid))


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
                self.sock.sendall(_frame((rid, method, args)))
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
        stream = _Stream(self.sock)
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


def _frame(message: Any) -> bytes:
    data = marshal.dumps(message)
    return struct.pack(">I", len(data)) + data


class _Stream:
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


class _Helper:
    """The helper's side: one thread per request (a wait blocks while its container runs)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.send = sock, threading.Lock()
        self.api: Any = None
        self.broken: tuple[str, str, None, None] | None = None
        self.live: set[str] = set()  # created here and not removed: removed if sbox goes
        self.creating = 0
        self.closing = False
        self.changed = threading.Condition()

    def connect(self) -> None:
        from sbox_shim.backends import docker, dockerapi

        try:
            self.api = dockerapi.connect()
        except Exception as exc:  # the SDK raises many types for "no daemon"
            self.broken = ("connect", dockerapi.short(exc), None, None)
            return
        threading.Thread(target=docker.reap_stale, args=(self.api,), daemon=True).start()

    def answer(self, rid: int, method: str, args: tuple[Any, ...]) -> None:
        fds: list[int] = []
        try:
            if self.broken is not None:
                raise RemoteError(*self.broken)
            value = getattr(self, "do_" + method)(*args)
            if isinstance(value, socket.socket):
                fds, value = [value.detach()], FD
            reply = (rid, True, value)
        except RemoteError as exc:
            reply = (rid, False, (exc.kind, str(exc), exc.status_code, exc.explanation))
        except Exception as exc:
            from sbox_shim.backends import dockerapi

            explanation = getattr(exc, "explanation", None)
            reply = (rid, False, (type(exc).__name__, dockerapi.short(exc), getattr(exc, "status_code", None),
                                  None if explanation is None else str(explanation)))
        try:
            data = _frame(reply)
        except ValueError as exc:  # a value marshal cannot carry: a bug here, told to the caller
            data = _frame((rid, False, ("ValueError", f"{method}: {exc}", None, None)))
        with self.send:
            try:
                sent = socket.send_fds(self.sock, [data], fds) if fds else 0
                self.sock.sendall(data[sent:])
            except OSError:  # sbox has gone: wind_up follows
                pass
        for fd in fds:
            os.close(fd)

    def do_ping(self) -> None:
        return None

    def do_create(self, config: dict[str, Any]) -> str:
        from sbox_shim.backends import dockerapi

        with self.changed:
            self.creating += 1
        made = ""
        try:
            made = dockerapi.create(self.api, config).id
            return made
        finally:
            with self.changed:
                self.creating -= 1
                if made:
                    self.live.add(made)
                self.changed.notify_all()
            if made and self.closing:
                self.remove_all()

    def do_attach(self, container: str, params: dict[str, int]) -> socket.socket:
        sock = self.api.attach_socket(container, params=params)
        raw: socket.socket = getattr(sock, "_sock", sock)
        return socket.socket(fileno=os.dup(raw.fileno()))  # closed once sent; ours stays with the SDK's object

    def do_start(self, container: str) -> None:
        self.api.start(container)

    def do_wait(self, container: str) -> dict[str, Any]:
        return {"StatusCode": int(self.api.wait(container).get("StatusCode", 125))}

    def do_kill(self, container: str, sig: str) -> None:
        self.api.kill(container, signal=sig)

    def do_resize(self, container: str, height: int, width: int) -> None:
        self.api.resize(container, height=height, width=width)

    def do_state(self, container: str) -> dict[str, Any]:
        state = self.api.inspect_container(container)["State"]
        return {"Pid": int(state.get("Pid") or 0), "Running": bool(state.get("Running"))}

    def do_remove(self, container: str, force: bool) -> None:
        self.api.remove_container(container, force=force)
        with self.changed:
            self.live.discard(container)

    def do_pull(self, image: str) -> None:
        self.api.pull(image)

    def do_build(self, context: bytes, tag: str, labels: dict[str, str]) -> None:
        import io

        from sbox_shim.backends import dockerapi

        dockerapi.build(self.api, io.BytesIO(context), tag, labels)

    def remove_all(self) -> None:
        with self.changed:
            left, self.live = list(self.live), set()
        for container in left:
            try:
                self.api.remove_container(container, force=True)
            except Exception:  # gone already
                pass

    def wind_up(self) -> None:
        """sbox has gone: remove what it left, including what a create in flight makes."""
        self.closing = True
        if self.api is None:
            return
        self.remove_all()
        with self.changed:
            self.changed.wait_for(lambda: self.creating == 0, timeout=65)
        self.remove_all()


def _serve(sock: socket.socket) -> None:
    """The helper's life: detach from sbox's session and stdio, connect, answer until EOF."""
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    helper = _Helper(sock)
    helper.connect()
    stream = _Stream(sock)
    while (message := stream.next()) is not None:
        threading.Thread(target=helper.answer, args=message, daemon=True).start()
    helper.wind_up()
