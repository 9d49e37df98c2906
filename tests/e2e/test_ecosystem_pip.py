"""pip through the built-in two-phase policy, with the real `sbox run` and the real pip.

The project holds its own venv (`python3 -m venv .venv`, made on the host beforehand) and the
shell looks activated (`.venv/bin` first on PATH, VIRTUAL_ENV set). The index is a local one on
127.0.0.1 given by `PIP_INDEX_URL`; `PIP_CONFIG_FILE=/dev/null` keeps this machine's pip config
out. The policy downloads into a wheelhouse through the allowlist, then installs offline.

A source distribution's setup.py runs in both phases: `pip download` builds its metadata, the
install builds the wheel. Each run leaves its own proof file, and each one must be confined.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.hostile import Trap, trap
from support.registries import PypiIndex
from support.sboxcli import run_sbox
from support.trust import trust

PYTHON = shutil.which("python3")
pytestmark = pytest.mark.skipif(PYTHON is None, reason="python3 is not installed")


def _venv(project: Path) -> Path:
    """The project's own venv, made on the host with the host's python3 (pyenv here)."""
    venv = project / ".venv"
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    return venv


def _env(venv: Path, index: PypiIndex, quiet: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, VIRTUAL_ENV=str(venv),
               PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    if not quiet:
        env.pop("SBOX_QUIET", None)
    return env


def _build_requirements() -> list[tuple[str, bytes]]:
    """setuptools, wheel (and wheel's packaging) from this host, for setup.py-only sdists."""
    found = pkg.build_wheels()
    assert len(found) == 3, f"could not fetch setuptools, wheel and packaging with pip: {found}"
    return [(p.name, p.read_bytes()) for p in found]


@pytest.fixture
def world(tmp_path: Path, fake_home: Path) -> Iterator[Trap]:
    # The project is read-only to pip's phases: the download phase may write its wheelhouse (sbox's
    # cache), the install phase the venv.
    import hashlib

    from sbox_shim.paths import sbox_dir

    project = tmp_path / "project"
    key = hashlib.sha256(str(project).encode()).hexdigest()[:16]
    wheelhouse = os.path.join(sbox_dir("cache", dict(os.environ)), "pip", "wheelhouse", key)
    with trap(fake_home, tmp_path, project, proofs_in=f"{wheelhouse}:.venv") as t:
        yield t


def _hostile_sdist(t: Trap, backend: str) -> tuple[str, bytes]:
    code = pkg.hostile_python(*t.args())
    if backend == "setuptools":
        code += "\nfrom setuptools import setup\nsetup(name='sbox-evil', version='1.0', py_modules=['sbox_evil'])\n"
    return pkg.sdist("sbox-evil", "1.0", code, {"sbox_evil.py": "OK = True\n"}, backend=backend)


@pytest.mark.parametrize("sdist_backend", ["intree", "setuptools"])
def test_hostile_sdist_is_confined_in_both_phases(world: Trap, backend: str, sbox_bin: str,
                                                  sdist_backend: str) -> None:
    t = world
    (t.project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(t.project / "sbox.yaml")
    venv = _venv(t.project)
    dists = [
        pkg.wheel("sbox-hello", "1.0", {"sbox_hello.py": "from sbox_dep import N\nN1 = N + 1\n"},
                  requires=["sbox-dep>=2"]),
        pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"}),
        _hostile_sdist(t, sdist_backend),
    ]
    if sdist_backend == "setuptools":
        dists += _build_requirements()
    with PypiIndex(dists) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-hello", "sbox-evil"], t.project,
                          env=_env(venv, index))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]

    # Installed into the project's venv, from the local index.
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import sbox_hello, sbox_evil; print(sbox_hello.N1, sbox_evil.OK)"],
                           capture_output=True, text=True)
    assert check.stdout.split() == ["42", "True"], check.stderr
    assert {"/simple/sbox-hello/", "/simple/sbox-dep/", "/files/sbox_evil-1.0.tar.gz"} <= set(index.requests)

    # setup.py ran in the download phase (metadata) and again in the offline install phase (the
    # build), and every run was confined.
    proofs = t.proofs()
    assert {p["profile"] for p in proofs} == {"pip:download", "pip:scripts"}, proofs
    for proof in proofs:
        t.assert_confined(proof)
    t.assert_nothing_escaped(out)


def test_steps_are_announced_as_pip_without_a_shell_wrapper(world: Trap, backend: str, sbox_bin: str) -> None:
    """Issue 11 (13): the download step reads as the pip command it is (sbox's own pip on the venv's
    base interpreter, mounted as /.sbox/pip), no `sh -c` wrapper; a wheel-only install fetches no
    build requirements (an index without setuptools costs no note)."""
    t = world
    (t.project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(t.project / "sbox.yaml")
    venv = _venv(t.project)
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-dep"], t.project,
                          env=_env(venv, index, quiet=False))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "sh -c" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    assert len(lines) == 2, lines
    # The venv's pip never runs with the network: sbox's own pip on the venv's base interpreter does.
    assert lines[0].startswith("sbox: step 1/2 [download] /") and " -I -S /.sbox/pip download --dest " in lines[0]
    assert lines[0].endswith(f" sbox-dep -> sandbox ({backend}), profile pip:download, network: allowlist (proxy)")
    assert lines[1].startswith("sbox: step 2/2 [scripts] pip install --no-index --find-links ")
    assert lines[1].endswith(f" sbox-dep -> sandbox ({backend}), profile pip:scripts, network off")
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import sbox_dep; print(sbox_dep.N)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "41", check.stderr
