"""The warm path's few pieces of os, on posix: they must answer as os does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbox_shim import lean

PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/", "a", "a/b", "", "//a//b", "/a//", "./a", "../a/b"]


@pytest.mark.parametrize("path", PATHS)
def test_dirname_is_os_paths(path: str) -> None:
    assert lean.dirname(path) == os.path.dirname(path)


@pytest.mark.parametrize("base, parts", [
    ("/a", ("b",)), ("/a/", ("b",)), ("", ("b",)), ("/a", ("/b", "c")), ("a", ("b", "c/")),
    ("/a", ("",)), ("/", ("b",)), ("", ("",)),
])
def test_join_is_os_paths(base: str, parts: tuple[str, ...]) -> None:
    assert lean.join(base, *parts) == os.path.join(base, *parts)


def test_makedirs_makes_every_level_and_accepts_existing(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "z"
    lean.makedirs(str(target), 0o700)
    lean.makedirs(str(target), 0o700)
    assert target.is_dir() and (target.stat().st_mode & 0o777) == 0o700


def test_environ_is_os_environs_at_start() -> None:
    code = "import os, sys; sys.path.insert(0, sys.argv[1]); from sbox_shim import lean; print(lean.environ() == dict(os.environ))"
    env = {"A": "1", "ODD": "caf\udce9", "EMPTY": ""}
    out = subprocess.run([sys.executable, "-c", code, str(Path(lean.__file__).parents[1])],
                         env={k: v.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") for k, v in env.items()},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_the_warm_path_does_not_load_os() -> None:
    """Neither what runs before bwrap starts nor what runs while and after it (the mount check,
    the end of the sandbox, the persistence guard and its index)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import sbox_shim.entry, sbox_shim.compiled, "
            "sbox_shim.paths, sbox_shim.kept, sbox_shim.backends.bwraprun, sbox_shim.backends.mountcheck, "
            "sbox_shim.backends.bwrapend, sbox_shim.backends.procs, sbox_shim.guard.run, sbox_shim.guard, "
            "sbox_shim.guard.index, sbox_shim.regular; print('os' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(Path(lean.__file__).parents[1])],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_owner_rights_come_back_along_the_way_but_never_through_a_link(tmp_path: Path) -> None:
    """The guard gives back the owner's rights a sandbox took on each directory on the way to a
    watched path; a directory swapped for a link (a sandbox still running on the tree) must not
    send it to another directory of the user's: the walk opens each level in the one before it."""
    top = tmp_path / "proj"
    (top / "a" / "b").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "b"
    elsewhere.mkdir(parents=True)
    os.chmod(elsewhere, 0o000)
    os.chmod(top / "a" / "b", 0o000)
    os.chmod(top / "a", 0o311)
    try:
        lean.let_owner_along(str(top), "a/b")
        assert (top / "a").stat().st_mode & 0o777 == 0o711
        assert (top / "a" / "b").stat().st_mode & 0o777 == 0o700
        os.rename(top / "a", top / "a-real")
        os.symlink(tmp_path / "elsewhere", top / "a")
        lean.let_owner_along(str(top), "a/b")
        assert elsewhere.stat().st_mode & 0o777 == 0o000  # the link was not followed
    finally:
        os.chmod(elsewhere, 0o700)
