"""Trust a project's config as its user would (`sbox trust`), after a test writes it."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping


def trust(*paths: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Record trust in these files (or every input of these project directories) in the sbox state
    directory that `env` (default: this process's environment) names."""
    from sbox_shim.trust.cmd import trust_paths

    out = io.StringIO()
    code = trust_paths([str(p) for p in paths], dict(os.environ if env is None else env), out=out)
    assert code == 0, out.getvalue()
