"""bwrap started held before its command (bwraprun.start), as sbox's warm path starts it while it
checks the record: whatever ends the sandbox before it is let go, its command never runs."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sbox_shim.backends import bwraprun

from conftest import require_backend


def _options(tmp_path: Path) -> list[str]:
    # a root as sbox makes it (a tmpfs, read-only once set up: the mount check waits for that)
    return ["--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--bind", str(tmp_path), str(tmp_path), "--remount-ro", "/"]


def _target(tmp_path: Path) -> list[tuple[str, int, int]]:
    st = os.stat(tmp_path)
    return [(str(tmp_path), st.st_dev, st.st_ino)]


def test_a_signal_while_bwrap_sets_up_ends_it_unrun(tmp_path: Path) -> None:
    """^C reaches sbox while the sandbox is held: relayed to bwrap, which dies; sbox says 130 (not
    a failure of its own that the cold path would answer by running the command) and nothing ran."""
    require_backend("bwrap")
    ran = tmp_path / "ran"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/usr/bin/touch", str(ran)])
    os.kill(os.getpid(), signal.SIGINT)  # the relay sends it on to bwrap
    code, status = bwraprun.finish(held, verify=_target(tmp_path))
    assert (code, status) == (130, None)
    assert not ran.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # sbox's handlers are gone


def test_an_abandoned_sandbox_runs_nothing(tmp_path: Path) -> None:
    require_backend("bwrap")
    ran = tmp_path / "ran"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/usr/bin/touch", str(ran)])
    held.abandon()
    try:
        os.waitpid(held.pid, os.WNOHANG)
        raise AssertionError("bwrap was not reaped")
    except ChildProcessError:
        pass
    assert not ran.exists()


def test_a_held_sandbox_runs_once_let_go(tmp_path: Path) -> None:
    require_backend("bwrap")
    ran = tmp_path / "ran"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/usr/bin/touch", str(ran)])
    assert not ran.exists()
    code, status = bwraprun.finish(held, verify=_target(tmp_path))
    assert code == 0 and status is not None and status.exit_code == 0 and ran.exists()


def test_a_signal_while_held_is_sbox_s_again_once_abandoned(tmp_path: Path) -> None:
    """A stale record's sandbox is abandoned after a ^C came: the ^C is not lost (the cold path
    would otherwise plan and run the command); sbox gets it back under its own handler."""
    require_backend("bwrap")
    ran = tmp_path / "ran"
    held = bwraprun.start("/usr/bin/bwrap", _options(tmp_path), ["/usr/bin/touch", str(ran)])
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        held.abandon()
    assert not ran.exists()
