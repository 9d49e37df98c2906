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
from support.boundary import config
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


def _env(venv: Path | None, index: PypiIndex | str, quiet: bool = True) -> dict[str, str]:
    """The caller's environment with `index` as pip's only index; with `venv` activated, if given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_INDEX_URL=index if isinstance(index, str) else index.index_url, PIP_CONFIG_FILE=os.devnull)
    if venv:
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
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
    # The project is read-only to pip's phases: the download phase may write sbox's cache (this
    # project's HTTP cache, and this run's wheelhouse, removed after the run), the install phase the venv.
    import hashlib

    from sbox_shim.paths import sbox_dir

    project = tmp_path / "project"
    key = hashlib.sha256(os.path.realpath(project).encode()).hexdigest()[:16]
    http = os.path.join(sbox_dir("cache", dict(os.environ)), "pip", key, "http")
    with trap(fake_home, tmp_path, project, proofs_in=f".venv:{http}") as t:
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
    """Issue 11 (13): each step reads as the pip command it is (sbox's own pip on the venv's base
    interpreter, mounted as /.sbox/pip-install or /.sbox/pip), no `sh -c` wrapper. A wheel-only
    install completes in its first step (pip_install.py): the two phases after it are skipped, with
    why; an install that builds runs them, announced as before, after one line saying so."""
    t = world
    (t.project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(t.project / "sbox.yaml")
    venv = _venv(t.project)
    dists = [pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"}),
             pkg.sdist("sbox-src", "1.0", "", {"sbox_src.py": "N = 1\n"}, backend="intree")]
    with PypiIndex(dists) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-dep"], t.project,
                          env=_env(venv, index, quiet=False))
        built = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-src"], t.project,
                         env=_env(venv, index, quiet=False))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "sh -c" not in result.stderr + built.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    # The venv's pip never runs with the network: sbox's own pip on the venv's base interpreter does.
    assert lines[0].startswith("sbox: step 1/3 [download] /") and " -I -S /.sbox/pip-install install " in lines[0]
    assert lines[0].endswith(f" sbox-dep -> sandbox ({backend}), profile pip:download, network: allowlist (proxy)")
    skipped = "skipped: every distribution was a wheel: installed in step 1"
    assert lines[1:] == [f"sbox: step 2/3 [download] {skipped}", f"sbox: step 3/3 [scripts] {skipped}"]
    assert _imports(venv, "import sbox_dep; print(sbox_dep.N)") == "41"

    assert built.returncode == 0, built.stderr[-4000:]
    lines = [ln for ln in built.stderr.splitlines() if ln.startswith("sbox:")]
    assert lines[1] == "sbox: sbox_src-1.0.tar.gz is not a wheel: installing in two phases (download, then install offline)"
    assert lines[2].startswith("sbox: step 2/3 [download] /") and " -I -S /.sbox/pip download --dest " in lines[2]
    assert lines[2].endswith(f" sbox-src -> sandbox ({backend}), profile pip:download, network: allowlist (proxy)")
    assert lines[3].startswith("sbox: step 3/3 [scripts] pip install --no-index --find-links ")
    assert lines[3].endswith(f" sbox-src -> sandbox ({backend}), profile pip:scripts, network off")
    assert len(lines) == 4, lines
    assert _imports(venv, "import sbox_src; print(sbox_src.N)") == "1"


# --- issue 11: what a new user meets ---------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, fake_home: Path, backend: str) -> Path:
    config(tmp_path / "project", backend)
    return tmp_path / "project"


def _imports(venv: Path, code: str) -> str:
    check = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return check.stdout.strip()


def test_sdist_build_requirements_from_the_index_are_fetched_recursively(project: Path, sbox_bin: str) -> None:
    """Issue 11 (7): an sdist whose build backend is on the index (itself an sdist whose own build
    backend is a wheel there) builds offline: the download phase fetched the build requirements,
    round after round, and the offline build environment found them in the wheelhouse."""
    venv = _venv(project)
    dists = [
        pkg.backend_wheel("sbox-wheelmaker", "1.0", "sbox_wheelmaker"),
        pkg.built_sdist("sbox-backend", "1.0", {"sbox_backend.py": pkg.PREBUILT_BACKEND}, ["sbox-wheelmaker"],
                        "sbox_wheelmaker"),
        pkg.built_sdist("sbox-app", "1.0", {"sbox_app.py": "HOW = 'built offline'\n"}, ["sbox-backend>=1"],
                        "sbox_backend"),
    ]
    with PypiIndex(dists) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-app"], project, env=_env(venv, index))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert _imports(venv, "import sbox_app; print(sbox_app.HOW)") == "built offline"
    assert {"/files/sbox_backend-1.0.tar.gz", "/files/sbox_wheelmaker-1.0-py3-none-any.whl"} <= set(index.requests)


def _mirror(root: Path, dists: list[tuple[str, bytes]]) -> Path:
    """A PEP 503 mirror on disk as this machine's own is laid out: `simple/<project>/index.html`
    linking `../../files/<file>`. Returns the `simple/` directory."""
    for filename, data in dists:
        name = pkg.normalize_pypi_name(filename.split("-")[0])
        (root / "files").mkdir(parents=True, exist_ok=True)
        (root / "files" / filename).write_bytes(data)
        page = root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f'<!DOCTYPE html><html><body>\n<a href="../../files/{filename}">{filename}</a>\n</body></html>\n')
    return root / "simple"


def test_a_file_index_linking_outside_its_directory_installs(project: Path, tmp_path: Path, sbox_bin: str) -> None:
    """Issue 11 (1): the mirror's root (read-only) is mounted, not only `simple/`."""
    venv = _venv(project)
    simple = _mirror(tmp_path / "mirror", [pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})])
    result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-dep"], project,
                      env=_env(venv, f"file://{simple}/"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert _imports(venv, "import sbox_dep; print(sbox_dep.N)") == "41"


def test_a_file_index_whose_files_cannot_be_mounted_is_refused_in_one_line(project: Path, tmp_path: Path,
                                                                             sbox_bin: str) -> None:
    """A mirror whose pages link too far up (here: above HOME's parent) gets one line, no traceback."""
    venv = _venv(project)
    simple = _mirror(tmp_path / "a" / "b" / "c", [pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})])
    page = simple / "sbox-dep" / "index.html"
    page.write_text(page.read_text().replace("../../files/", "../../../../../files/"))
    result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-dep"], project,
                      env=_env(venv, f"file://{simple}/"))
    assert result.returncode == 2, (result.stdout + result.stderr)[-6000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"sbox: {simple}: the pip index's pages link to files under ") and "does not mount" in line


def test_pip_install_outside_a_venv_is_refused_before_running(project: Path, sbox_bin: str) -> None:
    """Issue 11 (10): no venv, so the install would land in the sandbox's throwaway HOME: refused in
    one line before anything runs (the index sees no request); `--target` inside the project works.
    The interpreter's own pip, not a pyenv shim (which rehashes its read-only shims after installing)."""
    prefix = subprocess.run([str(PYTHON), "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    env_path = f"{prefix}/bin{os.pathsep}{os.environ['PATH']}"
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]) as index:
        env = dict(_env(None, index), PATH=env_path)
        refused = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-dep"], project, env=env)
        assert index.requests == []
        target = run_sbox(sbox_bin, ["run", "--", "pip", "install", "--target", "vendor", "sbox-dep"], project, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "sbox: pip install outside a virtual environment would install into the sandbox's throwaway HOME, not "
        "your Python: create and activate a venv (python3 -m venv .venv && . .venv/bin/activate), or install "
        "with --target DIR inside the project"]
    assert target.returncode == 0, (target.stdout + target.stderr)[-6000:]
    assert (project / "vendor" / "sbox_dep.py").read_text() == "N = 41\n"


def test_a_venv_s_pip_installs_into_a_project_directory_it_is_told(project: Path, sbox_bin: str) -> None:
    """`--target vendor` with a venv's pip: the directory was left read-only (pip failed with EROFS),
    as the venv was taken for the destination. It is written now, and without bytecode, which the
    guard would quarantine there (red team 15: bytecode a step leaves runs on the host)."""
    venv = _venv(project)
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]) as index:
        result = run_sbox(sbox_bin, ["run", "--", str(venv / "bin" / "pip"), "install", "--target", "vendor",
                                     "sbox-dep"], project, env=_env(venv, index))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert (project / "vendor" / "sbox_dep.py").read_text() == "N = 41\n"
    assert "quarantined" not in result.stderr, result.stderr
    assert not list((project / "vendor").rglob("*.pyc"))


def test_a_local_project_installs_and_the_download_phase_writes_nothing_of_it(project: Path,
                                                                              sbox_bin: str) -> None:
    """`pip install ./localpkg`: learning its dependencies builds its metadata in its tree (setuptools'
    `*.egg-info`), which failed in the download phase with EROFS. That phase reads a copy; the
    offline install builds it in place, as pip does directly."""
    import io
    import tarfile

    venv = _venv(project)
    name, data = pkg.sdist("sbox-local", "1.0",
                           "import pathlib, os\n"
                           "pathlib.Path('built-here.txt').write_text(os.environ.get('SBOX_PROFILE', '?'))\n",
                           {"sbox_local.py": "WHERE = 'local'\n"}, backend="intree")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(project, filter="data")
    source = project / "sbox_local-1.0"
    with PypiIndex([]) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "./sbox_local-1.0"], project,
                          env=_env(venv, index))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert _imports(venv, "import sbox_local; print(sbox_local.WHERE)") == "local"
    assert (source / "built-here.txt").read_text() == "pip:scripts"  # built in place by the offline phase only


@pytest.mark.parametrize("planted", ["link", "direct"])
def test_a_rewritten_pyvenv_cfg_cannot_mount_a_host_directory(project: Path, fake_home: Path, sbox_bin: str,
                                                              planted: str) -> None:
    """Red team t8: an earlier install phase wrote the venv (outside the project): a link
    `lib/rootlink -> ~/.local` and `base-executable` through it (or, `direct`, naming `~/.local/bin`,
    whose `lib/python3.X` holds site-packages only). The next install would mount `~/.local`, with
    its keyrings, into the download phase: refused in one line, nothing runs (the index sees nothing)."""
    local = fake_home / ".local"
    (local / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (local / "bin").mkdir()
    (local / "share" / "keyrings").mkdir(parents=True)
    (local / "share" / "keyrings" / "login.keyring").write_text("KEYRING-CANARY\n")
    venv = fake_home / "venvs" / "v"
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    if planted == "link":
        (venv / "lib" / "rootlink").symlink_to(local)
        base = venv / "lib" / "rootlink"
    else:
        base = local
    with (venv / "pyvenv.cfg").open("a") as cfg:
        cfg.write(f"base-executable = {base}/bin/python3\n")
    reads = [str(base / "share" / "keyrings" / "login.keyring"), str(local / "share" / "keyrings" / "login.keyring")]
    code = ("import sys\nfor f in %r:\n    try:\n        sys.stderr.write('READ %%r\\n' %% open(f).read())\n"
            "    except OSError as e:\n        sys.stderr.write('NOREAD %%s\\n' %% e)\nraise SystemExit(1)\n" % (reads,))
    with PypiIndex([pkg.sdist("evilpy", "1.0", code, {"evilpy.py": "x = 1\n"}, backend="intree")]) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "evilpy"], project, env=_env(venv, index))
        assert index.requests == []
    assert "KEYRING-CANARY" not in result.stdout + result.stderr
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"sbox: {venv}/pyvenv.cfg: base-executable = {base}/bin/python3 "), line


def test_a_wheel_planted_in_the_wheelhouse_is_not_installed_by_a_later_run(project: Path, fake_home: Path,
                                                                           sbox_bin: str) -> None:
    """Red team t12: a hostile sdist's metadata hook (download phase, the wheelhouse writable) plants
    `victim-99.0` in the wheelhouse it finds on pip's command line. The user throws the venv away
    and installs only `victim`: from the index (1.0), since each run's wheelhouse is its own, made
    empty for it and removed after it, on success as on failure."""
    import base64

    planted, data = pkg.wheel("victim", "99.0", {"victim.py": "VERSION = 'planted'\n"})
    plant = ("import base64, os\nfor pid in os.listdir('/proc'):\n    try:\n"
             "        a = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\\0')\n    except OSError:\n        continue\n"
             "    if b'--dest' in a:\n        d = a[a.index(b'--dest') + 1].decode()\n"
             f"        open(os.path.join(d, {planted!r}), 'wb').write(base64.b64decode({base64.b64encode(data).decode()!r}))\n")
    dists = [pkg.sdist("evilpy", "1.0", plant, {"evilpy.py": "x = 1\n"}, backend="intree"),
             pkg.sdist("evilfail", "1.0", plant + "raise SystemExit(1)\n", {"evilfail.py": "x = 1\n"}, backend="intree"),
             pkg.wheel("victim", "1.0", {"victim.py": "VERSION = '1.0'\n"})]
    runs = Path(os.environ["SBOX_CACHE_DIR"]) / "pip" / "runs"
    with PypiIndex(dists) as index:
        venv = _venv(project)
        first = run_sbox(sbox_bin, ["run", "--", "pip", "install", "evilpy"], project, env=_env(venv, index))
        assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
        assert _imports(venv, "import evilpy; print(evilpy.x)") == "1"
        assert not runs.exists() or list(runs.iterdir()) == []  # removed after the run
        failed = run_sbox(sbox_bin, ["run", "--", "pip", "install", "evilfail"], project, env=_env(venv, index))
        assert failed.returncode != 0
        assert not runs.exists() or list(runs.iterdir()) == []  # and after a failed one
        shutil.rmtree(venv)
        venv = _venv(project)
        again = run_sbox(sbox_bin, ["run", "--", "pip", "install", "victim"], project, env=_env(venv, index))
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert _imports(venv, "import victim; print(victim.VERSION)") == "1.0"


def test_a_local_projects_build_requirements_are_fetched_too(project: Path, sbox_bin: str) -> None:
    """`pip install ./app` whose `[build-system]` names a backend only the index has: the download
    phase fetched the wheelhouse's sdists' build requirements but not the local project's, and the
    offline build found nothing ("from versions: none")."""
    venv = _venv(project)
    app = project / "app"
    (app / "prebuilt").mkdir(parents=True)
    whl_name, whl = pkg.wheel("sbox-localapp", "1.0", {"sbox_localapp.py": "HOW = 'local, built offline'\n"})
    (app / "prebuilt" / whl_name).write_bytes(whl)
    (app / "pyproject.toml").write_text('[build-system]\nrequires = ["sbox-wheelmaker"]\n'
                                        'build-backend = "sbox_wheelmaker"\n')
    with PypiIndex([pkg.backend_wheel("sbox-wheelmaker", "1.0", "sbox_wheelmaker")]) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "./app"], project, env=_env(venv, index))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert _imports(venv, "import sbox_localapp; print(sbox_localapp.HOW)") == "local, built offline"
