"""uv through its built-in policy, with the real `sbox run` and the real uv (issue 11, item 8:
`uv pip install` failed even offline; the shim handed uv to a network-off default profile).

The index is a local one on 127.0.0.1 the user names (UV_INDEX_URL / UV_DEFAULT_INDEX); uv's
install-family commands run in one step through the registry allowlist; `uv run` syncs that way,
then runs its command with the network off.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import PypiIndex
from support.sboxcli import run_sbox
from support.trust import trust


def _find_uv() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "uv")
    return beside if os.access(beside, os.X_OK) else shutil.which("uv")


def _outside_a_venv(found: str | None) -> str | None:
    """uv copied out of the test venv: sbox runs no tool from a venv's bin in a step with the
    network (a wheel can put any program there), so the tests keep uv where a user's would be."""
    if found is None:
        return None
    import tempfile

    here = os.path.join(tempfile.gettempdir(), f"sbox-test-uv-{os.getuid()}")
    os.makedirs(here, mode=0o700, exist_ok=True)
    copy = os.path.join(here, "uv")
    if not os.path.exists(copy) or os.path.getsize(copy) != os.path.getsize(found):
        shutil.copy2(found, copy + ".tmp")
        os.replace(copy + ".tmp", copy)
    return copy


UV = _outside_a_venv(_find_uv())
pytestmark = pytest.mark.skipif(UV is None, reason="uv is not installed (run-tests.sh installs it into .venv)")
PROBE = ("import os, sbox_hello, urllib.request\n"
         "try:\n    urllib.request.urlopen('%s', timeout=5); net = 'reached'\n"
         "except OSError:\n    net = 'offline'\n"
         "print(sbox_hello.N1, os.environ.get('SBOX_PROFILE'), net)\n")


@pytest.fixture
def index() -> Iterator[PypiIndex]:
    dists = [pkg.wheel("sbox-hello", "1.0", {"sbox_hello.py": "from sbox_dep import N\nN1 = N + 1\n"},
                       requires=["sbox-dep>=2"]),
             pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]
    with PypiIndex(dists) as served:
        yield served


def _project(tmp_path: Path, backend: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    return project


def _env(**extra: str) -> dict[str, str]:
    assert UV is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PIP_"))}
    env["PATH"] = os.path.dirname(UV) + os.pathsep + env["PATH"]
    env.update(extra)  # HOME is the test's own: no user uv.toml
    return env


def test_uv_pip_install_into_the_venv_from_the_users_index(
        tmp_path: Path, backend: str, sbox_bin: str, index: PypiIndex, fake_home: Path) -> None:
    project = _project(tmp_path, backend)
    assert UV is not None
    subprocess.run([UV, "venv", "-q", str(project / ".venv")], check=True, timeout=120, env=_env())
    env = _env(UV_INDEX_URL=index.index_url, VIRTUAL_ENV=str(project / ".venv"))
    plan = run_sbox(sbox_bin, ["plan", "--", "uv", "pip", "install", "sbox-hello"], project, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "profile: uv:download" in plan.stdout and "127.0.0.1=127.0.0.1" in plan.stdout
    assert "project: read-only but for .venv/" in plan.stdout
    result = run_sbox(sbox_bin, ["run", "--", "uv", "pip", "install", "sbox-hello"], project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", "import sbox_hello; print(sbox_hello.N1)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "42", check.stderr
    assert {"/simple/sbox-hello/", "/simple/sbox-dep/"} <= set(index.requests)
    assert not any(n.startswith("pyvenv") for n in os.listdir(project))  # nothing but the venv written


def test_uv_pip_install_offline_from_local_wheels(
        tmp_path: Path, backend: str, sbox_bin: str, index: PypiIndex, fake_home: Path) -> None:
    project = _project(tmp_path, backend)
    wheels = tmp_path / "wheels"  # outside the project: mounted read-only for the step
    wheels.mkdir()
    for name in ("sbox-hello", "sbox-dep"):
        for filename, data in index.projects[name].items():
            (wheels / filename).write_bytes(data)
    assert UV is not None
    subprocess.run([UV, "venv", "-q", str(project / ".venv")], check=True, timeout=120, env=_env())
    env = _env(VIRTUAL_ENV=str(project / ".venv"))
    result = run_sbox(sbox_bin, ["run", "--", "uv", "pip", "install", "--offline", "--no-index",
                                 "--find-links", str(wheels), "sbox-hello"], project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / ".venv" / "lib").exists()
    check = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", "import sbox_hello; print(sbox_hello.N1)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "42", check.stderr


def test_uv_sync_then_run_offline_then_add(
        tmp_path: Path, backend: str, sbox_bin: str, index: PypiIndex, fake_home: Path) -> None:
    project = _project(tmp_path, backend)
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.8"\n'
                                            'dependencies = ["sbox-hello"]\n')
    env = _env(UV_DEFAULT_INDEX=index.index_url)
    result = run_sbox(sbox_bin, ["run", "--", "uv", "sync"], project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "uv.lock").is_file() and (project / ".venv" / "pyvenv.cfg").is_file()

    # `uv run`: the sync through the allowlist, then the command itself with the network off.
    seen = len(index.requests)
    run = run_sbox(sbox_bin, ["run", "--", "uv", "run", "python", "-c", PROBE % index.index_url], project, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["42", "uv:scripts", "offline"]
    assert len(index.requests) == seen  # the probe never reached the index

    added = run_sbox(sbox_bin, ["run", "--", "uv", "add", "sbox-dep"], project, env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "sbox-dep" in (project / "pyproject.toml").read_text().split("dependencies")[1]


def test_the_projects_own_uv_settings_need_trust(tmp_path: Path, sbox_bin: str, index: PypiIndex,
                                                 fake_home: Path) -> None:
    project = _project(tmp_path, "bwrap")
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "0"\n\n[tool.uv]\n'
                                            'index-url = "https://mirror.example/simple"\n')
    refused = run_sbox(sbox_bin, ["plan", "--", "uv", "sync"], project, env=_env())
    assert refused.returncode != 0 and "pyproject.toml" in refused.stderr, refused.stdout + refused.stderr
    trust(project / "pyproject.toml")
    plan = run_sbox(sbox_bin, ["plan", "--", "uv", "sync"], project, env=_env())
    assert plan.returncode == 0, plan.stderr
    assert "mirror.example" in plan.stdout  # admitted as a name a project file implies


def test_a_build_backend_cannot_poison_another_projects_uv_cache(
        tmp_path: Path, backend: str, sbox_bin: str, fake_home: Path) -> None:
    """Red team t25: project A's sdist build backend (uv's network step, its cache writable) edits
    every cached copy of `victim` it can reach under sbox's cache; project B, which synced victim
    before, syncs again after losing its venv. B's cache is its own: it installs victim untouched."""
    cache_root = os.environ["SBOX_CACHE_DIR"]
    poison = ("import glob, os, sys\nhits = []\n"
              f"for f in glob.glob({cache_root!r} + '/**/victim.py', recursive=True):\n"
              "    try:\n        open(f, 'a').write('\\nPOISONED = True\\n'); hits.append(f)\n"
              "    except OSError as e:\n        hits.append('refused %s' % e)\n"
              "sys.stderr.write('POISON ran: %r\\n' % hits)\n")
    victim = pkg.wheel("victim", "1.0", {"victim.py": "POISONED = False\n"})
    evil = pkg.sdist("evilpy", "1.0", poison, {"evilpy.py": "x = 1\n"}, backend="intree")
    with PypiIndex([victim, evil]) as index:
        env = _env(UV_DEFAULT_INDEX=index.index_url)
        projects = {}
        for name, dep in (("projb", "victim==1.0"), ("proja", "evilpy==1.0")):
            root = tmp_path / name
            root.mkdir()
            (root / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
            trust(root / "sbox.yaml")
            (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n'
                                                 f'requires-python = ">=3.8"\ndependencies = ["{dep}"]\n')
            projects[name] = root
        first = run_sbox(sbox_bin, ["run", "--", "uv", "sync"], projects["projb"], env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        hostile = run_sbox(sbox_bin, ["run", "--", "uv", "sync", "-v"], projects["proja"], env=env)
        assert hostile.returncode == 0, hostile.stdout + hostile.stderr
        shutil.rmtree(projects["projb"] / ".venv")
        again = run_sbox(sbox_bin, ["run", "--", "uv", "sync"], projects["projb"], env=env)
        assert again.returncode == 0, again.stdout + again.stderr
    installed = list((projects["projb"] / ".venv").rglob("victim.py"))
    assert installed and all("POISONED = True" not in p.read_text() for p in installed), hostile.stderr
