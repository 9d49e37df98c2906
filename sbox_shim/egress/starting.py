"""The egress proxy of an allowlisted step, started around the sandbox by the runner
(runner._run_staged): on bwrap when sbox listens in the sandbox's own network namespace
(netns.py), and otherwise with its unix socket (`listen_unix`).

What the sandbox needs before its command may run is its proxy ports, listened on in its
namespace: a connection made to them waits in the listen backlog until it is accepted. So while
bwrap sets the sandbox up only what making those listeners takes is loaded (`begin`: libc's setns
through _ctypes, before Python 3.12; the listeners are made with _socket and _thread, which cost next to nothing);
once it is set up `ready` makes them and lets the command go, and the proxy
itself (its modules and the policy: most of the milliseconds an allowlisted step's start costs)
is imported and started in a thread of its own, then serves the listeners. That thread waits
first, until a connection comes or DEFER has passed: a command's own start (a shell, Node's or
Python's first milliseconds) then has the CPU to itself (on two cores the import beside it made
npm's first step start 2 to 3 ms later), a command that never connects and ends meanwhile costs
no import at all, and one that connects at once waits for the import as it did. Every connection
is still decided by the proxy; none is served by anything else.
Should the proxy fail to start, its listeners are closed, so every connection is refused and
nothing leaves, and the step fails with the reason (`stop`).
"""
from __future__ import annotations

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    from sbox_shim.egress.proxy import EgressProxy
    from sbox_shim.plan import Step

    Made = tuple[int, "tuple[str, int] | str | None"]  # a listener's fd, and where it forwards (UNIX: the proxy's own)


class Starting:
    """`make_policy()` builds the proxy's policy (in the proxy's thread); `forwards` are the
    registry ports forwarded besides the proxy's own `port`."""

    def __init__(self, make_policy: Callable[[], Any], forwards: Sequence[tuple[str, int]], socket_path: str,
                 port: int = 0) -> None:
        from sbox_shim.plan import PROXY_PORT

        self.make_policy, self.forwards, self.socket_path = make_policy, list(forwards), socket_path
        self.port = port or PROXY_PORT
        self.proxy: EgressProxy | None = None
        self.started: Any = None  # a _thread lock, held until the proxy has started (or failed to)
        self.gate: Any = None  # a _thread lock: the proxy begins serving, or `stop` abandons it, not both
        self.abandoned = False
        self.problem = ""
        self.unix = False  # `listen_unix` made the socket: `stop` removes it (the run's next step makes its own)
        self.pending: list[Made] = []  # the unix socket made, its proxy not started yet (`serve`)
        self.refusal = ""  # `ready` could not make the listeners in the sandbox: why (nothing ran)

    def begin(self) -> None:
        """While bwrap sets the sandbox up: load what `ready` needs."""
        from sbox_shim.egress import netns

        netns.prepare()

    def ready(self, pid: int) -> str:
        """bwrap's hook, with the sandbox's pid once it is set up: its listeners made and the
        proxy's start begun; "" or why the command must not run."""
        import _thread

        from sbox_shim.egress import netns

        try:
            made: list[Made] = list(netns.listen_raw(pid, self.port, self.forwards))
        except OSError as e:
            self.refusal = netns.refused(e)
            return self.refusal
        self.started, self.gate = _thread.allocate_lock(), _thread.allocate_lock()
        self.started.acquire()
        _thread.start_new_thread(self._start, (made,))  # threading's import costs milliseconds here
        return ""

    def listen_unix(self, serve: bool = True) -> None:
        """Any other sandbox (docker; bwrap as an ordinary user): the proxy's unix socket, which the
        forwarder inside the sandbox connects to, made now, before the sandbox; the proxy starts in
        a thread of its own and serves it (a connection made before that waits in its backlog):
        at once, or (`serve` False) when `serve` is called, as the command is let go, so that its
        import does not hold the interpreter while sbox starts bwrap and checks its mounts.
        Raises OSError when the socket cannot be made."""
        import _socket
        import _thread
        import os

        self.unix = True
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            listener.bind(self.socket_path)
            os.chmod(self.socket_path, 0o777)  # the sandbox may run as another uid
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        self.pending = [(listener.detach(), UNIX)]
        if serve:
            self.serve()

    def serve(self) -> None:
        """Start the proxy on the unix socket `listen_unix` made (once)."""
        import _thread

        made: list[Made] = self.pending
        if not made:
            return
        self.pending = []
        self.started, self.gate = _thread.allocate_lock(), _thread.allocate_lock()
        self.started.acquire()
        _thread.start_new_thread(self._start, (made,))

    def _start(self, made: list[Made]) -> None:
        import os

        try:
            _first_connection([fd for fd, _ in made], DEFER)
            if self.abandoned:  # the step has ended meanwhile: nothing to load (read again under the gate)
                raise _Abandoned()
            import socket

            from sbox_shim.egress.proxy import EgressProxy

            unix = any(target == UNIX for _, target in made)  # the socket is made: not the proxy's to make
            proxy = EgressProxy(self.make_policy(), "" if unix else self.socket_path)
            proxy.start()
            with self.gate:
                if self.abandoned:  # the step ended before the proxy was up: nothing to serve
                    proxy.stop()
                    raise _Abandoned()
                self.proxy = proxy
                while made:
                    fd, target = made[0]
                    listener = socket.socket(fileno=fd)
                    made.pop(0)
                    if target == UNIX:
                        proxy.serve(listener, None, unix=True)
                    else:
                        assert not isinstance(target, str)
                        proxy.serve(listener, target)
        except _Abandoned:
            for fd, _ in made:
                os.close(fd)
        except Exception as e:  # its listeners closed: every connection refused
            self.problem = f"sbox could not start the egress proxy ({type(e).__name__}: {e}); the step's connections were refused"
            for fd, _ in made:
                os.close(fd)
        finally:
            self.started.release()

    def stop(self) -> tuple[list[dict[str, Any]], str]:
        """Stop the proxy: what it refused, and why it could not start (""). A proxy still loading
        when the step has ended has served no connection: it is abandoned, not waited for (a short
        command does not pay for its import)."""
        if self.unix:
            import os

            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
            for fd, _ in self.pending:  # never served: the command never ran
                os.close(fd)
            self.pending = []
        if self.started is not None and not self.started.acquire(blocking=False):
            with self.gate:
                if self.proxy is None:
                    self.abandoned = True
                    return [], ""
            self.started.acquire()
        if self.proxy is None:
            return [], self.problem
        self.proxy.stop()
        return list(self.proxy.denials), self.problem


def for_step(step: Step, socket_path: str) -> Starting:
    return Starting(lambda: policy(step), step.network.forwards, socket_path)


def policy(step: Step) -> Any:
    from sbox_shim.egress.policy import EgressPolicy

    return EgressPolicy(pins=dict(step.network.pins), ports=dict(step.network.ports),
                        explicit=frozenset(step.network.explicit))


UNIX = "unix"  # in `made`: the proxy's own unix socket, not a TCP listener
DEFER = 0.02  # seconds the proxy's import waits for a first connection before it loads anyway


def _first_connection(fds: Sequence[int], seconds: float) -> None:
    """Wait until one of the listeners has a connection waiting, or `seconds` have passed."""
    import select  # built in: no import to speak of

    try:
        poll = select.poll()
        for fd in fds:
            poll.register(fd, select.POLLIN)
        poll.poll(int(seconds * 1000))
    except (OSError, ValueError):
        pass  # then load at once


class _Abandoned(Exception):
    pass
