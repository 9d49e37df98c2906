"""Conformance fixtures: every test drives the real `sbox` and must leave nothing behind."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

from .helpers import STARTED, Runs, docker_client, docker_containers, ours

GONE_WITHIN = 10.0  # seconds for the daemon to finish a removal that is under way (not a timing claim)


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
    deadline = time.monotonic() + GONE_WITHIN
    while left and time.monotonic() < deadline:  # a removal sbox's watcher has in progress
        time.sleep(0.1)
        left = tracker.containers()
    if left:
        import docker

        client = docker_client()
        for name in left:
            try:
                client.containers.get(name).remove(force=True)  # keep the machine clean, then fail
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # gone meanwhile, or its removal under way
                    raise
        pytest.fail(f"containers left behind by sbox: {left}")
