"""The persistence guard's baseline across overlapping steps (guard/running.py): what the oldest
running step saw is what a later one compares with, and the files of steps whose sbox is gone are
not used. The end-to-end attack is in tests/conformance/test_guard_overlap.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sbox_shim import kept
from sbox_shim.guard import Before, Entry, running


def _file(content: bytes) -> Entry:
    return Entry("file", 0o100644, (1, 2, len(content), 0, 0), content.hex(), content)


def test_the_oldest_step_that_watched_a_path_decides_its_baseline() -> None:
    first = Before("/p", 1, {"Makefile": _file(b"host")}, (".husky", "Makefile"), b"{}")
    second = Before("/p", 2, {"Makefile": _file(b"first's"), ".husky": Entry("dir", 0o40755, (1,)),
                              ".husky/pre-commit": _file(b"planted")}, (".husky", "Makefile"), b"x")
    own = Before("/p", 3, {"Makefile": _file(b"second's"), ".husky": Entry("dir", 0o40755, (1,)),
                           ".husky/pre-commit": _file(b"planted"), "app/.husky/h": _file(b"app's")},
                 (".husky", "Makefile", "app/.husky"), b"y")
    merged = running.merged(own, [first, second])
    assert merged.entries == {"Makefile": _file(b"host"), "app/.husky/h": _file(b"app's")}
    assert merged.names == (".husky", "Makefile", "app/.husky")
    assert merged.package == b"{}" and merged.started_ns == 3 and merged.root == "/p"
    assert running.merged(own, []) is own


def test_a_running_step_s_baseline_is_taken_and_a_gone_one_s_is_left_to_be_checked(tmp_path: Path) -> None:
    state, root = str(tmp_path / "state"), str(tmp_path / "p")
    host = Before(root, 1, {"Makefile": _file(b"host")}, ("Makefile",))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        base = running.directory(state)
        alive = os.path.join(base, f"{other.pid}-{running._start_time(other.pid)}")
        kept.write_private(alive, running._data(host, [], ["npm", "run", "dev"]), prune_old=False)
        reused = os.path.join(base, f"{other.pid}-1")  # the same pid, another process's start: gone
        kept.write_private(reused, running._data(host, [(root, root, False, "bind")], ["npm", "install"]),
                           prune_old=False)
        own = Before(root, 2, {"Makefile": _file(b"planted")}, ("Makefile",))
        baseline, mine = running.join(own, state)
        assert baseline.entries == {"Makefile": _file(b"host")}
        assert mine is not None and os.path.exists(mine) and os.path.exists(reused)
        running.leave(mine)
        assert not os.path.exists(mine)
        [orphan] = running.orphans(state, root)  # the dead one: claimed for its check
        assert orphan.command == ["npm", "install"] and orphan.snapshot.entries == host.entries
        assert orphan.mounts == [(root, root, False, "bind")] and not os.path.exists(reused)
        assert running.orphans(state, root) == []  # claimed once
        running.done(orphan)
        assert os.listdir(base) == [os.path.basename(alive)]
    finally:
        other.kill()
        other.wait()
    baseline, mine = running.join(own, state)
    assert baseline is own
    running.leave(mine)
    assert [o.command for o in running.orphans(state, root + "/sub")] == [["npm", "run", "dev"]]  # a tree inside


def test_an_overlapping_step_in_a_nested_project_is_seen_in_its_own_paths() -> None:
    outer = Before("/p", 1, {"sub/Makefile": _file(b"host"), "Makefile": _file(b"top")}, ("Makefile", "sub/Makefile"))
    inner = running._moved(outer, "/p/sub")
    assert inner is not None and inner.entries == {"Makefile": _file(b"host")} and inner.names == ("Makefile",)
    back = running._moved(Before("/p/sub", 1, {"Makefile": _file(b"host")}, ("Makefile",)), "/p")
    assert back is not None and back.entries == {"sub/Makefile": _file(b"host")} and back.names == ("sub/Makefile",)
    assert running._moved(outer, "/q") is None and running._moved(outer, "/pp") is None


def test_a_file_that_is_not_sbox_s_own_is_not_read(tmp_path: Path) -> None:
    """The directory is sbox's private state: a file anyone else can write is ignored."""
    state, root = str(tmp_path / "state"), str(tmp_path / "p")
    pid = os.getppid()
    planted = os.path.join(running.directory(state), f"{pid}-{running._start_time(pid)}")
    kept.write_private(planted, running._data(Before(root, 1, {}, ("Makefile",)), [], []), prune_old=False)
    os.chmod(planted, 0o666)
    own = Before(root, 2, {"Makefile": _file(b"host")}, ("Makefile",))
    baseline, mine = running.join(own, state)
    assert baseline.entries == own.entries
    running.leave(mine)


CHECK_FAILS = r"""
import sys
sys.path.insert(0, sys.argv[3])
from sbox_shim.guard import run
from sbox_shim.plan import Mount

class Step:
    mode, label, profile, cwd = "sandbox", "run", "default", sys.argv[1]
    command = ("sh", "-c", "plant")
    mounts = (Mount(sys.argv[1], sys.argv[1], readonly=False),)

def plant():
    open(sys.argv[1] + "/Makefile", "w").write("all:\n\ttouch pwned\n")
    return 0

def fails(*args):
    raise OSError(13, "Permission denied (this test)")

run._inspect = fails  # the check cannot be made (a directory it may not enter, say)
print(run.guarded(Step(), sys.argv[1], sys.argv[2], sys.stderr, plant))
"""


def test_a_check_that_could_not_be_made_is_made_by_the_next_step(tmp_path: Path) -> None:
    """The step's own check fails (an OSError): its baseline stays in sbox's state, and the next
    step on the tree, once that sbox has ended, checks the tree against it."""
    import io

    from sbox_shim.guard import run
    from sbox_shim.plan import Mount

    root, state = tmp_path / "p", tmp_path / "state"
    root.mkdir()
    (root / "Makefile").write_text("all:\n\techo host\n")
    repo = str(Path(running.__file__).parents[2])
    first = subprocess.run([sys.executable, "-c", CHECK_FAILS, str(root), str(state), repo],
                           capture_output=True, text=True, timeout=60)
    assert first.stdout.strip() == "125" and "checks them again" in first.stderr, first.stderr
    assert (root / "Makefile").read_text() == "all:\n\ttouch pwned\n"

    class Step:
        mode, label, profile, cwd, command = "sandbox", "run", "default", str(root), ("true",)
        mounts = (Mount(str(root), str(root), readonly=True),)  # a read-only step checks it too

    err = io.StringIO()
    assert run.guarded(Step(), str(root), str(state), err, lambda: 0) == 0
    assert "ended before its persistence check; checked now:" in err.getvalue(), err.getvalue()
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in err.getvalue()
    assert (root / "Makefile").read_text() == "all:\n\techo host\n"
