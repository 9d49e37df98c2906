"""The egress proxy of an allowlisted bwrap step started while its command starts
(egress/starting.py): the sandbox's proxy port is listened on before the command runs, a
connection made before the proxy serves waits and is then decided by the proxy, and a proxy that
cannot start leaves every connection refused. Real sandboxes, as root (sbox listens in the
sandbox's namespace only then); nothing here leaves the sandbox."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sbox_shim.backends import bwraprun
from sbox_shim.egress import netns, starting
from sbox_shim.plan import PROXY_PORT, Network, Step

from conftest import require_backend
from .helpers import PY

# Inside: one CONNECT to the proxy port at once, with what came back (or how it failed).
ASK = r"""
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", %d), timeout=20)
    s.sendall(b"CONNECT evil.sbox.test:443 HTTP/1.1\r\nHost: evil.sbox.test:443\r\n\r\n")
    head = s.recv(4096).split(b"\r\n", 1)[0].decode()
    print("answer: " + head if head else "closed")
except OSError as e:
    print("failed: %%s" %% type(e).__name__)
""" % PROXY_PORT


def _options(tmp_path: Path) -> list[str]:
    # a root as sbox makes it (read-only once set up: mountcheck waits for that), its own network
    return ["--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--bind", str(tmp_path), str(tmp_path), "--remount-ro", "/"]


def _step(tmp_path: Path) -> Step:
    return Step("download", (PY, "-c", ASK), "default", "test", "sandbox", str(tmp_path), (),
                Network("proxy"))


def _run(tmp_path: Path, proxy: starting.Starting) -> tuple[int, str]:
    """The sandbox held, the proxy's `begin` while bwrap sets it up, then its `ready` hook: as
    bwrap.run does."""
    out = tmp_path / "out"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/bin/sh", "-c", f'{PY} -c "$1" > {out}', "sh", ASK])
    proxy.begin()
    code, _ = bwraprun.finish(held, ready=proxy.ready)
    return code, out.read_text().strip()


@pytest.fixture(autouse=True)
def _root() -> None:
    require_backend("bwrap")
    if not netns.usable():
        pytest.skip("sbox listens in the sandbox's namespace as root only (else the bridge runs)")


def test_a_connection_made_before_the_proxy_serves_waits_and_is_decided_by_it(tmp_path: Path) -> None:
    step = _step(tmp_path)

    def slow() -> Any:  # the proxy's start, slower than the command's first connection
        time.sleep(1.0)
        return starting.policy(step)

    proxy = starting.Starting(slow, step.network.forwards, "")
    code, said = _run(tmp_path, proxy)
    denials, problem = proxy.stop()
    assert code == 0 and problem == ""
    assert said.startswith("answer: ") and " 403 " in said + " ", said  # the proxy's refusal
    assert [d["host"] for d in denials] == ["evil.sbox.test"]


def test_a_proxy_that_cannot_start_leaves_every_connection_refused(tmp_path: Path) -> None:
    def broken() -> Any:
        time.sleep(0.5)
        raise RuntimeError("no policy")

    proxy = starting.Starting(broken, (), "")
    code, said = _run(tmp_path, proxy)
    denials, problem = proxy.stop()
    assert said in ("closed", "failed: ConnectionResetError", "failed: ConnectionRefusedError"), said
    assert denials == [] and "could not start the egress proxy" in problem and "no policy" in problem


def test_a_step_that_ends_before_the_proxy_is_up_does_not_wait_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`true` under an allowlist: the command ends while the proxy still loads. `stop` returns at
    once, and the proxy, once loaded, serves nothing: its listeners are closed."""
    import threading

    monkeypatch.setattr(starting, "DEFER", 0)  # loading at once: the command ends while it loads
    loaded = threading.Event()
    release = threading.Event()

    def slow() -> Any:
        release.wait(30)
        loaded.set()
        return starting.policy(_step(tmp_path))

    proxy = starting.Starting(slow, (), "")
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/bin/true"])
    proxy.begin()
    code, _ = bwraprun.finish(held, ready=proxy.ready)
    assert code == 0
    assert proxy.stop() == ([], "") and not loaded.is_set()  # not waited for
    release.set()
    assert loaded.wait(30)
    proxy.started.acquire()  # the proxy's thread has ended: abandoned, nothing served
    assert proxy.proxy is None and proxy.abandoned


def test_the_proxy_loads_when_the_first_connection_comes_and_not_for_a_step_that_made_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's import waits for a connection (or DEFER, made long here): the command's start
    does not share the CPU with it. The command marks the moment it is about to connect; the
    policy, built as the proxy loads, finds the mark there. A step that ends without connecting
    never loads the proxy."""
    monkeypatch.setattr(starting, "DEFER", 60)
    mark = tmp_path / "connecting"
    step = _step(tmp_path)
    seen: list[bool] = []

    def policy() -> Any:
        seen.append(mark.exists())
        return starting.policy(step)

    proxy = starting.Starting(policy, (), "")
    out = tmp_path / "out"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), [
        "/bin/sh", "-c", f'sleep 0.5; : > {mark}; {PY} -c "$1" > {out}', "sh", ASK])
    proxy.begin()
    code, _ = bwraprun.finish(held, ready=proxy.ready)
    denials, problem = proxy.stop()
    said = out.read_text().strip()
    assert code == 0 and problem == "" and seen == [True]
    assert said.startswith("answer: ") and " 403 " in said + " ", said  # decided by the proxy
    assert [d["host"] for d in denials] == ["evil.sbox.test"]

    monkeypatch.setattr(starting, "DEFER", 2)  # far longer than `true` takes in its sandbox
    loaded: list[int] = []
    idle = starting.Starting(lambda: loaded.append(1), (), "")
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/bin/true"])
    idle.begin()
    code, _ = bwraprun.finish(held, ready=idle.ready)
    assert code == 0 and idle.stop() == ([], "")
    assert idle.started.acquire(timeout=30)  # its thread has ended, DEFER past
    assert loaded == [] and idle.proxy is None and idle.abandoned
