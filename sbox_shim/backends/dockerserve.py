"""The docker helper's side (dockerhelper.py has sbox's): the SDK's client, and the runs it serves.

Each run's connection is a session: its requests are answered on threads of their own (a wait
blocks while its container runs), and the containers made for it are removed when its end closes,
however the run ended. A helper that is kept (dockerkept.py) serves the runs that reach it until
none has for its idle time.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

from sbox_shim.backends.dockerhelper import FD, RemoteError, frame, Stream


LOOK = 2.0  # seconds between an idle helper's looks at whether its socket's name is still its own


class _Daemon:
    """What the helper's sessions share: the SDK's client, and how many runs it serves now."""

    def __init__(self) -> None:
        self.api: Any = None
        self.broken: tuple[str, str, None, None] | None = None
        self.changed = threading.Condition()
        self.sessions = 0
        self.helpers: set["_Helper"] = set()  # the sessions' sides, for `terminate`
        self.listener: Any = None  # a kept helper's (dockerkept.Listener)
        self.last = time.monotonic()
        self.closing = False

    def connect(self) -> None:
        from sbox_shim.backends import dockerapi

        try:
            self.api = dockerapi.connect()
        except Exception as exc:  # the SDK raises many types for "no daemon"
            self.broken = ("connect", dockerapi.short(exc), None, None)
            return
        self.reap()

    def reap(self) -> None:
        """Remove, on a thread of its own, what killed runs left."""
        from sbox_shim.backends import docker

        threading.Thread(target=docker.reap_stale, args=(self.api,), daemon=True).start()

    def enter(self) -> bool:
        with self.changed:
            if self.closing:
                return False
            self.sessions += 1
            return True

    def leave(self) -> None:
        with self.changed:
            self.sessions -= 1
            self.last = time.monotonic()
            self.changed.notify_all()

    def terminate(self) -> None:
        """SIGTERM: every session's containers removed, then the helper ends (the runs it served
        fail closed: their containers are gone)."""
        with self.changed:
            self.closing = True
            helpers = list(self.helpers)
        if self.listener is not None:
            self.listener.close()
        for helper in helpers:
            helper.wind_up()
        os._exit(0)

    def wait_idle(self, idle: float, superseded: Any = lambda: False) -> None:
        """Return once no run has been served for `idle` seconds, or none is served and
        `superseded()` (another helper started at the same moment has taken the socket's name:
        no run can reach this one any more); from then on, none is."""
        with self.changed:
            while True:
                left = idle - (time.monotonic() - self.last)
                if self.sessions == 0 and (left <= 0 or superseded()):
                    self.closing = True
                    return
                self.changed.wait(min(left, LOOK) if self.sessions == 0 else None)


class _Helper:
    """The helper's side of one run's connection: one thread per request (a wait blocks while its
    container runs), and the containers made for that run."""

    def __init__(self, sock: socket.socket, daemon: _Daemon) -> None:
        self.sock, self.send = sock, threading.Lock()
        self.api: Any = daemon.api
        self.broken = daemon.broken
        self.live: set[str] = set()  # created here and not removed: removed if sbox goes
        self.creating = 0
        self.closing = False
        self.changed = threading.Condition()

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
            data = frame(reply)
        except ValueError as exc:  # a value marshal cannot carry: a bug here, told to the caller
            data = frame((rid, False, ("ValueError", f"{method}: {exc}", None, None)))
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
        from sbox_shim.backends import dockerapi

        dockerapi.pull(self.api, image)

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


def main(args: list[str]) -> None:
    """`python -I -c SERVE FD [DIRECTORY NAME IDLE]` (dockerhelper._spawn): serve, then exit."""
    from sbox_shim.backends.dockerkept import Place

    where = Place(args[1], args[2], float(args[3])) if len(args) == 4 else None
    try:
        serve(socket.socket(fileno=int(args[0])), where)
    finally:
        os._exit(0)  # no teardown: a request thread may still hold the SDK


def serve(sock: socket.socket, where: Any = None) -> None:
    """The helper's life: connect, answer until the run's end closes; then, if it is kept
    (`where`: dockerkept.Place), serve the runs that reach it until it is idle."""
    os.chdir("/")
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_IGN)
    daemon = _Daemon()
    signal.signal(signal.SIGTERM, lambda signum, frame: daemon.terminate())
    daemon.connect()
    listener = None
    if where is not None and daemon.broken is None:
        from sbox_shim.backends import dockerkept

        listener = daemon.listener = dockerkept.Listener.open(where)
        if listener is not None:
            threading.Thread(target=_accept, args=(listener, daemon), daemon=True).start()
    daemon.enter()
    _session(sock, daemon)
    sock.close()
    daemon.leave()
    if listener is not None:
        daemon.wait_idle(where.idle, listener.superseded)
        listener.close()


def _session(sock: socket.socket, daemon: _Daemon) -> None:
    """One run's requests, until its end of the connection closes; then what it left goes."""
    helper = _Helper(sock, daemon)
    with daemon.changed:
        daemon.helpers.add(helper)
    stream = Stream(sock)
    while (message := stream.next()) is not None:
        threading.Thread(target=helper.answer, args=message, daemon=True).start()
    for fd in stream.fds:  # a run sends none
        os.close(fd)
    helper.wind_up()
    with daemon.changed:
        daemon.helpers.discard(helper)


def _accept(listener: Any, daemon: _Daemon) -> None:
    """The kept helper's door: a run of this user's outside every sandbox gets a session."""
    from sbox_shim.backends import dockerkept

    while True:
        try:
            conn, _ = listener.sock.accept()
        except OSError:
            return
        if not dockerkept.same_host(conn) or not daemon.enter():
            conn.close()
            continue
        threading.Thread(target=_guest, args=(conn, daemon), daemon=True).start()


def _guest(conn: socket.socket, daemon: _Daemon) -> None:
    try:
        daemon.reap()
        _session(conn, daemon)
    finally:
        conn.close()
        daemon.leave()
