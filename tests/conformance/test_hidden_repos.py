"""A nested repository that another sandbox hides, or moves, while a step is planned and runs.

A sandbox with the whole project writable (a dev server) is the racer; a second command in the
same project is the victim, planned cold. The nested repository `vendor/lib` has a credential in
its config. Red team 9 found two ways around the plan's walk for `.git` entries:
- the racer makes `x/.git` (a HEAD in it) and moves the repository into it: the walk took every
  `.git` for a leaf, so the victim's plan never saw the repository there (its config shown as
  it is); moved back out once the victim ran, it was under no read-only mount at all, and the
  victim planted a hook the host's `git commit` ran;
- a victim that writes only `node_modules/` (npm's scripts phase) had only that part walked: the
  racer moved the repository into `node_modules/` once the victim ran, and its `.git` was
  writable there.
Now a step that writes any part of the project has every repository of the project bound
read-only (and its config redacted), and every directory of a writable part on the way to a
repository is bound on itself, so no sandbox can move a repository that was there when it started
(a bind holds through the mount it was made in: moved into another of the victim's mounts, the
read-only bind of its `.git` no longer applies there). The racer's move is refused, or, where a
move does happen, the victim sees no token and plants nothing. Each case: real sandboxes on both
backends, the token looked for in what the victim read, the hook looked for on the host after both
runs and run by a real `git commit`, with the control that the same hook written on the host does
run.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .helpers import Runs, project
from .test_guard_repos import GIT_ENV, _commit

TOKEN = "SBOX-CANARY-TOKEN-9"
# w A [B]: wait (up to 60 s) until A or B exists
WAIT = ('w() { i=0; while [ ! -e "$1" ] && [ ! -e "${2:-$1}" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); '
        'done; }; ')
# the racer tries a move; refused, it says so and ends
REFUSED = ": > racer.refused; exit 0"

CONFIG = """\
version: 1
profiles:
  default:
    network: off
  nm:
    network: off
    writable: [node_modules/]
"""


def _repo(root: Path) -> Path:
    lib = root / "vendor" / "lib"
    lib.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "http.extraheader", f"AUTHORIZATION: token {TOKEN}"]):
        subprocess.run(["git", *args], cwd=lib, env=GIT_ENV, capture_output=True, check=True)
    return lib


def _hook(marker: Path) -> str:
    return f"printf '#!/bin/sh\\ntouch {marker}\\n' > HOOK && chmod +x HOOK && echo planted; "


def _both(runs: Runs, root: Path, racer: str, victim: list[str], first: tuple[str, ...] = ()) -> tuple[str, str]:
    """The racer started, then (once it made one of `first`) the victim, planned cold: the
    victim's output once both ended."""
    proc = runs.start(root, "sh", "-c", WAIT + racer)
    try:
        for _ in range(3000):
            if not first or any((root / f).exists() for f in first) or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert not first or any((root / f).exists() for f in first), proc.communicate()[1]
        done = subprocess.Popen(victim, cwd=root, env=dict(os.environ, SBOX_PLAN_CACHE="0"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs.track(done.pid)
        out, err = done.communicate(timeout=180)
    finally:
        (root / "victim.done").touch()
        _, racer_err = proc.communicate(timeout=180)
    assert proc.returncode == 0, racer_err
    return out, err


def _seen(seen: Path, refused: Path) -> str:
    """What the victim read of the moved repository's config: nothing when the racer's move was
    refused, and then the repository is where it was."""
    if refused.exists():
        assert not seen.exists()
        return ""
    text = seen.read_text()
    assert "[http]" in text or "[core]" in text, text  # the victim did read the config
    return text


def test_a_repository_hidden_in_a_git_directory_another_sandbox_made_stays_protected(
        runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, CONFIG)
    lib = _repo(root)
    marker = tmp_path / "hook-ran"
    racer = ("mkdir -p x/.git/stash && echo 'ref: refs/heads/main' > x/.git/HEAD && "
             "{ mv vendor/lib x/.git/stash/lib 2>/dev/null || { " + REFUSED + "; }; } && : > racer.hidden; "
             "w victim.planned; mv x/.git/stash/lib vendor/lib && : > racer.back; "
             # back into x/.git before the victim ends, out of its guard's sight; home once it has
             "w victim.wrote; mv vendor/lib x/.git/stash/lib && : > racer.again; "
             "w victim.done; mv x/.git/stash/lib vendor/lib && rm -rf x")
    victim = ("sh", "-c", WAIT + "[ -e racer.refused ] && exit 0; cat x/.git/stash/lib/.git/config > seen.txt; : > victim.planned; "
              "w racer.back; cat vendor/lib/.git/config >> seen.txt; "
              + _hook(marker).replace("HOOK", "vendor/lib/.git/hooks/pre-commit")
              + ": > victim.wrote; w racer.again")
    out, err = _both(runs, root, racer, runs.argv(victim), first=("racer.hidden", "racer.refused"))
    seen = _seen(root / "seen.txt", root / "racer.refused")
    assert TOKEN not in seen, f"the victim read the hidden repository's token: {seen!r} {out} {err}"
    assert "planted" not in out, err
    assert (lib / ".git").is_dir() and not (lib / ".git" / "hooks" / "pre-commit").exists()
    _commit(lib)
    assert not marker.exists()
    # the control: the host reads the token there, and a hook written there by the host runs
    assert TOKEN in (lib / ".git" / "config").read_text()
    (lib / ".git" / "hooks" / "pre-commit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (lib / ".git" / "hooks" / "pre-commit").chmod(0o755)
    _commit(lib)
    assert marker.exists()


def test_a_repository_moved_into_the_part_a_step_writes_stays_protected(runs: Runs, tmp_path: Path) -> None:
    """The victim writes `node_modules/` only, as npm's scripts phase does; once it runs the racer
    moves `vendor/lib` into `node_modules/`, and back out before the victim ends."""
    root = project(tmp_path, CONFIG)
    lib = _repo(root)
    (root / "node_modules").mkdir()
    marker = tmp_path / "hook-ran"
    racer = ("w node_modules/victim.started; { mv vendor/lib node_modules/lib 2>/dev/null || { " + REFUSED
             + "; }; } && : > racer.moved; "
             "w node_modules/victim.wrote; mv node_modules/lib vendor/lib && : > racer.back; w victim.done")
    victim = ["sh", "-c", WAIT + ": > node_modules/victim.started; w racer.moved racer.refused; "
              "[ -e racer.refused ] && exit 0; "
              "cat node_modules/lib/.git/config > node_modules/seen.txt; "
              + _hook(marker).replace("HOOK", "node_modules/lib/.git/hooks/pre-commit")
              + ": > node_modules/victim.wrote; w racer.back"]
    out, err = _both(runs, root, racer, runs.argv(victim, "--profile", "nm"))
    seen = _seen(root / "node_modules" / "seen.txt", root / "racer.refused")
    assert TOKEN not in seen, "the victim read the moved repository's token"
    assert "planted" not in out, err
    assert not (lib / ".git" / "hooks" / "pre-commit").exists()
    _commit(lib)
    assert not marker.exists()


def test_a_step_that_removes_a_repository_is_told_why_it_cannot(runs: Runs, tmp_path: Path) -> None:
    """The cost of the pins: a step cannot move or remove a directory on the way to a repository
    (a build that cleans `vendor/`, say); it fails as the kernel says, and when it emptied one of
    them sbox says why in one line."""
    root = project(tmp_path, CONFIG)
    lib = _repo(root)
    (lib / "f.txt").write_text("kept")
    result = runs.run(root, "sh", "-c", "rm -rf vendor")
    assert result.returncode != 0
    assert "sbox: vendor/lib: on the way to a git repository of the project" in result.stderr, result.stderr
    assert (lib / ".git" / "config").is_file() and not (lib / "f.txt").exists()  # what rm could remove, it did
    moved = runs.run(root, "sh", "-c", "mv vendor/lib vendor/lib2")
    assert moved.returncode != 0 and "Device or resource busy" in moved.stderr, moved.stderr
    assert "on the way to a git repository" not in moved.stderr  # nothing of them changed: not said
    # a step that fails for its own reasons is not told about them
    failed = runs.run(root, "sh", "-c", "exit 3")
    assert failed.returncode == 3 and "git repository" not in failed.stderr, failed.stderr
    # the control: a directory without a repository on its way moves and goes as it would directly
    (root / "other").mkdir()
    gone = runs.run(root, "sh", "-c", "mv other other2 && rm -rf other2")
    assert gone.returncode == 0, gone.stderr
    assert not (root / "other").exists() and not (root / "other2").exists()
