"""Two writable steps overlapping in one project (every backend), a red team's find: the second
step's snapshot was taken while the first one's plant was there, so when the first step's guard
had moved the plant away and the second step wrote the same bytes back, the second guard saw no
change and the plant stayed for the user's next `git commit`. Each step now compares with the
baseline of the earliest step still running when it started."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable

from .helpers import Runs
from .test_guard_repos import _commit, _hook
from tests.support.trust import trust

from .test_persistence_guard import git, husky_project, quarantines


def _wait_for(path: Path, proc: object, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert getattr(proc, "poll")() is None, "the step ended before it got there"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


WAIT = "while [ ! -e {0} ]; do sleep 0.05; done"


def _overlapping(runs: Runs, first_dir: Path, first: str, second_dir: Path,
                 second: str = "") -> tuple[subprocess.Popen[str], str, Callable[[], tuple[int, str]]]:
    """Step A (in `first_dir`) runs `first`, then runs on (a watcher, a dev server) until told to
    end; step B (in `second_dir`) starts while A runs and waits. A is let end here: (A, its stderr,
    and what lets B go on, run `second` and end, returning B's exit code and stderr)."""
    a = runs.start(first_dir, "sh", "-c", f"{first} && touch a-planted && {WAIT.format('a-go')}")
    _wait_for(first_dir / "a-planted", a)
    b = runs.start(second_dir, "sh", "-c", f"touch b-started && {WAIT.format('b-go')}" + (f" && {second}" if second else ""))
    _wait_for(second_dir / "b-started", b)
    (first_dir / "a-go").touch()
    _, err_a = a.communicate(timeout=180)

    def go_on() -> tuple[int, str]:
        (second_dir / "b-go").touch()
        _, err_b = b.communicate(timeout=180)
        return b.returncode, err_b

    return a, err_a, go_on


def _make_runs_nothing_planted_but_would(directory: Path, marker: Path) -> None:
    """The host's `make` there creates no marker; the control, the plant written on the host, does."""
    subprocess.run(["make", "-s", "-C", str(directory)], capture_output=True, timeout=60)
    assert not marker.exists()
    (directory / "Makefile").write_text(f"all:\n\t@touch {marker}\n")
    subprocess.run(["make", "-s", "-C", str(directory)], capture_output=True, timeout=60)
    assert marker.exists()


def test_a_plant_written_back_by_an_overlapping_step_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)  # core.hooksPath = .husky/_ : husky's wrappers run .husky/<hook>
    hooks = root / ".husky" / "_"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit").write_text('#!/bin/sh\ns=$(dirname "$(dirname "$0")")/pre-commit\n'
                                      '[ -f "$s" ] && exec sh -e "$s"\nexit 0\n')
    (hooks / "pre-commit").chmod(0o755)
    marker = tmp_path / "hook-ran"
    plant = f"printf '{_hook(marker)}' > .husky/pre-commit"
    # A plants the hook; B starts while it is there, and writes it back once A's guard moved it away
    first, err_a, go_on = _overlapping(runs, root, plant, root, plant)
    assert first.returncode == 0, err_a
    assert "quarantined .husky/pre-commit (created by the sandbox" in err_a, err_a
    assert not (root / ".husky" / "pre-commit").exists()
    code, err_b = go_on()
    assert code == 0, err_b
    assert "quarantined .husky/pre-commit (created by the sandbox" in err_b, err_b
    _commit(root)
    assert not marker.exists()
    assert len(quarantines(Path(os.environ["SBOX_STATE_DIR"]))) >= 2
    running = Path(os.environ["SBOX_STATE_DIR"]) / "running"
    assert not running.exists() or not any(running.iterdir()), "a step's baseline outlived it"
    (root / ".husky" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))  # control
    _commit(root)
    assert marker.exists()


def test_a_host_file_an_overlapping_step_changed_is_put_back_as_the_host_had_it(runs: Runs, tmp_path: Path) -> None:
    """A rewrites the project's Makefile; B starts meanwhile and rewrites it again after A's guard
    has put the host's version back. B's guard puts back the host's version too, not A's."""
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\techo host\n")
    evil = "printf 'all:\\n\\ttouch pwned\\n' > Makefile"
    _, err_a, go_on = _overlapping(runs, root, evil, root, evil)
    assert "quarantined Makefile (changed by the sandbox" in err_a, err_a
    assert (root / "Makefile").read_text() == "all:\n\techo host\n"
    code, err_b = go_on()
    assert code == 0, err_b
    assert "quarantined Makefile (changed by the sandbox" in err_b, err_b
    assert (root / "Makefile").read_text() == "all:\n\techo host\n"


def test_overlapping_steps_in_a_project_and_one_nested_in_it_share_the_baseline(runs: Runs, tmp_path: Path) -> None:
    """`sub/` is a repository with an sbox.yaml of its own. A step in the outer project rewrites
    `sub/Makefile`; a step started in `sub/` meanwhile must not take the plant for the host's
    file and, once the outer guard has put the host's back, swap the plant in again."""
    root = husky_project(tmp_path)
    sub = root / "sub"
    sub.mkdir()
    git(sub, "init", "-q")
    (sub / "sbox.yaml").write_text((root / "sbox.yaml").read_text())
    trust(sub / "sbox.yaml")
    host = "all:\n\t@echo building\n"
    (sub / "Makefile").write_text(host)
    marker = tmp_path / "make-ran"
    evil = f"printf 'all:\\n\\t@touch {marker}\\n' > sub/Makefile"
    _, err_a, go_on = _overlapping(runs, root, evil, sub)
    assert "quarantined sub/Makefile (changed by the sandbox; the previous version is back" in err_a, err_a
    code, err_b = go_on()
    assert code == 0, err_b
    assert (sub / "Makefile").read_text() == host, err_b
    _make_runs_nothing_planted_but_would(sub, marker)


def test_what_a_step_whose_sbox_was_killed_left_is_checked_by_the_next_step(runs: Runs, tmp_path: Path) -> None:
    """`kill -9` of sbox skips its guard; the step's baseline stays in sbox's state, and the next
    step on that tree checks it first: the plant is quarantined and the host's file put back."""
    root = husky_project(tmp_path)
    host = "all:\n\t@echo building\n"
    (root / "Makefile").write_text(host)
    first = runs.start(root, "sh", "-c", "printf 'all:\\n\\ttouch pwned\\n' > Makefile && touch planted && sleep 600")
    _wait_for(root / "planted", first)
    first.kill()
    first.communicate(timeout=60)
    assert (root / "Makefile").read_text() != host  # the plant is there: nothing checked it
    result = runs.run(root, "true")
    assert result.returncode == 0, result.stderr
    assert "ended before its persistence check; checked now:" in result.stderr, result.stderr
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in result.stderr, result.stderr
    assert (root / "Makefile").read_text() == host
    again = runs.run(root, "true")
    assert "checked now" not in again.stderr, again.stderr


def test_a_project_nested_in_this_one_is_watched_as_its_top_is(runs: Runs, tmp_path: Path) -> None:
    """`packages/web` has an sbox.yaml of its own (no repository): a step in the outer project,
    its first, that rewrites `packages/web/Makefile` has it quarantined and the host's put back."""
    root = husky_project(tmp_path)
    web = root / "packages" / "web"
    web.mkdir(parents=True)
    (web / "sbox.yaml").write_text((root / "sbox.yaml").read_text())
    trust(web / "sbox.yaml")
    host = "all:\n\t@echo web\n"
    (web / "Makefile").write_text(host)
    marker = tmp_path / "make-ran"
    result = runs.run(root, "sh", "-c", f"printf 'all:\\n\\t@touch {marker}\\n' > packages/web/Makefile && "
                                        "mkdir -p packages/web/.vscode && echo '{}' > packages/web/.vscode/tasks.json")
    assert result.returncode == 0, result.stderr
    assert "quarantined packages/web/Makefile (changed by the sandbox; the previous version is back" in result.stderr, \
        result.stderr
    assert "quarantined packages/web/.vscode/tasks.json (created by the sandbox" in result.stderr, result.stderr
    assert (web / "Makefile").read_text() == host
    _make_runs_nothing_planted_but_would(web, marker)


def test_a_nested_sbox_project_a_step_creates_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """A project config below the top is the host's to make: one a step creates (with a Makefile
    beside it, for a later `sbox run` or `make` there) is quarantined, in any spelling."""
    root = husky_project(tmp_path)
    result = runs.run(root, "sh", "-c", "mkdir -p sub sub2/.vscode && printf 'version: 1\\n' > sub/sbox.yaml && "
                                        "printf 'version: 1\\n' > sub2/.sbox.yaml && echo '{}' > sub2/.vscode/tasks.json")
    assert result.returncode == 0, result.stderr
    assert "quarantined sub/sbox.yaml (created by the sandbox, sbox.yaml)" in result.stderr, result.stderr
    assert "quarantined sub2/.sbox.yaml (created by the sandbox, .sbox.yaml)" in result.stderr, result.stderr
    assert not (root / "sub" / "sbox.yaml").exists() and not (root / "sub2" / ".sbox.yaml").exists()


def test_a_project_nested_through_pyproject_is_watched_as_its_top_is(runs: Runs, tmp_path: Path) -> None:
    """`[tool.sbox]` in a pyproject.toml opts a directory in as an sbox.yaml does: a nested one's
    Makefile a step in the outer project rewrites is quarantined and the host's put back."""
    root = husky_project(tmp_path)
    lib = root / "libs" / "py"
    lib.mkdir(parents=True)
    (lib / "pyproject.toml").write_text('[project]\nname = "py"\n\n[tool.sbox]\nversion = 1\n')
    (lib / "Makefile").write_text("all:\n\t@echo lib\n")
    result = runs.run(root, "sh", "-c", "printf 'all:\\n\\ttouch pwned\\n' > libs/py/Makefile")
    assert result.returncode == 0, result.stderr
    assert "quarantined libs/py/Makefile (changed by the sandbox; the previous version is back" in result.stderr, \
        result.stderr
    assert (lib / "Makefile").read_text() == "all:\n\t@echo lib\n"
