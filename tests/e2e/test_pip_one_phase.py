"""pip's one-phase install (pip_install.py), with the real `sbox run` and the real pip: a wheel-only
install completes in the network phase, with sbox's own pip, into the same bytes as pip directly;
what an earlier run planted in the venv runs nowhere; anything that builds falls back to the two
phases with package code out of the phase that may write the venv with the network on.

The project holds its own venv (`python3 -m venv`, on the host); the index is on 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.boundary import config
from support.registries import PypiIndex
from support.sboxcli import run_sbox

PYTHON = shutil.which("python3")
pytestmark = pytest.mark.skipif(PYTHON is None, reason="python3 is not installed")
SKIPPED = "skipped: every distribution was a wheel: installed in step 1"


@pytest.fixture
def project(tmp_path: Path, fake_home: Path, backend: str) -> Path:
    config(tmp_path / "project", backend)
    return tmp_path / "project"


def _venv(project: Path) -> Path:
    venv = project / ".venv"
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    return venv


def _env(venv: Path, index_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME", "SBOX_QUIET")}
    env.update(PIP_INDEX_URL=index_url, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return env


def _announced(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("sbox: step ")]


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every file under `root` with its bytes (a link: its target); compiled files by name only
    (their header holds the source's mtime)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = b"" if path.suffix == ".pyc" else path.read_bytes()
    return out


def _dists() -> list[tuple[str, bytes]]:
    """A wheel with a console script and a `#!python` data script, depending on another."""
    return [
        pkg.wheel("sbox-tool", "1.0", {
            "sbox_tool.py": "from sbox_dep import N\ndef main():\n    print('tool', N)\n",
            "sbox_tool-1.0.dist-info/entry_points.txt": "[console_scripts]\nsbox-tool = sbox_tool:main\n",
            "sbox_tool-1.0.data/scripts/sbox-raw": "#!python\nprint('raw')\n"}, requires=["sbox-dep>=2"]),
        pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"}),
    ]


def test_a_wheel_only_install_is_one_phase_and_writes_what_pip_writes_directly(project: Path, sbox_bin: str) -> None:
    """Issue 11 (cost): one pip process, one sandbox; the venv afterwards is byte for byte the one
    the venv's own pip makes directly at the same path: entry-point and data scripts' `#!` lines,
    RECORD, INSTALLER, REQUESTED, direct_url.json of a wheel named by its path."""
    local_name, local = pkg.wheel("sbox-local", "1.0", {"sbox_local.py": "WHERE = 'file'\n"})
    (project / "wheels").mkdir()
    (project / "wheels" / local_name).write_bytes(local)
    args = ["install", "sbox-tool", f"./wheels/{local_name}"]
    with PypiIndex(_dists()) as index:
        venv = _venv(project)
        env = _env(venv, index.index_url)
        direct = subprocess.run([str(venv / "bin" / "pip"), *args], cwd=project, env=dict(
            env, PIP_CACHE_DIR=str(project.parent / "direct-cache")), capture_output=True, text=True, timeout=300)
        assert direct.returncode == 0, direct.stderr[-3000:]
        expected = _tree(venv)
        shutil.rmtree(venv)
        venv = _venv(project)
        result = run_sbox(sbox_bin, ["run", "--", "pip", *args], project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    steps = _announced(result.stderr)
    assert " -I -S /.sbox/pip-install install sbox-tool " in steps[0], steps
    assert steps[1:] == [f"sbox: step 2/3 [download] {SKIPPED}", f"sbox: step 3/3 [scripts] {SKIPPED}"]
    assert "Successfully installed sbox-dep-2.0 sbox-local-1.0 sbox-tool-1.0" in result.stdout
    # What pip says, as directly (no "not on PATH" warning: scripts sit beside its sys.executable).
    assert result.stdout == direct.stdout
    assert [ln for ln in result.stderr.splitlines() if not ln.startswith("sbox: ")] == direct.stderr.splitlines()
    got = _tree(venv)
    assert got.keys() == expected.keys()
    assert [k for k in got if got[k] != expected[k]] == []
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (venv / "bin" / "sbox-tool").read_text().startswith(f"#!{venv}/bin/python")
    assert b"file://" in (site / "sbox_local-1.0.dist-info" / "direct_url.json").read_bytes()
    run = subprocess.run([str(venv / "bin" / "sbox-tool")], capture_output=True, text=True)
    assert run.stdout == "tool 41\n", run.stderr


def _plant(venv: Path, proofs: Path) -> list[str]:
    """What an earlier install phase could have left in the venv: a `.pth`, sitecustomize, modules
    pip imports when present (keyring, brotli, ...), setuptools' `_distutils_hack`, and a `pip`
    script with the venv's `#!` line. Each writes a proof naming itself, the phase and the index
    URL (with its password) it saw. Returns their names."""
    site = next(venv.glob("lib/python3*/site-packages"))

    def code(name: str) -> str:
        return (f"import os as _o; open({str(proofs)!r} + '/' + {name!r}, 'a').write("
                f"'%s %s\\n' % (_o.environ.get('SBOX_PROFILE', 'host'), _o.environ.get('PIP_INDEX_URL', '-')))")

    (site / "aaa-planted.pth").write_text(code("pth") + "\n")
    modules = ["sitecustomize", "keyring", "brotli", "brotlicffi", "simplejson", "socks", "truststore"]
    for name in modules:
        (site / f"{name}.py").write_text(code(name) + "\n")
    (site / "_distutils_hack" / "__init__.py").write_text(code("_distutils_hack") + "\ndef add_shim(): pass\n")
    pip = venv / "bin" / "pip"
    pip.write_text(pip.read_text().splitlines()[0] + "\n" + code("pip") + "\n")
    return ["pth", "_distutils_hack", "pip", *modules]


def test_what_an_earlier_run_planted_in_the_venv_runs_nowhere_in_a_one_phase_install(
        project: Path, tmp_path: Path, sbox_bin: str) -> None:
    """Red team: the one-phase step writes the venv with the network and the index's password.
    Nothing the venv holds runs there, nor anywhere else during the install: not its `.pth`
    files, sitecustomize, modules pip would import if they were on its path, nor its `pip`."""
    venv = _venv(project)
    proofs = venv / "proofs"  # writable by the one-phase step and the offline install alike
    proofs.mkdir()
    planted = _plant(venv, proofs)
    with PypiIndex(_dists()) as index:
        url = index.index_url.replace("http://", "http://sboxuser:SBOX-SECRET-PW@")
        env = _env(venv, url)
        # Live control: each planted file runs when the venv's Python or pip does, on the host.
        imports = ", ".join(n for n in planted if n not in ("pth", "_distutils_hack", "pip", "sitecustomize"))
        subprocess.run([str(venv / "bin" / "python"), "-c", f"import {imports}"], env=env, check=True)
        subprocess.run([str(venv / "bin" / "pip"), "--version"], env=env, check=True)
        assert sorted(p.name for p in proofs.iterdir()) == sorted(planted)
        assert "SBOX-SECRET-PW" in (proofs / "pth").read_text()
        for proof in proofs.iterdir():
            proof.unlink()
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-tool"], project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert _announced(result.stderr)[1:] == [f"sbox: step 2/3 [download] {SKIPPED}",
                                             f"sbox: step 3/3 [scripts] {SKIPPED}"]
    assert {p.name: p.read_text() for p in proofs.iterdir()} == {}
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "sbox_tool.py").is_file() and (site / "sbox_dep.py").is_file()


def test_an_sdist_falls_back_to_the_two_phases_before_its_code_runs(project: Path, sbox_bin: str) -> None:
    """The resolver meets an sdist: the one-phase step leaves before preparing it (its setup.py runs
    in the download phase, which cannot write the venv, and in the offline install, which has no
    network), says so in one line, and the two phases run as they did before it."""
    venv = _venv(project)
    proof = venv / "built-by"
    setup = ("import os\n"
             "try:\n"
             f"    open({str(proof)!r}, 'a').write(os.environ.get('SBOX_PROFILE', '?') + ' '"
             " + os.environ.get('SBOX_PIP_VENV', '-') + '\\n')\n"
             "except OSError:\n    pass\n")
    dists = _dists() + [pkg.sdist("sbox-src", "1.0", setup, {"sbox_src.py": "OK = 1\n"}, backend="intree")]
    with PypiIndex(dists) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-tool", "sbox-src"], project,
                          env=_env(venv, index.index_url))
        # The same command again goes straight to the two phases (for a day): no attempt to pay for.
        again = run_sbox(sbox_bin, ["run", "--", "pip", "install", "--force-reinstall", "sbox-src"], project,
                         env=_env(venv, index.index_url))
        again2 = run_sbox(sbox_bin, ["run", "--", "pip", "install", "--force-reinstall", "sbox-src"], project,
                          env=_env(venv, index.index_url))
    assert again.returncode == 0 and again2.returncode == 0, (again.stderr + again2.stderr)[-6000:]
    assert "is not a wheel" in again.stderr and "is not a wheel" not in again2.stderr
    steps = _announced(again2.stderr)
    assert steps[0] == "sbox: step 1/3 [download] skipped: this command needed a build when last run: straight " \
                       "to the two phases" and len(steps) == 3, steps
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "sbox: sbox_src-1.0.tar.gz is not a wheel: installing in two phases (download, then install offline)" \
        in result.stderr
    steps = _announced(result.stderr)
    assert [s.split(" -> ")[0].split("] ")[0] for s in steps] == [
        "sbox: step 1/3 [download", "sbox: step 2/3 [download", "sbox: step 3/3 [scripts"]
    assert " /.sbox/pip download --dest " in steps[1] and steps[2].split("] ")[1].startswith("pip install --no-index")
    # The offline build's hooks only: the download phase's could not write the venv, the one-phase step ran none.
    assert set(proof.read_text().splitlines()) == {"pip:scripts -"}
    site = next(venv.glob("lib/python3*/site-packages"))
    assert {"sbox_tool.py", "sbox_dep.py", "sbox_src.py"} <= {p.name for p in site.iterdir()}


FORGE = """import glob, os
for cmdline in glob.glob('/proc/[0-9]*/cmdline'):
    try:
        words = open(cmdline, 'rb').read().split(b'\\0')
    except OSError:
        continue
    if b'--dest' in words:
        try:
            open(os.path.join(words[words.index(b'--dest') + 1].decode(), '.sbox-installed'), 'w').close()
        except OSError:
            pass
"""


def test_a_mark_the_download_phase_forges_does_not_skip_the_install(project: Path, sbox_bin: str) -> None:
    """An sdist's metadata hook runs in the download phase, which writes the wheelhouse: the
    one-phase step's mark it plants there must not make sbox skip the offline install and say all
    was installed (the package, and all else on the command line, would silently be missing)."""
    venv = _venv(project)
    dists = _dists() + [pkg.sdist("sbox-forge", "1.0", FORGE, {"sbox_forge.py": "OK = 1\n"}, backend="intree")]
    with PypiIndex(dists) as index:
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-tool", "sbox-forge"], project,
                          env=_env(venv, index.index_url))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert SKIPPED not in result.stderr, result.stderr[-4000:]
    site = next(venv.glob("lib/python3*/site-packages"))
    assert {"sbox_tool.py", "sbox_forge.py"} <= {p.name for p in site.iterdir()}


def test_the_client_certificate_s_key_stays_in_the_network_phases(project: Path, sbox_bin: str, tmp_path: Path) -> None:
    """`PIP_CLIENT_CERT` names a PEM holding a private key: a credential. The offline install,
    where an sdist's build runs, neither sees the variable nor can read the file."""
    venv = _venv(project)
    cert = tmp_path / "certs" / "client.pem"
    cert.parent.mkdir()
    cert.write_text("-----BEGIN PRIVATE KEY-----\nCLIENTKEY-CANARY-42\n-----END PRIVATE KEY-----\n")
    proof = venv / "cert-proof"
    thief = ("import os\n"
             "if os.environ.get('SBOX_PROFILE') == 'pip:scripts':\n"
             "    seen = os.environ.get('PIP_CLIENT_CERT', '-')\n"
             "    try:\n"
             f"        seen += ' ' + open({str(cert)!r}).read()\n"
             "    except OSError as e:\n"
             "        seen += ' unreadable'\n"
             f"    open({str(proof)!r}, 'a').write(seen + '\\n')\n")
    assert "CLIENTKEY-CANARY-42" in cert.read_text()  # control: the host reads it
    dists = _dists() + [pkg.sdist("sbox-thief", "1.0", thief, {"sbox_thief.py": "OK = 1\n"}, backend="intree")]
    with PypiIndex(dists) as index:
        env = dict(_env(venv, index.index_url), PIP_CLIENT_CERT=str(cert))
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "sbox-thief"], project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    seen = proof.read_text()
    assert set(seen.splitlines()) == {"- unreadable"}, seen  # the build ran offline (twice), and saw neither
