"""The egress proxy of an allowlisted step on bwrap when sbox listens in the sandbox's own network
namespace (netns.py): started around the sandbox by the runner (runner._run_staged).

What the sandbox needs before its command may run is its proxy ports, listened on in its
namespace: a connection made to them waits in the listen backlog until it is accepted. So while
bwrap sets the sandbox up only what making those listeners takes is loaded (`begin`: socket,
threading, ctypes); once it is set up `ready` makes them and lets the command go, and the proxy
itself (its modules and the policy: most of the milliseconds an allowlisted step's start costs)
is imported and started in a thread of its own while the command starts, then serves the
listeners. Every connection is still decided by the proxy; none is served by anything else.
Should the proxy fail to start, its listeners are closed, so every connection is refused and
nothing leaves, and the step fails with the reason (`stop`).
"""
from __future__ import annotations

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    import socket
    import threading
    from typing import Any

    from sbox_shim.egress.proxy import EgressProxy
    from sbox_shim.plan import Step


class Starting:
    def __init__(self, step: Step, socket_path: str) -> None:
        self.step, self.socket_path = step, socket_path
        self.proxy: EgressProxy | None = None
        self.thread: threading.Thread | None = None
        self.problem = ""

    def begin(self) -> None:
        """While bwrap sets the sandbox up: load what `ready` needs."""
        import socket  # noqa: F401
        import threading  # noqa: F401

        from sbox_shim.egress import netns

        netns.prepare()

    def ready(self, pid: int) -> str:
        """bwrap's hook, with the sandbox's pid once it is set up: its listeners made and the
        proxy's start begun; "" or why the command must not run."""
        import threading

        from sbox_shim.egress import netns
        from sbox_shim.plan import PROXY_PORT

        try:
            made = netns.listen(pid, PROXY_PORT, self.step.network.forwards)
        except OSError as e:
            return netns.refused(e)
        self.thread = threading.Thread(target=self._start, args=(made,), name="sbox-egress-start", daemon=True)
        self.thread.start()
        return ""

    def _start(self, made: list[tuple[socket.socket, tuple[str, int] | None]]) -> None:
        try:
            from sbox_shim.egress.proxy import EgressProxy

            proxy = EgressProxy(policy(self.step), self.socket_path)
            proxy.start()
            self.proxy = proxy
            while made:
                listener, target = made.pop(0)
                proxy.serve(listener, target)
        except Exception as e:  # its listeners closed: every connection refused
            self.problem = f"sbox could not start the egress proxy ({type(e).__name__}: {e}); the step's connections were refused"
            for listener, _ in made:
                listener.close()

    def stop(self) -> tuple[list[dict[str, Any]], str]:
        """Stop the proxy (once it has started): what it refused, and why it could not start ("")."""
        if self.thread is not None:
            self.thread.join()
        if self.proxy is None:
            return [], self.problem
        self.proxy.stop()
        return list(self.proxy.denials), self.problem


def policy(step: Step) -> Any:
    from sbox_shim.egress.policy import EgressPolicy

    return EgressPolicy(pins=dict(step.network.pins), ports=dict(step.network.ports),
                        explicit=frozenset(step.network.explicit))
