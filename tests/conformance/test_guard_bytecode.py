"""Red team 15: Python bytecode a step leaves in the project runs on the host instead of its source.

A step that may write the project (`sbox run`, `npm test`, the project's own `prepare`) wrote
`__pycache__/util.cpython-311.pyc` for a reviewed, unchanged `util.py`: `__pycache__` is ignored by
git, so `git status` showed nothing, and the host's next `python3 app.py` ran the step's code (an
unchecked hash-based pyc is never compared with its source: it survives edits of the `.py`). The
guard now moves away every `.pyc` of the project's own (not in a venv's `site-packages` or
`node_modules`) that the step created or rewrote, in place too, and an extension module planted
beside a `.py` of its name; Python in the sandbox writes none of its own (PYTHONDONTWRITEBYTECODE).
Each plant is proven to run on the host without sbox (the control).
"""
from __future__ import annotations

import importlib.util
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import PY, Runs, project

HOST_PY = sys.executable  # the host's Python: the one whose bytecode the plant is made for


def _app(tmp_path: Path) -> tuple[Path, Path]:
    root = project(tmp_path)
    (root / "util.py").write_text('def greet():\n    return "hello"\n')
    (root / "app.py").write_text("import util\nprint(util.greet())\n")
    return root, tmp_path / "bytecode-ran"


def _payload(root: Path, marker: Path) -> Path:
    """The host Python's pyc for util.py with the attacker's code, checked against util.py's
    size and mtime as a real one is: a file in the project the step copies into place."""
    code = compile(f"open({str(marker)!r}, 'w').write('ran')\ndef greet():\n    return 'hello'\n", "util.py", "exec")
    st = (root / "util.py").stat()
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + \
        (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    payload = root / "payload.bin"
    payload.write_bytes(header + marshal.dumps(code))
    return payload


def _pyc(root: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(root / "util.py")))


def _host_runs_app(root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as a user's shell has it
    return subprocess.run([HOST_PY, "app.py"], cwd=root, env=env, capture_output=True, text=True, timeout=60,
                          check=True).stdout


def test_bytecode_a_step_plants_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    root, marker = _app(tmp_path)
    payload = _payload(root, marker)
    target = _pyc(root).relative_to(root)
    plant = ["sh", "-c", f'mkdir -p "$(dirname {target})" && cp payload.bin {target}']
    # the control: planted without sbox, the host's next run of the app runs it
    subprocess.run(plant, cwd=root, check=True, timeout=60)
    assert _host_runs_app(root) == "hello\n" and marker.exists()
    marker.unlink()
    _pyc(root).unlink()
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    assert f"quarantined {target} (created by the sandbox, bytecode)" in result.stderr, result.stderr
    assert not _pyc(root).exists()
    assert _host_runs_app(root) == "hello\n"
    assert not marker.exists()
    assert payload.exists()  # what it copied from is the project's file: not the guard's business


def test_bytecode_rewritten_in_place_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """The host has run the app: a real pyc exists, in a `__pycache__` the walk has seen. The step
    rewrites it in place (same inode: the directory's ctime does not change)."""
    root, marker = _app(tmp_path)
    _host_runs_app(root)
    pyc = _pyc(root)
    assert pyc.exists()
    runs.run(root, "true")  # the guard's index now holds __pycache__ as unchanged
    _payload(root, marker)  # payload.bin
    inode = pyc.stat().st_ino
    result = runs.run(root, PY, "-c", f"open({str(pyc)!r}, 'r+b').write(open('payload.bin', 'rb').read())")
    assert result.returncode == 0, result.stderr
    # ("created": the guard keeps no earlier copy of bytecode, so it cannot tell; nothing is put back either way)
    assert f"quarantined {pyc.relative_to(root)} (created by the sandbox, bytecode)" in result.stderr, result.stderr
    assert not pyc.exists() or pyc.stat().st_ino != inode
    assert _host_runs_app(root) == "hello\n"
    assert not marker.exists()
    # the control: the same rewrite on the host keeps the inode, and the host runs it
    _host_runs_app(root)
    subprocess.run([PY, "-c", f"open({str(pyc)!r}, 'r+b').write(open('payload.bin', 'rb').read())"], cwd=root,
                   check=True, timeout=60)
    assert _host_runs_app(root) == "hello\n" and marker.exists()


def test_a_package_link_that_shadows_a_module_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 19: `util` made a link to `node_modules/.cache/u`, a package whose sourceless
    `__init__.pyc` the guard leaves alone there: Python imports the package before `util.py`, and
    the host's `python3 app.py` ran it (bwrap 2/2, docker 2/2). A link named as a module that
    shadows one beside it, or the standard library, is moved; another link is left."""
    root, marker = _app(tmp_path)
    code = compile(f"open({str(marker)!r}, 'w').write('ran')\ndef greet():\n    return 'hello'\n", "x", "exec")
    (root / "payload.bin").write_bytes(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))
    plant = ["sh", "-c", "mkdir -p node_modules/.cache/u && cp payload.bin node_modules/.cache/u/__init__.pyc && "
             "ln -sfn node_modules/.cache/u util && ln -sfn node_modules/.cache/u json && ln -sfn app.py other"]
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control: the host imports the package
    assert _host_runs_app(root) == "hello\n" and marker.exists()
    marker.unlink()
    subprocess.run(["rm", "-rf", "util", "json", "other", "node_modules"], cwd=root, check=True)
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    for link in ("util", "json"):
        assert f"quarantined {link} (created by the sandbox, Python imports through it" in result.stderr, result.stderr
        assert not os.path.lexists(root / link)
    assert "other" not in result.stderr and os.path.islink(root / "other")
    assert _host_runs_app(root) == "hello\n"
    assert not marker.exists()


def test_a_standard_module_s_link_at_a_top_of_packages_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 20: the top holds `pkg/` and no `.py`; `python3 -m pkg.app` there puts the top first
    on sys.path, and imported `json` from a link the step made (bwrap 4/4, docker 2/2)."""
    root = project(tmp_path)
    marker = tmp_path / "json-ran"
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "app.py").write_text("import json\nprint(json.dumps(1))\n")
    (root / "evil").mkdir()
    (root / "evil" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef dumps(x):\n    return '1'\n")
    plant = ["ln", "-s", "evil", "json"]
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control
    subprocess.run([HOST_PY, "-m", "pkg.app"], cwd=root, check=True, timeout=60, capture_output=True)
    assert marker.exists()
    marker.unlink()
    (root / "json").unlink()
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined json (created by the sandbox, Python imports through it" in result.stderr, result.stderr
    subprocess.run([HOST_PY, "-m", "pkg.app"], cwd=root, check=True, timeout=60, capture_output=True)
    assert not marker.exists()


def test_a_package_made_beside_a_module_of_its_name_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 20: `util/__init__.py` beside a reviewed `util.py`, hidden by `util/.gitignore`
    (`*`): Python imports the package, `git status` shows nothing, and the host ran it (the script
    `core.fsmonitor` runs imported it: `git status` itself ran the payload; bwrap 3/3, docker 2/2).
    A package the step writes into beside no such module is left."""
    root, marker = _app(tmp_path)
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    plant = ["sh", "-c", f"mkdir util && echo '*' > util/.gitignore && echo \"open({str(marker)!r}, 'w').write('ran')"
             f"\ndef greet():\n    return 'hello'\" > util/__init__.py && echo 'X = 1' > lib/more.py"]
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control
    assert _host_runs_app(root) == "hello\n" and marker.exists()
    marker.unlink()
    subprocess.run(["rm", "-rf", "util", "lib/more.py"], cwd=root, check=True)
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined util (created by the sandbox, a package before util.py)" in result.stderr, result.stderr
    assert not os.path.lexists(root / "util") and (root / "lib" / "more.py").exists()
    assert _host_runs_app(root) == "hello\n"
    assert not marker.exists()


@pytest.mark.parametrize("form", ["directory", "file"])
def test_bytecode_planted_as_a_link_into_node_modules_is_quarantined(runs: Runs, tmp_path: Path, form: str) -> None:
    """Red team 18: the guard leaves bytecode in `node_modules` alone (installed code), and looked
    at regular files only: a step put its pyc in `node_modules/.cache/pyc` and made `__pycache__`
    a link to that directory (or `__pycache__/util.cpython-311.pyc` a link to the file), and the
    host's Python ran it through the link (8 of 8 runs on bwrap, 6 of 6 on docker). A link named
    as bytecode, or a `__pycache__` link, is moved as bytecode is."""
    root, marker = _app(tmp_path)
    payload = _payload(root, marker)
    pyc = _pyc(root)
    kept = f"node_modules/.cache/pyc/{pyc.name}"
    if form == "directory":
        link, points = "__pycache__", "node_modules/.cache/pyc"
    else:
        link, points = str(pyc.relative_to(root)), f"../{kept}"
    plant = ["sh", "-c", f"mkdir -p node_modules/.cache/pyc __pycache__ && cp payload.bin {kept} && "
             f"rm -rf {link} && ln -s {points} {link}"]
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control: the host runs it through the link
    assert _host_runs_app(root) == "hello\n" and marker.exists()
    marker.unlink()
    subprocess.run(["rm", "-rf", "__pycache__", "node_modules"], cwd=root, check=True)
    result = runs.run(root, *plant)
    assert result.returncode == 0, result.stderr
    assert f"quarantined {link} (created by the sandbox, bytecode)" in result.stderr, result.stderr
    assert not os.path.lexists(root / link)
    assert _host_runs_app(root) == "hello\n"
    assert not marker.exists()
    assert payload.exists()


def test_an_extension_module_that_shadows_an_import_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """`util.abi3.so` is imported before `util.py`; red team 17: a package directory `util/` whose
    `__init__` is an extension module before it too, and `json.so` at the top before the standard
    library's `json`. A plain `.so` that shadows nothing (a build's library) is left."""
    root, _ = _app(tmp_path)
    plants = ["util.abi3.so", "pkg/__init__.cpython-311-x86_64-linux-gnu.so", "json.so", "util.so"]
    result = runs.run(root, "sh", "-c", "mkdir pkg && " + " && ".join(f"printf x > {p}" for p in plants)
                      + " && printf x > libother.so")
    assert result.returncode == 0, result.stderr
    for planted in plants:
        assert f"quarantined {planted} (created by the sandbox, bytecode)" in result.stderr, result.stderr
        assert not (root / planted).exists()
    assert "libother.so" not in result.stderr and (root / "libother.so").exists()


def test_an_extension_module_planted_as_a_package_runs_on_the_host_without_sbox(tmp_path: Path) -> None:
    """The control for the package-directory plant: Python takes `util/` (its `__init__` an
    extension module) over `util.py`; here a sourceless `__init__.pyc` stands in for the .so, which
    the import system ranks the same way (a package before a module)."""
    root, marker = tmp_path / "p", tmp_path / "pkg-ran"
    root.mkdir()
    (root / "util.py").write_text('def greet():\n    return "hello"\n')
    (root / "app.py").write_text("import util\nprint(util.greet())\n")
    (root / "util").mkdir()
    code = compile(f"open({str(marker)!r}, 'w').write('ran')\ndef greet():\n    return 'hello'\n", "x", "exec")
    (root / "util" / "__init__.pyc").write_bytes(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))
    assert _host_runs_app(root) == "hello\n" and marker.exists()


def test_python_in_a_step_writes_no_bytecode_and_is_not_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Running the project's Python in a step (tests, a dev server) leaves nothing to quarantine."""
    root, _ = _app(tmp_path)
    result = runs.run(root, PY, "app.py")
    assert result.returncode == 0 and result.stdout == "hello\n", result.stderr
    assert "quarantined" not in result.stderr, result.stderr
    assert not (root / "__pycache__").exists()
