"""Red team 15: a step that installs nothing writes the startup code of the project's venv.

An `npm test` helper (the default profile: the project writable) appended to `.venv/bin/activate`,
added `site-packages/zz.pth` and a `.venv/bin/git`; they ran when the host used the venv, and
nothing was said. sbox cannot tell such a write from an install the user ran in the step (`sbox
run -- make setup`), so it moves nothing there: it says, in one line, what of the venv's startup
code the step wrote. An install into the venv through sbox's pip (its install phase, where the
venv is bound writable on its own) says nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import packages as pkg
from support.registries import PypiIndex

from .helpers import Runs, project

LINE = "sbox: this step wrote a venv's startup code, which runs whenever you use that venv: "


def _venv(root: Path) -> tuple[Path, str]:
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300,
                   capture_output=True)
    lib = next((venv / "lib").iterdir()).name
    return venv, f".venv/lib/{lib}/site-packages"


def test_a_step_that_writes_the_venv_s_startup_code_says_so(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    venv, site = _venv(root)
    marker = tmp_path / "pth-ran"
    plant = (f"echo 'touch {marker}' >> .venv/bin/activate && printf '#!/bin/sh\\n' > .venv/bin/git && "
             f"echo \"import os; open('{marker}', 'w').write('ran')\" > {site}/zz.pth && echo ok > notes.txt")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1, result.stderr
    assert f".venv/bin/activate, .venv/bin/git, {site}/zz.pth;" in said[0], said
    assert "notes.txt" not in said[0]
    # what it said is real: the host's next use of the venv runs the .pth (the control)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.exists()
    # a step that leaves the venv alone says nothing
    quiet = runs.run(root, "sh", "-c", "echo again > notes.txt")
    assert LINE not in quiet.stderr, quiet.stderr


def test_an_install_through_sbox_s_pip_says_nothing(runs: Runs, tmp_path: Path, fake_home: Path) -> None:
    root = project(tmp_path, f"version: 1\nbackend: {runs.backend}\n")
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    files = {"sbox_dep.py": "N = 41\n", "sbox_dep.pth": "# a path line, as editable installs write\n"}
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", files)]) as index:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME")}
        env.update(PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, VIRTUAL_ENV=str(venv),
                   PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
        result = runs.run(root, str(venv / "bin" / "pip"), "install", "sbox-dep", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (next((venv / "lib").iterdir()) / "site-packages" / "sbox_dep.pth").exists()  # it wrote one
    assert LINE not in result.stderr, result.stderr


def test_a_venv_s_bin_made_a_link_is_said_too(runs: Runs, tmp_path: Path) -> None:
    """`.venv/bin` swapped for a link to a directory the step filled: `activate` is then its own."""
    root = project(tmp_path)
    _venv(root)
    result = runs.run(root, "sh", "-c", "mkdir .venv/own && cp -r .venv/bin/. .venv/own/ && "
                                        "echo 'echo planted' >> .venv/own/activate && mv .venv/bin .venv/old && "
                                        "ln -s own .venv/bin")
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1 and ".venv/bin" in said[0], result.stderr


def test_a_module_a_pth_imports_rewritten_in_place_is_said_too(runs: Runs, tmp_path: Path) -> None:
    """Red team 17: setuptools' `distutils-precedence.pth` imports `_distutils_hack` at every start
    of the venv's Python; a step appended to `_distutils_hack/__init__.py` and nothing was said."""
    root = project(tmp_path)
    venv, site = _venv(root)
    (root / site / "distutils-precedence.pth").write_text(
        "import os; var = 'X'; enabled = os.environ.get(var, 'local') == 'local'; "
        "enabled and __import__('_distutils_hack').add_shim(); \n")
    (root / site / "_distutils_hack").mkdir()
    (root / site / "_distutils_hack" / "__init__.py").write_text("def add_shim():\n    pass\n")
    (root / site / "other.py").write_text("X = 1\n")  # imported by no .pth
    marker = tmp_path / "hack-ran"
    result = runs.run(root, "sh", "-c", f"echo \"open('{marker}', 'w').write('ran')\" >> "
                                        f"{site}/_distutils_hack/__init__.py && echo 'X = 2' >> {site}/other.py")
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1 and f"{site}/_distutils_hack/__init__.py" in said[0], result.stderr
    assert "other.py" not in said[0]  # the limit: a module no .pth imports
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.exists()  # the control: what it said runs at the venv's next start


def _pyc_of(source: Path, code: str) -> bytes:
    """The host Python's pyc for `source` (its mtime and size in the header), running `code`."""
    import importlib.util
    import marshal

    st = source.stat()
    return (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
            + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little") + marshal.dumps(compile(code, str(source), "exec")))


@pytest.mark.parametrize("form", ["sourceless", "package", "cached"])
def test_startup_code_as_bytecode_or_a_package_is_said_too(runs: Runs, tmp_path: Path, form: str) -> None:
    """Red team 18: the startup modules in the forms Python imports besides `x.py`: a sourceless
    `sitecustomize.pyc`, a package `sitecustomize/`, and the pyc in `__pycache__` of the module a
    .pth imports (`_distutils_hack`), rewritten with a header that matches its source. Each ran at
    the venv's next start, and nothing was said."""
    import importlib.util

    root = project(tmp_path)
    venv, site = _venv(root)
    (root / site / "distutils-precedence.pth").write_text("import _distutils_hack\n")
    (root / site / "_distutils_hack").mkdir()
    source = root / site / "_distutils_hack" / "__init__.py"
    source.write_text("X = 1\n")
    marker = tmp_path / "startup-ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    if form == "sourceless":
        planted = f"{site}/sitecustomize.pyc"
        (root / "payload.bin").write_bytes(_pyc_of(source, payload))  # a sourceless pyc is not checked
    elif form == "package":
        planted = f"{site}/sitecustomize/__init__.py"
        (root / "payload.bin").write_text(payload)
    else:
        planted = str(Path(importlib.util.cache_from_source(str(source))).relative_to(root))
        (root / "payload.bin").write_bytes(_pyc_of(source, payload))
    plant = ["sh", "-c", f"mkdir -p \"$(dirname {planted})\" && cp payload.bin {planted}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control: the venv's next start runs it
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.exists()
    marker.unlink()
    subprocess.run(["rm", "-rf", planted, f"{site}/sitecustomize"], cwd=root, check=True)
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1 and planted in said[0], result.stderr


def test_a_pth_in_debian_s_dist_packages_is_said_too(runs: Runs, tmp_path: Path) -> None:
    """Red team 19: a venv of Debian's Python reads `.pth` files in `lib/python3/dist-packages`
    too (its site.py), and one a step added there ran at the venv's next start, unsaid."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no Debian python3 here")
    root = project(tmp_path)
    venv = root / ".venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300,
                   capture_output=True)
    marker = tmp_path / "dist-ran"
    plant = ["sh", "-c", "mkdir -p .venv/lib/python3/dist-packages && "
             f"echo \"import os; open('{marker}', 'w').write('ran')\" > .venv/lib/python3/dist-packages/zz.pth"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control: Debian's site.py reads it
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.exists()
    marker.unlink()
    subprocess.run(["rm", "-r", ".venv/lib/python3"], cwd=root, check=True)
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1 and ".venv/lib/python3/dist-packages/zz.pth" in said[0], result.stderr


def test_startup_code_in_a_directory_a_pth_puts_on_the_path_is_said_too(runs: Runs, tmp_path: Path) -> None:
    """Red team 19: an editable install's `.pth` puts the project's `src` on sys.path, and a
    `src/sitecustomize.py` a step wrote ran at every start of the venv's Python, unsaid. Here also
    a module a `.pth` imports, found there (the control runs that one: a Python of its own may
    have a sitecustomize before the project's)."""
    root = project(tmp_path)
    venv, site = _venv(root)
    (root / "src").mkdir()
    (root / site / "a_src.pth").write_text(f"{root / 'src'}\n")  # as an editable install writes it
    (root / site / "b_hook.pth").write_text("import zz_startup\n")
    (root / "src" / "zz_startup.py").write_text("X = 1\n")
    marker = tmp_path / "src-ran"
    plant = ["sh", "-c", f"echo \"open('{marker}', 'w').write('ran')\" > src/zz_startup.py && echo 'X = 2' > "
             "src/sitecustomize.py && echo 'Y = 1' > src/other.py"]
    said = _said_after_control(runs, root, venv, marker, plant)
    assert "src/zz_startup.py" in said and "src/sitecustomize.py" in said and "other.py" not in said, said


def test_the_top_or_a_relative_directory_a_pth_names_is_read_too(runs: Runs, tmp_path: Path) -> None:
    """Red team 20: a flat layout's editable install puts the project's top itself on sys.path, and
    a `.pth` path line may be relative (to site-packages): a `sitecustomize/` package at the top
    (hidden by its own `.gitignore`) and a module in `lib2/` that a `.pth` imports ran at every
    start, unsaid."""
    root = project(tmp_path)
    venv, site = _venv(root)
    (root / "lib2").mkdir()
    (root / site / "a_top.pth").write_text(f"{root}\n")
    (root / site / "b_rel.pth").write_text("../../../../lib2\n")
    (root / site / "c_hook.pth").write_text("import zz2\n")
    (root / "lib2" / "zz2.py").write_text("X = 1\n")
    marker = tmp_path / "rel-ran"
    plant = ["sh", "-c", f"echo \"open('{marker}', 'w').write('ran')\" > lib2/zz2.py && mkdir -p sitecustomize && "
             "echo '*' > sitecustomize/.gitignore && echo 'X = 2' > sitecustomize/__init__.py"]
    said = _said_after_control(runs, root, venv, marker, plant)  # the control: the relative line's module
    assert "lib2/zz2.py" in said and "sitecustomize/__init__.py" in said, said


def _said_after_control(runs: Runs, root: Path, venv: Path, marker: Path, plant: list[str]) -> str:
    """The control (`plant` made without sbox: the venv's next start writes `marker`), then `plant`
    in a step: the one line it says."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(plant, cwd=root, check=True, timeout=60)
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.exists()
    marker.unlink()
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith(LINE)]
    assert len(said) == 1, result.stderr
    return said[0]
