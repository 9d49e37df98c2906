"""The local registries and fixture packages work with the real clients, unsandboxed.

These validate the test support itself: every registry serves what the real npm, pip,
cargo and go need, and the hostile fixtures really do read the canary, reach the listener and
write outside the project when nothing confines them. Only loopback is ever contacted.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import packages as pkg
from support.listener import CanaryListener, UdpCanaryListener
from support.registries import CargoRegistry, GoProxy, NpmRegistry, PypiIndex


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def _run(argv: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def _base_env(tmp_path: Path) -> dict[str, str]:
    """A scrubbed environment: host PATH, throwaway HOME, nothing else inherited."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8",
            "TMPDIR": str(tmp_path)}


@dataclass
class Trap:
    """Everything a hostile script is pointed at, and what catches it."""

    token: str
    canary: Path
    outside: Path
    proof: Path
    tcp: CanaryListener
    udp: UdpCanaryListener

    def args(self) -> tuple[str, str, int, str, str]:
        return (str(self.canary), self.tcp.host, self.tcp.port, str(self.outside), str(self.proof))

    def assert_leaked(self) -> None:
        """The script ran, and nothing stopped it (as expected on the bare host)."""
        proof = json.loads(self.proof.read_text())
        assert proof["ran"] is True
        assert proof["read_canary"] is True and proof["canary"] == self.token, proof
        assert proof["connected"] is True and proof["udp_sent"] is True, proof
        assert proof["wrote_outside"] is True and self.outside.read_text() == "SBOX-OUTSIDE\n"
        assert proof["errors"] == {}, proof
        leak = f"{pkg.LEAK_MARKER} {self.token}".encode()
        assert self.tcp.wait_for(1, leak), self.tcp.received
        assert self.udp.wait_for(1, leak), self.udp.datagrams


@pytest.fixture
def trap(tmp_path: Path) -> Iterator[Trap]:
    secrets_dir, outside, project = tmp_path / "secrets", tmp_path / "outside", tmp_path / "project"
    for d in (secrets_dir, outside, project):
        d.mkdir()
    token = secrets.token_hex(16)
    (secrets_dir / "canary").write_text(token)
    with CanaryListener() as tcp, UdpCanaryListener() as udp:
        yield Trap(token, secrets_dir / "canary", outside / "pwned", project / "sbox-proof.json",
                   tcp, udp)


# --- npm ------------------------------------------------------------------------------------


def _npm_env(tmp_path: Path) -> dict[str, str]:
    user, glob = tmp_path / "user-npmrc", tmp_path / "global-npmrc"  # npm refuses one file twice
    user.write_text("")
    glob.write_text("")
    return {**_base_env(tmp_path), "npm_config_cache": str(tmp_path / "npm-cache"),
            "npm_config_userconfig": str(user), "npm_config_globalconfig": str(glob),
            "npm_config_update_notifier": "false", "npm_config_audit": "false",
            "npm_config_fund": "false"}


def _npm_install(tmp_path: Path, registry: NpmRegistry, *names: str) -> Path:
    npm = _need("npm")
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "package.json").write_text('{"name": "app", "version": "0.0.0", "private": true}')
    _run([npm, "install", "--registry", registry.url + "/", *names], _npm_env(tmp_path), project)
    return project


def test_npm_installs_scoped_and_plain_packages(tmp_path: Path) -> None:
    dep = pkg.npm_package("@sbox/dep", "1.2.0", {"index.js": "module.exports = 41;\n"})
    old = pkg.npm_package("@sbox/dep", "1.0.0", {"index.js": "module.exports = 0;\n"})
    hello = pkg.npm_package("sbox-hello", "1.0.0",
                            {"index.js": "module.exports = require('@sbox/dep') + 1;\n"},
                            dependencies={"@sbox/dep": "^1.0.0"})
    with NpmRegistry([old, dep, hello]) as registry:
        project = _npm_install(tmp_path, registry, "sbox-hello")
    out = _run(["node", "-p", "require('sbox-hello')"], _base_env(tmp_path), project)
    assert out.strip() == "42"
    lock = json.loads((project / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@sbox/dep"]["version"] == "1.2.0"
    assert lock["packages"]["node_modules/sbox-hello"]["integrity"] == (
        registry.packuments["sbox-hello"]["versions"]["1.0.0"]["dist"]["integrity"])
    assert "/sbox-hello" in registry.requests
    assert "/@sbox/dep/-/dep-1.2.0.tgz" in registry.requests
    assert "/@sbox%2fdep" in [r.lower() for r in registry.requests]  # scoped, url-encoded


def test_npm_hostile_postinstall_leaks_on_host(tmp_path: Path, trap: Trap) -> None:
    script = pkg.hostile_npm_script(*trap.args(), udp_port=trap.udp.port)
    evil = pkg.npm_package("sbox-evil", "1.0.0", {"hostile.js": script},
                           scripts={"postinstall": "node hostile.js"})
    with NpmRegistry([evil]) as registry:
        _npm_install(tmp_path, registry, "sbox-evil")
    trap.assert_leaked()
    assert json.loads(trap.proof.read_text())["ecosystem"] == "npm"


# --- pip ------------------------------------------------------------------------------------


def _venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**_base_env(tmp_path), "PIP_CONFIG_FILE": os.devnull,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return venv / "bin" / "python", env


def _pip_install(tmp_path: Path, index: PypiIndex, *names: str) -> Path:
    python, env = _venv(tmp_path)
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    _run([str(python), "-m", "pip", "install", "--index-url", index.index_url,
          "--no-cache-dir", *names], env, project)
    return python


def test_pip_installs_wheel_and_sdist_from_index(tmp_path: Path) -> None:
    dists = [
        pkg.wheel("Sbox.Hello", "1.0", {"sbox_hello.py": "from sbox_dep import N\nN1 = N + 1\n"},
                  requires=["sbox-dep>=2"]),
        pkg.sdist("sbox_dep", "1.0", "", {"sbox_dep.py": "N = 0\n"}, backend="intree"),
        pkg.sdist("sbox_dep", "2.0", "", {"sbox_dep.py": "N = 41\n"}, backend="intree"),
    ]
    with PypiIndex(dists) as index:
        python = _pip_install(tmp_path, index, "sbox-hello")
    out = _run([str(python), "-c", "import sbox_hello; print(sbox_hello.N1)"],
               _base_env(tmp_path), tmp_path)
    assert out.strip() == "42"
    assert {"/simple/sbox-hello/", "/simple/sbox-dep/", "/files/sbox_dep-2.0.tar.gz"} <= set(
        index.requests)


def _setuptools_wheels() -> list[tuple[str, bytes]]:
    """The build deps pip asks for a setup.py-only sdist, from a local wheelhouse."""
    found = pkg.build_wheels()
    assert len(found) == 3, f"could not fetch setuptools, wheel and packaging with pip: {found}"
    return [(p.name, p.read_bytes()) for p in found]


@pytest.mark.parametrize("backend", ["intree", "setuptools"])
def test_pip_hostile_sdist_leaks_on_host(tmp_path: Path, trap: Trap, backend: str) -> None:
    code = pkg.hostile_python(*trap.args(), udp_port=trap.udp.port)
    build_deps: list[tuple[str, bytes]] = []
    if backend == "setuptools":
        build_deps = _setuptools_wheels()
        code += "\nfrom setuptools import setup\n"
        code += "setup(name='sbox-evil', version='1.0', py_modules=['sbox_evil'])\n"
    evil = pkg.sdist("sbox-evil", "1.0", code, {"sbox_evil.py": "OK = True\n"}, backend=backend)
    with PypiIndex([evil, *build_deps]) as index:
        python = _pip_install(tmp_path, index, "sbox-evil")
    trap.assert_leaked()
    assert json.loads(trap.proof.read_text())["ecosystem"] == "pip"
    check = "import sbox_evil; assert sbox_evil.OK"
    _run([str(python), "-c", check], _base_env(tmp_path), tmp_path)


def test_pip_download_alone_runs_sdist_build_code(tmp_path: Path, trap: Trap) -> None:
    """No install: fetching an sdist already builds its metadata, so setup.py runs."""
    code = pkg.hostile_python(*trap.args(), udp_port=trap.udp.port)
    evil = pkg.sdist("sbox-evil", "1.0", code, {"sbox_evil.py": ""}, backend="intree")
    python, env = _venv(tmp_path)
    with PypiIndex([evil]) as index:
        _run([str(python), "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d",
              str(tmp_path / "wheelhouse"), "--index-url", index.index_url, "sbox-evil"],
             env, tmp_path / "project")
    assert (tmp_path / "wheelhouse" / "sbox_evil-1.0.tar.gz").exists()
    trap.assert_leaked()


# --- cargo ----------------------------------------------------------------------------------


def _cargo_build(
    tmp_path: Path, registry: CargoRegistry, deps: Mapping[str, str], main: str
) -> str:
    cargo = _need("cargo")
    cargo_home = tmp_path / "cargo-home"
    cargo_home.mkdir()
    (cargo_home / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "sbox-test"\n\n'
        f'[source.sbox-test]\nregistry = "{registry.index_url}"\n')
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True, exist_ok=True)
    lines = "".join(f'{name} = "{req}"\n' for name, req in deps.items())
    (project / "Cargo.toml").write_text(
        f'[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{lines}')
    (project / "src" / "main.rs").write_text(main)
    rustup_home = os.environ.get("RUSTUP_HOME") or f"{pwd.getpwuid(os.getuid()).pw_dir}/.rustup"
    env = {**_base_env(tmp_path), "CARGO_HOME": str(cargo_home), "RUSTUP_HOME": rustup_home,
           "CARGO_TERM_COLOR": "never"}
    _run([cargo, "build"], env, project)
    return _run([str(project / "target" / "debug" / "app")], env, project)


def test_cargo_builds_from_sparse_registry(tmp_path: Path) -> None:
    crates = [  # one name per index layout: 1/x, 2/hi, 3/a/abc, sb/ox/sbox_hello
        pkg.crate("x", "0.1.0", "pub const X: u32 = 1;\n"),
        pkg.crate("hi", "1.0.0", "pub fn n() -> u32 { 0 }\n"),
        pkg.crate("hi", "1.1.0", "pub fn n() -> u32 { 40 }\n"),
        pkg.crate("abc", "0.2.0", "pub fn n() -> u32 { hi::n() + 1 }\n", deps=[("hi", "1")]),
        pkg.crate("sbox_hello", "1.0.0", "pub fn n() -> u32 { abc::n() + x::X }\n",
                  build_rs='fn main() { println!("cargo:rustc-env=SBOX_BUILD=ran"); }\n',
                  deps=[("abc", "0.2"), ("x", "0.1")]),
    ]
    main = 'fn main() { println!("{}", sbox_hello::n()); }\n'
    with CargoRegistry(crates) as registry:
        out = _cargo_build(tmp_path, registry, {"sbox_hello": "1"}, main)
    assert out.strip() == "42"
    assert {"/index/config.json", "/index/1/x", "/index/2/hi", "/index/3/a/abc",
            "/index/sb/ox/sbox_hello", "/api/v1/crates/hi/1.1.0/download"} <= set(registry.requests)


def test_cargo_hostile_build_script_leaks_on_host(tmp_path: Path, trap: Trap) -> None:
    build_rs = pkg.hostile_build_rs(*trap.args(), udp_port=trap.udp.port)
    evil = pkg.crate("sbox_evil", "1.0.0", "pub fn ok() -> bool { true }\n", build_rs=build_rs)
    main = 'fn main() { println!("{}", sbox_evil::ok()); }\n'
    with CargoRegistry([evil]) as registry:
        out = _cargo_build(tmp_path, registry, {"sbox_evil": "1"}, main)
    assert out.strip() == "true"
    trap.assert_leaked()
    assert json.loads(trap.proof.read_text())["ecosystem"] == "cargo"


# --- go -------------------------------------------------------------------------------------


def test_go_builds_from_module_proxy(tmp_path: Path) -> None:
    go = _need("go")
    greet = "package hello\n\nfunc N() int { return %d }\n"
    mixed = "package mixed\n\nfunc N() int { return 1 }\n"
    modules = [
        pkg.go_module("example.test/hello", "v1.0.0", {"hello.go": greet % 0}),
        pkg.go_module("example.test/hello", "v1.1.0", {"hello.go": greet % 41}),
        pkg.go_module("example.test/Mixed", "v0.1.0", {"mixed.go": mixed}),
    ]
    project = tmp_path / "project"
    project.mkdir()
    (project / "go.mod").write_text("module example.test/app\n\ngo 1.19\n")
    (project / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.test/Mixed"\n\t"example.test/hello"\n)\n\n'
        "func main() { fmt.Println(hello.N() + mixed.N()) }\n")
    with GoProxy(modules) as proxy:
        env = {**_base_env(tmp_path), "GOPATH": str(tmp_path / "gopath"),
               "GOMODCACHE": str(tmp_path / "gomodcache"), "GOCACHE": str(tmp_path / "gocache"),
               "GOPROXY": proxy.url, "GOSUMDB": "off", "GOFLAGS": "-mod=mod -modcacherw",
               "GOENV": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        _run([go, "get", "example.test/hello", "example.test/Mixed@v0.1.0"], env, project)
        _run([go, "mod", "download"], env, project)
        _run([go, "build", "-o", "app", "."], env, project)
    assert "example.test/hello v1.1.0" in (project / "go.mod").read_text()
    assert _run([str(project / "app")], env, project).strip() == "42"
    assert {"/example.test/hello/@v/list", "/example.test/hello/@v/v1.1.0.zip",
            "/example.test/!mixed/@v/v0.1.0.mod"} <= set(proxy.paths)


# --- the servers themselves -------------------------------------------------------------------


def test_servers_bind_loopback_and_record_requests() -> None:
    import urllib.error
    import urllib.request

    urlopen = urllib.request.build_opener(urllib.request.ProxyHandler({})).open  # never a proxy
    with NpmRegistry() as npm, PypiIndex() as pypi, CargoRegistry() as cargo, GoProxy() as goproxy:
        for server in (npm, pypi, cargo, goproxy):
            assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.HTTPError) as err:
            urlopen(npm.url + "/missing", timeout=5)
        assert err.value.code == 404 and npm.requests == ["/missing"]
        config = json.load(urlopen(cargo.url + "/index/config.json", timeout=5))
        assert config["dl"].startswith(cargo.url + "/")
    with NpmRegistry([pkg.npm_package("a", "1.0.0", {})], public_url="http://reg.test/") as npm:
        assert npm.url == "http://reg.test" and npm.local_url.startswith("http://127.0.0.1:")
        packument = json.load(urlopen(npm.local_url + "/a", timeout=5))
        assert packument["versions"]["1.0.0"]["dist"]["tarball"] == "http://reg.test/a/-/a-1.0.0.tgz"
