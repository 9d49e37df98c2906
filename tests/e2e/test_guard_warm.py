"""The persistence guard on the plan cache's warm path: a repeated command is checked too."""
from __future__ import annotations

import os

from tests.support.trust import trust

from .test_plan_cache import Sbox, sbox  # noqa: F401  (the fixture)

PLANT = "import os; os.makedirs('.vscode', exist_ok=True); open('.vscode/tasks.json', 'w').write('{}'); os.mkfifo('p.fifo')"


def test_a_warm_run_is_guarded_as_the_cold_one(sbox: Sbox) -> None:  # noqa: F811
    trust(sbox.root / "sbox.yaml")
    cold, warm = sbox.run_twice("/usr/bin/python3", "-c", PLANT)
    assert cold.returncode == 0 and warm.returncode == 0, f"{cold}\n{warm}"
    for run in (cold, warm):
        assert "sbox: quarantined .vscode/tasks.json (created by the sandbox)" in run.stderr, run
        assert "sbox: quarantined p.fifo (created by the sandbox, fifo)" in run.stderr, run
    assert not os.path.lexists(sbox.root / ".vscode") and not os.path.lexists(sbox.root / "p.fifo")
    assert len(os.listdir(sbox.state / "quarantine")) == 2
