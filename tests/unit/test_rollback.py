"""The rollback (rollback.py) when something else in the project (another sandbox with it
writable) renames, replaces or links what the rollback works on: no link is followed, nothing
lands outside the project, and a kept state that is not sbox's own is neither restored nor
removed. Real files, no sandbox; the swaps are made here between keep and restore (one, inside
keep's clone, at its first directory, by running the real mkdir after the swap)."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sbox_shim import rollback
from sbox_shim.ecosystems import npm_run

FILES = ("package.json", "package-lock.json")


def _project(tmp_path: Path) -> tuple[Path, Path]:
    project, outside = tmp_path / "project", tmp_path / "outside"
    for rel, text in {"package.json": "{}", "package-lock.json": "lock", "node_modules/a/index.js": "a",
                      "node_modules/a/lib/x.js": "x"}.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    outside.mkdir()
    return project, outside


def _failed_line(kept: rollback.Kept, directory: Path) -> str:
    err = io.StringIO()
    npm_run.failed(npm_run.State(kept, None, str(directory)), err)
    (line,) = err.getvalue().splitlines()
    return line


@pytest.mark.parametrize("how", ["cloned", "moved", "absent"])
def test_a_kept_directory_swapped_for_a_link_is_not_followed(tmp_path: Path, how: str) -> None:
    project, outside = _project(tmp_path)
    if how == "absent":
        for p in sorted((project / "node_modules").rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    kept = rollback.keep(str(project), FILES, whole=how == "moved")
    assert kept.modules == how
    (project / "node_modules" / "b").mkdir()  # what the failed install left
    os.rename(kept.keep, project / "stash")
    os.symlink(outside, kept.keep)
    line = _failed_line(kept, project)
    assert list(outside.iterdir()) == []
    assert line == (f"sbox: the install failed and could not be rolled back ({kept.keep} is now a link to {outside}, "
                    f"not the directory sbox made: nothing was restored or removed); the state before it is kept "
                    f"in {project / 'stash'}: move its contents back into {project}")
    assert (project / "node_modules" / "b").is_dir()  # nothing restored
    assert (project / "stash" / "node_modules" / "a" / "index.js").is_file() == (how != "absent")
    os.unlink(kept.keep)
    os.mkdir(kept.keep)  # another directory in its place: neither restored nor removed either
    line = _failed_line(kept, project)
    assert f"({kept.keep} is now another directory, not the directory sbox made" in line
    assert os.path.isdir(kept.keep) and (project / "stash").is_dir()


def test_a_kept_directory_moved_away_and_not_found_says_so(tmp_path: Path) -> None:
    project, outside = _project(tmp_path)
    kept = rollback.keep(str(project), FILES)
    os.rename(kept.keep, outside / "elsewhere")
    assert _failed_line(kept, project) == (
        f"sbox: the install failed and could not be rolled back ({kept.keep} is now gone, not the directory sbox "
        f"made: nothing was restored or removed); the state before it was kept in {kept.keep}, and sbox did not "
        f"find where it went")


def test_a_kept_tree_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    """Its setuid bits are not cleared through the link, and it is not put back as node_modules."""
    project, outside = _project(tmp_path)
    (outside / "tool").write_text("")
    os.chmod(outside / "tool", 0o4755)
    kept = rollback.keep(str(project), FILES)
    os.rename(Path(kept.keep, "node_modules"), project / "stash")
    os.symlink(outside, Path(kept.keep, "node_modules"))
    done, problem = rollback.restore(kept)
    assert done == [] and problem is not None and kept.refused
    assert problem.startswith(f"{kept.keep}/node_modules is now a link to {outside}, not the node_modules sbox kept")
    assert os.stat(outside / "tool").st_mode & stat.S_ISUID
    assert not (project / "node_modules").is_symlink() and (project / "node_modules" / "a").is_dir()
    assert kept.found == kept.keep  # the rest is where it was


def test_project_files_swapped_for_links_are_moved_not_followed(tmp_path: Path) -> None:
    project, outside = _project(tmp_path)
    (outside / "modules").mkdir()
    (outside / "modules" / "keep.js").write_text("host")
    (outside / "package.json").write_text("host")
    kept = rollback.keep(str(project), FILES)
    os.rename(project / "node_modules", project / "old")
    os.symlink(outside / "modules", project / "node_modules")
    (project / "package.json").unlink()
    os.symlink(outside / "package.json", project / "package.json")
    assert rollback.restore(kept) == (["node_modules", "package.json"], None)
    assert (outside / "modules" / "keep.js").read_text() == "host" and (outside / "package.json").read_text() == "host"
    assert sorted(p.name for p in outside.iterdir()) == ["modules", "package.json"]
    assert (project / "package.json").read_text() == "{}" and not (project / "package.json").is_symlink()
    assert (project / "node_modules" / "a" / "lib" / "x.js").read_text() == "x"
    assert not list(project.glob(".sbox-rollback-*"))


def test_the_clone_goes_on_in_its_own_directory_when_that_is_swapped(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """keep's clone: the rollback directory replaced with a link while it is being filled (at the
    clone's first directory) takes nothing outside; the clone is whole where the swap moved it."""
    project, outside = _project(tmp_path)
    (outside / "node_modules").mkdir()  # where the clone's paths would lead through the link
    real, calls = os.mkdir, []

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(path)
        if len(calls) == 3:  # 1: the rollback directory, 2: its node_modules, 3: the clone's first
            (box,) = project.glob(".sbox-rollback-*")
            os.rename(box, project / "stash")
            os.symlink(outside, box)
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    kept = rollback.keep(str(project), FILES)
    monkeypatch.undo()
    assert len(calls) > 3 and list(outside.rglob("*")) == [outside / "node_modules"]
    assert (project / "stash" / "node_modules" / "a" / "lib" / "x.js").read_text() == "x"
    assert not rollback.restore(kept)[0] and kept.found == str(project / "stash")


def test_discard_removes_only_the_directory_sbox_made(tmp_path: Path) -> None:
    project, _ = _project(tmp_path)
    kept = rollback.keep(str(project), FILES)
    os.rename(kept.keep, project / "stash")
    os.mkdir(kept.keep)
    Path(kept.keep, "mine").write_text("")
    rollback.discard(kept)
    assert Path(kept.keep, "mine").is_file() and (project / "stash" / "node_modules").is_dir()
    os.rename(Path(kept.keep), project / "other")
    os.rename(project / "stash", kept.keep)
    rollback.discard(kept)
    assert not os.path.lexists(kept.keep) and (project / "other" / "mine").is_file()
