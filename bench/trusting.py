"""Benches opt projects in as a user does: write the config, then `sbox trust` it."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping


def trust(env: Mapping[str, str], *paths: Path) -> None:
    """Record trust in these files in the sbox state directory that `env` names."""
    from sbox_shim.trust.cmd import trust_paths

    out = io.StringIO()
    if trust_paths([str(p) for p in paths], dict(env), out=out) != 0:
        raise SystemExit(f"cannot trust {', '.join(map(str, paths))}:\n{out.getvalue()}")
