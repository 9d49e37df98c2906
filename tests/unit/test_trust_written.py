"""trust/written.py on files made in a temp dir: which programs a sandbox could have written. The
attacks themselves, planted by real sandboxes, are in tests/e2e/test_venv_plants.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sbox_shim.build import host_path, network_path
from sbox_shim.trust.written import install_places, python_refusal, venv_of


def _venv(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return root


def test_a_venv_is_found_above_a_path_as_written_and_as_resolved(tmp_path: Path) -> None:
    venv = _venv(tmp_path / "V")
    (venv / "lib" / ".x").mkdir(parents=True)
    (venv / "bin").rename(venv / "lib" / ".x" / "bin")
    (venv / "bin").symlink_to("lib/.x/bin")  # the venv's bin behind a link
    (tmp_path / "elsewhere").symlink_to(venv / "lib" / ".x" / "bin")
    assert venv_of(str(venv / "bin")) == str(venv)
    assert venv_of(str(venv / "bin" / "npm")) == str(venv)  # a tool path: pyvenv.cfg two levels up
    assert venv_of(str(tmp_path / "elsewhere")) == str(venv)  # found where it resolves
    assert venv_of(str(tmp_path)) is None


def test_network_and_host_paths_leave_out_a_venv_bin_behind_a_link(tmp_path: Path) -> None:
    venv = _venv(tmp_path / "V")
    (venv / "lib" / ".x").mkdir(parents=True)
    (venv / "bin").rename(venv / "lib" / ".x" / "bin")
    (venv / "bin").symlink_to("lib/.x/bin")
    path = os.pathsep.join([str(venv / "bin"), "/usr/bin"])
    assert network_path(path, ()) == "/usr/bin"
    assert host_path(path, "/p", "/p") == "/usr/bin"


@pytest.fixture
def python(tmp_path: Path) -> Path:
    found = tmp_path / "home" / ".pyenv" / "versions" / "3.11.7" / "bin" / "python3.11"
    found.parent.mkdir(parents=True)
    found.write_text("")
    return found


def test_an_interpreter_in_a_python_install_directory_is_accepted(tmp_path: Path, python: Path) -> None:
    installs = install_places({}, [str(tmp_path / "home")])
    assert python_refusal(str(python), (), installs) is None
    assert python_refusal("/usr/bin/python3", (), installs) is None


@pytest.mark.parametrize("where", ["project", "opted-in", "venv", "anywhere"])
def test_an_interpreter_a_sandbox_could_have_written_is_refused(tmp_path: Path, where: str) -> None:
    """Its looks prove nothing: each is a `bin/python3.11` beside a `lib/python3.11/os.py`."""
    base = tmp_path / "M" / "node_modules" / "x"
    (base / "lib" / "python3.11").mkdir(parents=True)
    (base / "lib" / "python3.11" / "os.py").write_text("")
    (base / "bin").mkdir()
    (base / "bin" / "python3.11").write_text("")
    places: tuple[str, ...] = ()
    installs = install_places({"UV_PYTHON_INSTALL_DIR": str(tmp_path / "M")}, [])  # even in an install dir
    if where == "project":
        places = (str(tmp_path / "M"),)
    elif where == "opted-in":
        (tmp_path / "M" / "sbox.yaml").write_text("version: 1\n")
    elif where == "venv":
        (tmp_path / "M" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    else:
        installs = ()
    why = python_refusal(str(base / "bin" / "python3.11"), places, installs)
    assert why, where
    if where == "opted-in":
        assert str(tmp_path / "M" / "sbox.yaml") in why
