"""Pick a backend: the one asked for, or for `auto` bwrap where it works, else docker."""
from __future__ import annotations

import os
import time

from sbox_shim.errors import SandboxError

TYPE_CHECKING = False  # mypy reads this as True; typing and json cost milliseconds to import on the
if TYPE_CHECKING:  # plan cache's warm path, which picks a replayed plan's backend here (`module`)
    from types import ModuleType
    from typing import Mapping

PROBE_TTL = 24 * 3600


def module(name: str) -> ModuleType:
    if name == "docker":
        from sbox_shim.backends import docker

        return docker
    if name == "bwrap":
        from sbox_shim.backends import bwrap

        return bwrap
    raise SandboxError(f"unknown backend {name!r}; expected auto, docker or bwrap")


def _probe_cached(cache_dir: str, name: str) -> str | None:
    """`unavailable()` for a backend, remembered for a day so auto costs one probe, not one per run."""
    import json

    path = os.path.join(cache_dir, f"probe-{name}.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if time.time() - data["time"] < PROBE_TTL:
            return data["reason"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError):
        pass
    reason: str | None = module(name).unavailable()
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"time": time.time(), "reason": reason}, f)
    except OSError:
        pass
    return reason


def pick(name: str, cache_dir: str, env: Mapping[str, str]) -> ModuleType:
    if name == "docker":
        return module(name)  # its run() reaches the daemon first and fails closed with the reason
    if name != "auto":
        # A cached "works" is trusted (a sandbox that then fails to start still fails closed);
        # a cached "does not work" is probed again so the error is current.
        if _probe_cached(cache_dir, name) is None:
            return module(name)
        reason = module(name).unavailable()
        if reason:
            raise SandboxError(f"backend {name} is not usable: {reason}")
        return module(name)
    reasons = {}
    for candidate in ("bwrap", "docker"):
        # bwrap's probe is cached; docker's is cheap and the daemon may come and go.
        reason = _probe_cached(cache_dir, candidate) if candidate == "bwrap" else module(candidate).unavailable()
        if reason is None:
            return module(candidate)
        reasons[candidate] = reason
    raise SandboxError(
        "no sandbox backend works here: "
        + "; ".join(f"{k}: {v}" for k, v in reasons.items())
        + ". Install bubblewrap (apt-get install bubblewrap) or start a Docker daemon"
    )
