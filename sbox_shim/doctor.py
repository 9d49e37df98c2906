"""`sbox doctor`: can a sandbox start here, are the shims in front, is the config valid."""
from __future__ import annotations

import os

from sbox_shim import shims
from sbox_shim.errors import SboxError

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping

BACKENDS = ("bwrap", "docker")


def backend_reason(name: str) -> str | None:
    """None when the backend works here, else why not, in one line."""
    from sbox_shim.backends.select import module

    try:
        reason = module(name).unavailable()
    except ImportError as exc:
        return f"backend module not available ({exc})"
    except Exception as exc:  # a probe that crashes is a finding, not a reason to stop the checkup
        return f"probe failed: {type(exc).__name__}: {exc}"
    return str(reason) if reason else None


def config_status(cwd: str, env: Mapping[str, str], usable: list[str]) -> tuple[bool, str]:
    """(fine, description) of the config that applies in `cwd`, against the usable backends."""
    from sbox_shim import config

    try:
        untrusted_opt_in = trust_status(cwd, env, opt_in_only=True)
        if untrusted_opt_in:
            return False, f"not trusted: {'; '.join(untrusted_opt_in)} (review, then `sbox trust`)"
        cfg = config.load(cwd, env)
    except SboxError as exc:
        return False, f"invalid: {exc}"
    if cfg.path is None:
        return True, f"none from {cwd} up (not opted in: the shims pass commands straight through)"
    text = f"{cfg.path} (valid; backend: {cfg.backend}, profiles: {', '.join(cfg.profiles) or 'none'})"
    untrusted = trust_status(cwd, env)
    if untrusted:
        return False, f"{text}; not trusted: {'; '.join(untrusted)} (review, then `sbox trust`)"
    if cfg.backend != "auto" and cfg.backend not in usable:
        return False, f"{text}; but backend {cfg.backend} is not usable here"
    return True, text


def trust_status(cwd: str, env: Mapping[str, str], opt_in_only: bool = False) -> list[str]:
    """The project's inputs that are not trusted, as `path (new|changed)`."""
    from sbox_shim import trust
    from sbox_shim.trust import gate
    from sbox_shim.paths import sbox_dir

    items = gate.opt_in(cwd) if opt_in_only else gate.project(cwd, env)
    return [f"{v.input.path} ({v.state})" for v in trust.check(items, sbox_dir("state", env))
            if v.state not in ("trusted", "empty")]


def cmd_doctor(dir: str | None, env: Mapping[str, str]) -> int:
    usable = []
    print("backends:")
    for name in BACKENDS:
        reason = backend_reason(name)
        print(f"  {name:7} {'ok' if reason is None else 'not usable: ' + reason}")
        if reason is None:
            usable.append(name)
    if "bwrap" in usable:
        from sbox_shim.backends import cgroups

        why = cgroups.unusable(1, 1)
        print(f"  limits on bwrap: {'memory and pids through a cgroup per sandbox' if not why else why}")
    if not usable:
        print("  no backend works: install bubblewrap (apt-get install bubblewrap) or start a Docker daemon")

    shims_dir = os.path.abspath(dir) if dir else shims.default_dir(env)
    path_var = env.get("PATH", os.defpath)
    where = {"first": "first on PATH", "later": "on PATH but not first", "absent": "not on PATH"}
    print(f"shims: {shims_dir} ({where[shims.position(shims_dir, path_var)]})")
    if shims.installed(shims_dir):
        for name in shims.tools():
            print(f"  {name:7} {shims.describe(*shims.status(name, shims_dir, path_var))}")
    else:
        print("  none installed: run `sbox shims install`")
    if shims.position(shims_dir, path_var) != "first":
        print(f"  to put them first: {shims.activation_hint(env)}")

    valid, text = config_status(os.getcwd(), env, usable)
    print(f"config: {text}")
    return 0 if usable and valid else 1
