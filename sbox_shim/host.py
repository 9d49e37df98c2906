"""Facts about the invoking host, gathered once so the plan builders can stay pure."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from sbox_shim.toolpath import split_path

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping


@dataclass(frozen=True)
class Host:
    uid: int
    gid: int
    user: str
    home: str
    cwd: str
    env: Mapping[str, str]
    shim_dirs: tuple[str, ...]
    python: str  # an interpreter usable inside the sandbox for the egress bridge
    python_prefix: str  # its installation prefix, mounted read-only when not under /usr
    package_dir: str  # the installed sbox_shim package
    cache_dir: str  # sbox's own package caches
    state_dir: str  # reports of denied connections, the plan cache
    own_dirs: tuple[str, ...] = ()  # sbox's own files: never writable inside a sandbox

    @classmethod
    def current(cls, env: Mapping[str, str], cwd: str | None = None) -> "Host":
        from sbox_shim.paths import sbox_dir, user_dir

        home = env.get("HOME") or os.path.expanduser("~")
        shim_dirs = tuple(d for d in split_path(env.get("SBOX_SHIM_DIRS", "")))
        base = os.path.realpath(sys.base_prefix)
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        python = os.path.join(base, "bin", version)
        if not os.path.exists(python):
            python = os.path.realpath(sys.executable)
        state_dir = sbox_dir("state", env)
        package_dir = os.path.dirname(os.path.abspath(__file__))
        from sbox_shim.config import user_config_path

        own = (state_dir, os.path.dirname(user_config_path(env)), user_dir("data", env), sys.prefix, package_dir)
        return cls(
            uid=os.getuid(),
            gid=os.getgid(),
            user=env.get("USER") or env.get("LOGNAME") or ("root" if os.getuid() == 0 else "user"),
            home=home,
            cwd=os.path.abspath(cwd or os.getcwd()),
            env=dict(env),
            shim_dirs=shim_dirs,
            python=python,
            python_prefix=base,
            package_dir=package_dir,
            cache_dir=sbox_dir("cache", env),
            state_dir=state_dir,
            own_dirs=tuple(os.path.abspath(d) for d in own),
        )
