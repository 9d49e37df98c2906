"""What a user does, end to end: `./install.sh`, `eval "$(sbox activate bash)"`, then a plain
`npm install` (or `pip install`, `cargo build`, `go build`) in a real bash.

In a project with an `sbox.yaml` the shim hands the command to sbox and the built-in policy runs
it in two sandboxed steps; in a directory without one the shim runs the real tool unsandboxed.
Every registry is a local one on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import packages as pkg
from support.hostile import Trap, trap
from support.registries import CargoRegistry, GoProxy, NpmRegistry, PypiIndex
from support.trust import trust

REPO = Path(__file__).resolve().parents[2]
ANNOUNCE = "sbox: step 1/3 [download] "


@dataclass(frozen=True)
class Installed:
    home: Path  # the HOME install.sh ran in: the shims live under it
    bin_dir: Path  # where install.sh linked `sbox`
    work: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`install.sh` once per module, in a fresh HOME, from this checkout. Its dependencies come
    from wherever this machine's pip is configured to install from, as for a user (and as
    `run-tests.sh` itself does). This is setup, not a test step: the commands under test only
    ever reach 127.0.0.1."""
    script = REPO / "install.sh"
    if not script.is_file():
        pytest.skip("install.sh is not there yet")
    work = tmp_path_factory.mktemp("shims-e2e")
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SBOX_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(["bash", str(script), "--prefix", str(work / "venv"), "--bin-dir", str(work / "bin")],
                            env=env, cwd=work, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (work / "bin" / "sbox").exists()
    return Installed(home, work / "bin", work)


def _env(installed: Installed, **extra: str) -> dict[str, str]:
    """A login-like environment: the fresh HOME, `sbox` on PATH, nothing of this test run's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "XDG_", "VIRTUAL_ENV", "npm_config_", "GO", "CARGO_"))}
    env.pop("SBOX_QUIET", None)
    env.pop("SBOX_SHIM_DIRS", None)
    env.update(HOME=str(installed.home), PATH=f"{installed.bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.update(extra)
    return env


def _bash(installed: Installed, commands: str, cwd: Path, env: dict[str, str],
          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    script = f'set -e\neval "$(sbox activate bash)"\n{commands}\n'
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _sandbox_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("sbox:") and " -> sandbox (" in ln]


# --- npm: a hostile postinstall ---------------------------------------------------------------


@pytest.fixture
def npm_world(installed: Installed, tmp_path: Path) -> Iterator[tuple[Trap, NpmRegistry, Path]]:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    with trap(installed.home, tmp_path, tmp_path / "project", proofs_in="node_modules") as t:
        evil = pkg.npm_package("sbox-evil", "1.0.0", {"hostile.js": pkg.hostile_npm_script(*t.args())},
                               scripts={"postinstall": "node hostile.js"})
        hello = pkg.npm_package("sbox-hello", "1.0.0", {"index.js": "module.exports = 42;\n"})
        with NpmRegistry([evil, hello]) as registry:
            for project in (t.project, tmp_path / "plain"):
                project.mkdir(exist_ok=True)
                (project / "package.json").write_text(json.dumps({
                    "name": "app", "version": "0.0.0", "private": True,
                    "dependencies": {"sbox-hello": "1.0.0", "sbox-evil": "1.0.0"}}))
                (project / ".npmrc").write_text(f"registry={registry.url}/\n")
                trust(project / ".npmrc")
            # A loopback registry is admitted only when the user names it: their own ~/.npmrc.
            (installed.home / ".npmrc").write_text(f"registry={registry.url}/\n")
            yield t, registry, tmp_path / "plain"


def test_npm_install_through_the_shim_is_sandboxed(installed: Installed, npm_world: tuple[Trap, NpmRegistry, Path],
                                                   backend: str) -> None:
    t, registry, _ = npm_world
    (t.project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(t.project / "sbox.yaml")
    result = _bash(installed, "cd project\nnpm install", t.project.parent, _env(installed))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    lines = _sandbox_lines(result.stderr)
    assert lines == [
        f"sbox: step 1/2 [download] npm install --ignore-scripts -> sandbox ({backend}), "
        "profile npm:download, network: allowlist (proxy)",
        # Only the install scripts of what the install added (issue 11, item 5): sbox-evil's.
        f"sbox: step 2/2 [scripts] env node /etc/sbox-npm-scripts.js npm install -- {t.project}/node_modules/sbox-evil "
        f"-> sandbox ({backend}), "
        "profile npm:scripts, network off",
    ]
    assert (t.project / "node_modules" / "sbox-hello" / "index.js").is_file()
    assert "/sbox-evil/-/sbox-evil-1.0.0.tgz" in registry.requests
    proofs = t.proofs()
    assert len(proofs) == 1 and proofs[0]["profile"] == "npm:scripts", proofs
    t.assert_confined(proofs[0])
    t.assert_nothing_escaped(out)


def test_npm_install_without_opt_in_runs_the_real_npm_unsandboxed(
        installed: Installed, npm_world: tuple[Trap, NpmRegistry, Path]) -> None:
    """No sbox.yaml above the directory: the shim execs the real npm; the hostile postinstall
    reads the canary (the proof goes to the opted-in project's directory, named in the script)."""
    t, _, plain = npm_world
    (t.project / "node_modules").mkdir(exist_ok=True)  # where the proof goes (named in the script)
    result = _bash(installed, "cd plain\ncommand -v npm\nnpm install", plain.parent, _env(installed))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[0].endswith("/shims/npm")  # the shim was what ran
    assert _sandbox_lines(result.stderr) == []
    assert (plain / "node_modules" / "sbox-evil" / "hostile.js").is_file()
    proofs = t.proofs()
    assert len(proofs) == 1 and proofs[0]["profile"] is None
    t.assert_leaked(proofs[0])


# --- pip, cargo, go: a benign package each ----------------------------------------------------


def test_pip_install_through_the_shim(installed: Installed, tmp_path: Path, backend: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    python = shutil.which("python3")
    assert python
    subprocess.run([python, "-m", "venv", str(project / ".venv")], check=True, timeout=300, capture_output=True)
    with PypiIndex([pkg.wheel("sbox-dep", "2.0", {"sbox_dep.py": "N = 41\n"})]) as index:
        env = _env(installed, PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull)
        # The venv is activated first; `sbox activate` then puts the shims in front of it.
        result = _bash(installed, ". .venv/bin/activate\neval \"$(sbox activate bash)\"\npip install sbox-dep",
                       project, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = _sandbox_lines(result.stderr)
    # A wheel: sbox's own pip installs it in the one network phase (the two phases are skipped).
    assert len(lines) == 1 and lines[0].startswith(ANNOUNCE), lines
    assert " -I -S /.sbox/pip-install install sbox-dep " in lines[0]
    assert lines[0].endswith(f"-> sandbox ({backend}), profile pip:download, network: allowlist (proxy)")
    assert "sbox: step 3/3 [scripts] skipped: every distribution was a wheel" in result.stderr
    check = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", "import sbox_dep; print(sbox_dep.N)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "41", check.stderr


def test_cargo_build_through_the_shim(installed: Installed, tmp_path: Path, backend: str) -> None:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    (project / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nhi = "1"\n')
    (project / "src" / "main.rs").write_text('fn main() { println!("{}", hi::n()); }\n')
    with CargoRegistry([pkg.crate("hi", "1.1.0", "pub fn n() -> u32 { 42 }\n")]) as registry:
        cargo_home = tmp_path / "cargo-home"
        cargo_home.mkdir()
        (cargo_home / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "t"\n\n[source.t]\nregistry = "{registry.index_url}"\n')
        rustup = os.environ.get("RUSTUP_HOME") or str(Path.home() / ".rustup")
        env = _env(installed, CARGO_HOME=str(cargo_home), RUSTUP_HOME=rustup)
        result = _bash(installed, "cargo build", project, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _sandbox_lines(result.stderr) == [
        f"sbox: step 1/2 [download] cargo fetch -> sandbox ({backend}), profile cargo:download, "
        "network: allowlist (proxy)",
        f"sbox: step 2/2 [scripts] cargo build --offline -> sandbox ({backend}), profile cargo:scripts, network off",
    ]
    app = subprocess.run([str(project / "target" / "debug" / "app")], capture_output=True, text=True)
    assert app.stdout.strip() == "42"


def test_go_build_through_the_shim(installed: Installed, tmp_path: Path, backend: str) -> None:
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    (project / "go.mod").write_text("module example.test/app\n\ngo 1.19\n\nrequire example.test/hello v1.1.0\n")
    (project / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.test/hello"\n)\n\nfunc main() { fmt.Println(hello.N()) }\n')
    module = pkg.go_module("example.test/hello", "v1.1.0", {"hello.go": "package hello\n\nfunc N() int { return 42 }\n"})
    with GoProxy([module]) as proxy:
        env = _env(installed, GOPROXY=proxy.url, GOSUMDB="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
        result = _bash(installed, "go build -o app .", project, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _sandbox_lines(result.stderr) == [
        f"sbox: step 1/2 [download] go mod download -> sandbox ({backend}), profile go:download, "
        "network: allowlist (proxy)",
        f"sbox: step 2/2 [scripts] go build -o app . -> sandbox ({backend}), profile go:scripts, network off",
    ]
    app = subprocess.run([str(project / "app")], capture_output=True, text=True)
    assert app.stdout.strip() == "42"
