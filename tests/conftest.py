"""Shared fixtures: a fake HOME that makes touching the real one fail, and the backends."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REAL_HOME = os.path.expanduser("~")
REQUIRED = {b for b in os.environ.get("SBOX_REQUIRE_BACKENDS", "").split(",") if b}


@pytest.fixture(autouse=True)
def fake_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with HOME, caches and state in a temp dir; the real HOME is off limits."""
    base = tmp_path_factory.mktemp("home")
    home = base / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SBOX_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("SBOX_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("SBOX_USER_CONFIG", str(base / "user-config.yaml"))
    monkeypatch.setenv("SBOX_QUIET", "1")
    # Each test has a state directory of its own, so a kept docker helper serves one test: it
    # ends soon after (tests of the kept helper set their own).
    monkeypatch.setenv("SBOX_DOCKER_HELPER_IDLE", "2")
    # Toolchains installed under the real HOME stay reachable, read-only, by their own variables.
    for name, default in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo"), ("PYENV_ROOT", ".pyenv")):
        if name not in os.environ and os.path.isdir(os.path.join(REAL_HOME, default)):
            monkeypatch.setenv(name, os.path.join(REAL_HOME, default))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return home


def _docker_reason() -> str | None:
    from sbox_shim.backends import docker

    return docker.unavailable()


def _bwrap_reason() -> str | None:
    try:
        from sbox_shim.backends import bwrap
    except ImportError as exc:
        return f"bwrap backend not importable: {exc}"
    return bwrap.unavailable()  # type: ignore[no-any-return]


_REASONS: dict[str, str | None] = {}


def backend_reason(name: str) -> str | None:
    if name not in _REASONS:
        _REASONS[name] = {"docker": _docker_reason, "bwrap": _bwrap_reason}[name]()
    return _REASONS[name]


def require_backend(name: str) -> None:
    """Skip (with the reason) when a backend is missing here; fail when CI requires it."""
    reason = backend_reason(name)
    if reason is None:
        return
    if name in REQUIRED:
        pytest.fail(f"backend {name} is required (SBOX_REQUIRE_BACKENDS) but unusable: {reason}")
    pytest.skip(f"backend {name} unusable here: {reason}")


@pytest.fixture(params=["docker", "bwrap"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over every backend: the conformance contract."""
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
def docker_backend() -> str:
    require_backend("docker")
    return "docker"


@pytest.fixture
def bwrap_backend() -> str:
    require_backend("bwrap")
    return "bwrap"


@pytest.fixture
def sbox_bin() -> str:
    """The installed `sbox` console script next to this interpreter."""
    path = os.path.join(os.path.dirname(sys.executable), "sbox")
    if not os.path.exists(path):
        path = shutil.which("sbox") or ""
    assert path, "sbox console script not installed in this environment"
    return path
