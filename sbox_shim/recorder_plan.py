"""Writing plan-cache records of whole plans (replay.py): the cold path's side.

Such a record holds the encoded Plan and the facts to check again before it is used: those of
recorder.py for each step (sbox's code, the config files, the trust store, the toolchain, the
layout of the project's writable parts, the tool on PATH), and each path planning looked at
(probe.py), with the digest of every file it read: the opt-in files and tool configuration the
trust gate verified (a sandbox may have rewritten `.npmrc` since), package.json, the lockfiles.
A plan whose allowlist pins addresses resolved at plan time is used for PIN_TTL seconds at most.
"""
from __future__ import annotations

import os
import time

from sbox_shim import kept
from sbox_shim.compiled import FORMAT, fact
from sbox_shim.host import Host
from sbox_shim.plan import Plan

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

PIN_TTL = 300  # seconds: about the DNS TTL of the registries' CDNs; then the names are resolved anew


def store_plan(argv: Sequence[str], plan: Plan, host: Host, explicit_config: str | None,
               probed: Sequence[tuple[str, str]], run_dir: str, backend: str = "bwrap") -> str | None:
    from sbox_shim import replay
    from sbox_shim.backends import bwrap
    from sbox_shim.recorder import _watched, prepared

    path = bwrap.bwrap_path() if backend == "bwrap" else ""
    if path is None:
        return None
    target = prepared(host, argv, plan.steps)
    if target is None:
        return None
    watched: list[tuple[str, str]] = []
    for index in range(len(plan.steps)):
        watched += _watched(plan, host, explicit_config, path, index)
    from sbox_shim.runner import RUN_PREFIX

    ignored = [host.state_dir, host.cache_dir]  # sbox's own, kept by key and checked apart
    runs = os.path.join(os.path.dirname(run_dir), RUN_PREFIX)  # run directories, swept before planning
    for kind, p in probed:
        if any(p == i or p.startswith(i.rstrip("/") + "/") for i in ignored if i) or p.startswith(runs) \
                or (kind == "names" and p == os.path.dirname(run_dir)):
            continue
        watched.append((kind, p))
        if kind == "content":
            watched.append(("type", p))  # the trust gate reads no link: neither may the record
    pins = any(step.network.policy == "proxy" and step.network.pins for step in plan.steps)
    try:
        record = {
            "format": FORMAT,
            "facts": [(kind, p, fact(kind, p, host.state_dir)) for kind, p in dict.fromkeys(watched)],
            "plan": replay.encode(replay.referenced(plan, host.env)),
            "run_dir": run_dir,
            "state": host.state_dir,
            "expires": time.time() + PIN_TTL if pins else 0,
            "backend": backend,
        }
        kept.write_private(target, record)
    except (OSError, ValueError):
        return None
    return target
