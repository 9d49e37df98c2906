"""Trust a project's config as its user would (`sbox trust`), after a test writes it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def trust(*paths: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Record trust in these files (or every untrusted input of these project directories) in the
    sbox state directory that `env` (default: this process's environment) names."""
    try:
        from sbox_shim import trust as store
    except ImportError:  # the trust store has not landed on this branch yet
        return
    store.trust_paths([str(p) for p in paths], dict(os.environ if env is None else env))
