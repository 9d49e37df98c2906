"""The real yarn releases the tests run: fetched by run-tests.sh into .tools (npm pack, pinned
by version and integrity). A test that needs one fails where CI requires the backends (a skipped
test must not pass for a run one), and is skipped elsewhere, with the command that fetches them."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / ".tools"
CLASSIC = "1.22.22"
BERRY = "4.18.1"
BERRY_3 = "3.8.7"


def bindir(version: str) -> Path:
    """The `bin` directory of yarn `version`, whose `yarn` runs it with the machine's node."""
    found = TOOLS / f"yarn-{version}" / "package" / "bin"
    if (found / "yarn.js").is_file() and shutil.which("node"):
        return found
    why = f"yarn {version} is not in {TOOLS} (./run-tests.sh fetches it) or node is missing"
    if os.environ.get("SBOX_REQUIRE_BACKENDS"):
        pytest.fail(why)
    pytest.skip(why)


def path_with(version: str) -> str:
    return f"{bindir(version)}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
