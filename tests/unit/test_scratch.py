"""scratch.py: a plan's `run` directories are made empty for each run and removed after it."""
from __future__ import annotations

import os
from pathlib import Path

from sbox_shim import scratch
from sbox_shim.plan import Mount, Network, Plan, Step


def _plan(parent: str) -> Plan:
    step = Step(label="download", argv=("pip", "download", "--dest", parent, "x"), profile="p", reason="",
                mode="sandbox", cwd="/", env=(("WHEELS", parent + "/sub"), ("OTHER", parent + "x")),
                network=Network("off"), mounts=(Mount(parent, parent, readonly=False, kind="run"),))
    return Plan((step,), "bwrap", None, "/")


def test_each_run_gets_its_own_empty_directory_removed_after_it(tmp_path: Path) -> None:
    parent = str(tmp_path / "cache" / "pip" / "runs")
    stale = Path(parent) / "sbox-run-999999999-abc"  # left by an sbox that was killed: swept
    stale.mkdir(parents=True)
    (stale / "victim-99.0-py3-none-any.whl").write_text("planted")
    run_dir = str(tmp_path / "sbox-run-1-aa")
    plan, made = scratch.instantiate(_plan(parent), run_dir)
    here = os.path.join(parent, "sbox-run-1-aa")
    assert made == [here] and os.listdir(here) == [] and not stale.exists()
    step = plan.steps[0]
    assert step.argv == ("pip", "download", "--dest", here, "x")
    assert dict(step.env) == {"WHEELS": here + "/sub", "OTHER": parent + "x"}
    assert step.mounts == (Mount(here, here, readonly=False, kind="cache"),)
    locked = Path(here) / "d"  # what a sandbox may leave: a directory it made unreadable
    locked.mkdir()
    (locked / "f").write_text("x")
    locked.chmod(0)
    scratch.remove(made)
    assert os.listdir(parent) == []


def test_a_plan_without_run_directories_is_unchanged(tmp_path: Path) -> None:
    plan = _plan(str(tmp_path))
    plan = Plan((plan.steps[0].replace(mounts=()),), "bwrap", None, "/")
    assert scratch.instantiate(plan, str(tmp_path / "sbox-run-1-aa")) == (plan, [])
