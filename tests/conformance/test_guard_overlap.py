"""Two writable steps overlapping in one project (every backend), a red team's find: the second
step's snapshot was taken while the first one's plant was there, so when the first step's guard
had moved the plant away and the second step wrote the same bytes back, the second guard saw no
change and the plant stayed for the user's next `git commit`. Each step now compares with the
baseline of the earliest step still running when it started."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .helpers import Runs
from .test_guard_repos import _commit, _hook
from .test_persistence_guard import husky_project, quarantines


def _wait_for(path: Path, proc: object, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert getattr(proc, "poll")() is None, "the step ended before it got there"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_a_plant_written_back_by_an_overlapping_step_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)  # core.hooksPath = .husky/_ : husky's wrappers run .husky/<hook>
    hooks = root / ".husky" / "_"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit").write_text('#!/bin/sh\ns=$(dirname "$(dirname "$0")")/pre-commit\n'
                                      '[ -f "$s" ] && exec sh -e "$s"\nexit 0\n')
    (hooks / "pre-commit").chmod(0o755)
    marker = tmp_path / "hook-ran"
    plant = f"printf '{_hook(marker)}' > .husky/pre-commit"
    wait = "while [ ! -e {0} ]; do sleep 0.05; done"
    # A plants the hook, then runs on (a watcher, a dev server) until told to end
    first = runs.start(root, "sh", "-c", f"{plant} && touch a-planted && {wait.format('a-go')}")
    _wait_for(root / "a-planted", first)
    # B starts while A's plant is there, and writes it back once A's guard has moved it away
    second = runs.start(root, "sh", "-c", f"touch b-started && {wait.format('b-go')} && {plant}")
    _wait_for(root / "b-started", second)
    (root / "a-go").touch()
    _, err_a = first.communicate(timeout=180)
    assert first.returncode == 0, err_a
    assert "quarantined .husky/pre-commit (created by the sandbox" in err_a, err_a
    assert not (root / ".husky" / "pre-commit").exists()
    (root / "b-go").touch()
    _, err_b = second.communicate(timeout=180)
    assert second.returncode == 0, err_b
    assert "quarantined .husky/pre-commit (created by the sandbox" in err_b, err_b
    _commit(root)
    assert not marker.exists()
    assert len(quarantines(Path(os.environ["SBOX_STATE_DIR"]))) >= 2
    running = Path(os.environ["SBOX_STATE_DIR"]) / "running"
    assert not running.exists() or not any(p for d in running.iterdir() for p in d.iterdir()), \
        "a step's baseline outlived it"
    (root / ".husky" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))  # control
    _commit(root)
    assert marker.exists()


def test_a_host_file_an_overlapping_step_changed_is_put_back_as_the_host_had_it(runs: Runs, tmp_path: Path) -> None:
    """A rewrites the project's Makefile; B starts meanwhile and rewrites it again after A's guard
    has put the host's version back. B's guard puts back the host's version too, not A's."""
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\techo host\n")
    wait = "while [ ! -e {0} ]; do sleep 0.05; done"
    evil = "printf 'all:\\n\\ttouch pwned\\n' > Makefile"
    first = runs.start(root, "sh", "-c", f"{evil} && touch a-planted && {wait.format('a-go')}")
    _wait_for(root / "a-planted", first)
    second = runs.start(root, "sh", "-c", f"touch b-started && {wait.format('b-go')} && {evil}")
    _wait_for(root / "b-started", second)
    (root / "a-go").touch()
    _, err_a = first.communicate(timeout=180)
    assert "quarantined Makefile (changed by the sandbox" in err_a, err_a
    assert (root / "Makefile").read_text() == "all:\n\techo host\n"
    (root / "b-go").touch()
    _, err_b = second.communicate(timeout=180)
    assert second.returncode == 0, err_b
    assert "quarantined Makefile (changed by the sandbox" in err_b, err_b
    assert (root / "Makefile").read_text() == "all:\n\techo host\n"
