"""sbox's pip download step (pip_fetch.py) and what a local index needs mounted (pip_index.py).

pip_fetch runs inside the download sandbox; here its pure parts read real sdists made in a temp
dir, and its fetch rounds run a stand-in `pip` (a directory with a `__main__.py`, as sbox's own
pip is run) that records its calls: the seam is the process.
"""
from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from sbox_shim.ecosystems import pip_fetch
from sbox_shim.ecosystems.pip_index import index_root
from sbox_shim.errors import UsageError


def sdist(where: Path, name: str, pyproject: str | None) -> Path:
    path = where / f"{name}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, text in [(f"{name}-1.0/setup.py", "")] + ([(f"{name}-1.0/pyproject.toml", pyproject)]
                                                               if pyproject is not None else []):
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_build_requires_of_pyproject_legacy_and_setuptools_sdists(tmp_path: Path) -> None:
    hatch = sdist(tmp_path, "a", '[build-system]\nrequires = ["hatchling>=1.2", "hatch-vcs"]\n'
                                 'build-backend = "hatchling.build"\n')
    assert pip_fetch.build_requires(str(hatch)) == [("hatchling>=1.2", False), ("hatch-vcs", False)]
    legacy = sdist(tmp_path, "b", None)
    assert pip_fetch.build_requires(str(legacy)) == [("setuptools>=40.8.0", False), ("wheel", True)]
    scm = sdist(tmp_path, "c", '[build-system]\nrequires = ["setuptools>=64", "setuptools-scm>=8"]\n')
    assert pip_fetch.build_requires(str(scm)) == [("setuptools>=64", False), ("setuptools-scm>=8", False),
                                                  ("wheel", True)]
    (tmp_path / "d-1.0.tar.gz").write_bytes(b"not a tarball")
    assert pip_fetch.build_requires(str(tmp_path / "d-1.0.tar.gz"))[0] == ("setuptools>=40.8.0", False)


def test_missing_is_what_no_file_of_the_wheelhouse_satisfies(tmp_path: Path) -> None:
    sdist(tmp_path, "app", '[build-system]\nrequires = ["sbox-backend>=1", "other; python_version < \'3\'"]\n'
                           'build-backend = "sbox_backend"\n')
    (tmp_path / "sbox_backend-0.5-py3-none-any.whl").write_bytes(b"")
    assert pip_fetch.missing(str(tmp_path)) == [("sbox-backend>=1", False, "app-1.0.tar.gz")]
    (tmp_path / "sbox_backend-1.1-py3-none-any.whl").write_bytes(b"")
    assert pip_fetch.missing(str(tmp_path)) == []  # the marker excludes `other` on Python 3


def fake_pip(tmp_path: Path, fail: str) -> Path:
    """A stand-in for sbox's own pip: records each call, fails when `fail` is among its arguments."""
    home = tmp_path / "site"
    (home / "pip").mkdir(parents=True)
    (home / "pip" / "__main__.py").write_text(
        "import sys\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(' '.join(sys.argv[1:]) + chr(10))\n"
        f"sys.exit(1 if {fail!r} in sys.argv else 0)\n")
    return home


@pytest.mark.parametrize("fail,note", [("nothing", False), ("hatchling", True), ("wheel", False)])
def test_fetch_tries_all_together_then_one_by_one_best_effort(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              fail: str, note: bool) -> None:
    home = fake_pip(tmp_path, fail)
    wanted = [("hatchling", False, "a-1.0.tar.gz"), ("wheel", True, "b-1.0.tar.gz")]
    pip_fetch.fetch(str(home), "/wh", ["-i", "http://127.0.0.1:1/simple"], wanted)
    calls = (tmp_path / "calls").read_text().splitlines()
    prefix = "download -q --dest /wh -i http://127.0.0.1:1/simple"
    assert calls[0] == f"{prefix} hatchling wheel"
    assert calls[1:] == ([] if fail == "nothing" else [f"{prefix} hatchling", f"{prefix} wheel"])
    err = capsys.readouterr().err
    assert (err == "sbox: build requirement hatchling of a-1.0.tar.gz is not on the index: it will not "
                   "build offline\n") if note else err == ""


def test_the_fetch_step_runs_isolated_with_only_pip_beside_the_stdlib(tmp_path: Path) -> None:
    """As in the sandbox: `python -I -S pip_fetch.py …` with SBOX_PIP_HOME naming where pip is."""
    import os
    import subprocess

    import pip

    env = {"PATH": os.environ.get("PATH", ""), "SBOX_PIP_HOME": str(Path(pip.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-I", "-S", pip_fetch.__file__, "--version"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith(f"pip {pip.__version__} from "), run.stderr


# --- pip_index --------------------------------------------------------------------------------


def mirror(root: Path, href: str) -> Path:
    page = root / "simple" / "x" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><a href="{href}#sha256=00">x-1.0-py3-none-any.whl</a></body></html>')
    (root / "simple" / "index.html").write_text('<a href="x/">x</a>')
    return root / "simple"


def test_a_mirror_linking_beside_its_index_mounts_the_mirror_root(tmp_path: Path) -> None:
    simple = mirror(tmp_path / "mirror", "../../files/x-1.0-py3-none-any.whl")
    assert index_root(str(simple), str(tmp_path / "home"), str(tmp_path / "project")) == str(tmp_path / "mirror")


@pytest.mark.parametrize("href", ["x-1.0-py3-none-any.whl", "https://files.example/x-1.0-py3-none-any.whl"])
def test_an_index_holding_its_files_or_linking_over_http_mounts_itself(tmp_path: Path, href: str) -> None:
    simple = mirror(tmp_path / "mirror", href)
    assert index_root(str(simple), str(tmp_path / "home"), str(tmp_path / "project")) == str(simple)


@pytest.mark.parametrize("index,href,home,project,why", [
    ("a/b/c/simple", "../../../../../files/x-1.0-py3-none-any.whl", "home", "project",
     "lies more than 2 levels above it"),
    ("home/m/simple", "../../../files/x-1.0-py3-none-any.whl", "home", "project", "is HOME or above it"),
    ("m/idx/simple", "../../../files/x-1.0-py3-none-any.whl", "home", "m/app", "holds the project"),
    ("m/simple", "file:///x-1.0-py3-none-any.whl", "home", "project", "lies more than 2 levels above it"),
])
def test_a_mirror_that_cannot_be_mounted_is_refused_in_one_line(tmp_path: Path, index: str, href: str, home: str,
                                                                 project: str, why: str) -> None:
    simple = mirror(tmp_path / index[:-len("/simple")], href)
    with pytest.raises(UsageError, match=f"the pip index's pages link to files under .*, which {why}; "):
        index_root(str(simple), str(tmp_path / home), str(tmp_path / project))
