"""The egress proxy of an allowlisted docker step (or bwrap's as an ordinary user), started with
its unix socket first (egress/starting.py `listen_unix`): the forwarder's connection made before
the proxy serves waits and is then decided by the proxy; a proxy that cannot start leaves it
refused and says why; the socket goes with the step, so the run's next step makes its own."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from sbox_shim.egress import starting
from sbox_shim.plan import Network, Step


def _step(tmp_path: Path) -> Step:
    return Step("download", ("true",), "default", "test", "sandbox", str(tmp_path), (), Network("proxy"))


def _ask(path: Path) -> str:
    """One CONNECT through the proxy's socket, as a plain client of it: what came back."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(str(path))
            s.sendall(b"CONNECT evil.sbox.test:443 HTTP/1.1\r\nHost: evil.sbox.test:443\r\n\r\n")
            head = s.recv(4096).split(b"\r\n", 1)[0].decode()
            return "answer: " + head if head else "closed"
    except OSError as e:
        return f"failed: {type(e).__name__}"


def test_a_connection_made_before_the_proxy_serves_waits_and_is_decided_by_it(tmp_path: Path) -> None:
    step = _step(tmp_path)

    def slow() -> Any:  # the proxy's start, slower than the first connection
        time.sleep(1.0)
        return starting.policy(step)

    path = tmp_path / "egress.sock"
    proxy = starting.Starting(slow, (), str(path))
    proxy.listen_unix()
    said = _ask(path)
    denials, problem = proxy.stop()
    assert problem == "" and said.startswith("answer: ") and " 403 " in said + " ", said  # the proxy's refusal
    assert [d["host"] for d in denials] == ["evil.sbox.test"]
    assert not path.exists()


def test_a_proxy_that_cannot_start_leaves_the_connection_refused_and_says_why(tmp_path: Path) -> None:
    def broken() -> Any:
        time.sleep(0.5)
        raise RuntimeError("no policy")

    path = tmp_path / "egress.sock"
    proxy = starting.Starting(broken, (), str(path))
    proxy.listen_unix()
    said = _ask(path)
    denials, problem = proxy.stop()
    assert said in ("closed", "failed: ConnectionResetError", "failed: ConnectionRefusedError"), said
    assert denials == [] and "could not start the egress proxy" in problem and "no policy" in problem


def test_the_next_step_of_the_run_makes_its_own_socket(tmp_path: Path) -> None:
    """pip's one-phase install falling back to its download phase: two allowlisted steps, one path."""
    path = tmp_path / "egress.sock"
    for _ in range(2):
        proxy = starting.for_step(_step(tmp_path), str(path))
        proxy.listen_unix()
        assert _ask(path).startswith("answer: ")
        proxy.stop()
