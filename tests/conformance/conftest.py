"""Conformance fixtures: every test drives the real `sbox` and must leave nothing behind."""
from __future__ import annotations

from typing import Iterator

import pytest

from .helpers import STARTED, Runs, docker_client, docker_containers, ours


@pytest.fixture(scope="session", autouse=True)
def no_containers_left_after_the_suite() -> Iterator[None]:
    """After the whole suite: no container labelled io.sbox.run from any run this suite started.

    (Filtered by our own sbox pids so that other suites using this daemon at the same time
    cannot make it fail.)"""
    yield
    if not STARTED:
        return
    try:
        names = docker_containers()
    except Exception:  # no daemon: nothing can be left
        return
    left = ours(names, STARTED)
    assert not left, f"containers left behind by sbox after the suite: {left}"


@pytest.fixture
def runs(sbox_bin: str, backend: str) -> Iterator[Runs]:
    """`sbox run --backend BACKEND` for this test; afterwards no container of its runs may remain."""
    tracker = Runs(sbox_bin, backend)
    yield tracker
    left = tracker.containers()
    if left:
        client = docker_client()
        for name in left:
            client.containers.get(name).remove(force=True)  # keep the machine clean, then fail
        pytest.fail(f"containers left behind by sbox: {left}")
