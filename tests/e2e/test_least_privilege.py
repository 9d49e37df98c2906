"""Each built-in phase writes only its outputs; every .git stays read-only; sockets are masked.

Real npm against the loopback registry, a real cargo build script, real unix-socket listeners, on
both backends, each with a live control outside sbox.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

ATTEMPTS = ("src/index.js", "README.md", "evil.sh", "node_modules/x", "vendor/sub/.git")
# Writes every path it is given (project-relative), and records which succeeded in node_modules.
WRITER = r"""const fs = require("fs"), path = require("path");
const root = process.env.INIT_CWD, done = {};
for (const p of JSON.parse(process.argv[2])) {
  try { fs.writeFileSync(path.join(root, p), "PWNED\n"); done[p] = true; } catch (e) { done[p] = String(e.code); }
}
const out = path.join(root, "node_modules", "writes-" + process.argv[3] + ".json");
try { fs.writeFileSync(out, JSON.stringify(done)); } catch (e) { fs.writeFileSync(path.join(root, "writes-" + process.argv[3] + ".json"), JSON.stringify(done)); }
"""


@pytest.fixture
def npm_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "index.js").write_text("module.exports = 1;\n")
    (project / "README.md").write_text("# app\n")
    (project / "vendor" / "sub").mkdir(parents=True)
    (project / "vendor" / "sub" / ".git").write_text("gitdir: ../../.git/modules/sub\n")
    (project / "vendor" / "sub" / "writer.js").write_text(WRITER)
    writer = pkg.npm_package("sbox-writer", "1.0.0", {"writer.js": WRITER},
                             scripts={"postinstall": f"node writer.js '{json.dumps(ATTEMPTS[:4])}' postinstall"})
    with NpmRegistry([writer]) as registry:
        # The project's own prepare runs with the project writable: every .git stays read-only.
        prepare = f"node vendor/sub/writer.js '{json.dumps(['vendor/sub/.git', 'prepared.txt'])}' prepare"
        (project / "package.json").write_text(json.dumps({
            "name": "app", "version": "0.0.0", "private": True, "scripts": {"prepare": prepare},
            "dependencies": {"sbox-writer": "1.0.0"}}))
        (project / ".npmrc").write_text(f"registry={registry.url}/\n")
        trust(project / ".npmrc")
        # A loopback registry is admitted only when the user names it, not a project file.
        monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
        yield project


def _writes(project: Path, step: str) -> dict[str, object]:
    found = list(project.glob(f"node_modules/writes-{step}.json")) + list(project.glob(f"writes-{step}.json"))
    assert len(found) == 1, found
    result: dict[str, object] = json.loads(found[0].read_text())
    return result


def test_npm_install_scripts_write_node_modules_only(npm_project: Path, backend: str, sbox_bin: str) -> None:
    (npm_project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(npm_project / "sbox.yaml")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], npm_project)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert _writes(npm_project, "postinstall") == {"src/index.js": "EROFS", "README.md": "EROFS",
                                                   "evil.sh": "EROFS", "node_modules/x": True}
    assert (npm_project / "src" / "index.js").read_text() == "module.exports = 1;\n"
    assert (npm_project / "README.md").read_text() == "# app\n"
    assert not (npm_project / "evil.sh").exists()
    assert (npm_project / "node_modules" / "x").read_text() == "PWNED\n"
    # The lockfile did not exist: staged, then copied back whole.
    assert json.loads((npm_project / "package-lock.json").read_text())["packages"]["node_modules/sbox-writer"]
    # The prepare step may write the project, but not a submodule's .git file.
    assert _writes(npm_project, "prepare") == {"vendor/sub/.git": "EROFS", "prepared.txt": True}
    assert (npm_project / "vendor" / "sub" / ".git").read_text() == "gitdir: ../../.git/modules/sub\n"


def test_control_npm_install_outside_sbox_writes_everywhere(npm_project: Path) -> None:
    result = subprocess.run(["npm", "install"], cwd=npm_project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _writes(npm_project, "postinstall") == {p: True for p in ATTEMPTS[:4]}
    assert (npm_project / "evil.sh").read_text() == "PWNED\n"
    assert _writes(npm_project, "prepare") == {"vendor/sub/.git": True, "prepared.txt": True}


BUILD_RS = r"""
fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let mut done = Vec::new();
    for p in ["src/main.rs", "README.md", "evil.sh", "target/x"] {
        let ok = std::fs::write(format!("{}/{}", root, p), "// PWNED\nfn main() {}\n").is_ok();
        done.push(format!("{}={}", p, ok));
    }
    std::fs::write(format!("{}/target/writes.txt", root), done.join("\n")).unwrap();
}
"""


@pytest.fixture
def crate_project(tmp_path: Path) -> Path:
    project = tmp_path / "crate"
    (project / "src").mkdir(parents=True)
    (project / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n')
    (project / "src" / "main.rs").write_text("fn main() {}\n")
    (project / "README.md").write_text("# app\n")
    (project / "build.rs").write_text(BUILD_RS)
    return project


def test_cargo_build_script_writes_target_only(crate_project: Path, backend: str, sbox_bin: str,
                                               tmp_path: Path) -> None:
    (crate_project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(crate_project / "sbox.yaml")
    env = dict(os.environ, CARGO_HOME=str(tmp_path / "cargo-home"))
    result = run_sbox(sbox_bin, ["run", "--", "cargo", "build"], crate_project, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (crate_project / "target" / "writes.txt").read_text().split() == [
        "src/main.rs=false", "README.md=false", "evil.sh=false", "target/x=true"]
    assert (crate_project / "src" / "main.rs").read_text() == "fn main() {}\n"
    assert not (crate_project / "evil.sh").exists()
    assert (crate_project / "Cargo.lock").read_text().startswith("# This file is automatically @generated")


def test_control_cargo_build_outside_sbox_writes_everywhere(crate_project: Path, tmp_path: Path) -> None:
    env = dict(os.environ, CARGO_HOME=str(tmp_path / "cargo-home"))
    result = subprocess.run(["cargo", "build", "--offline"], cwd=crate_project, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (crate_project / "target" / "writes.txt").read_text().split() == [
        "src/main.rs=true", "README.md=true", "evil.sh=true", "target/x=true"]


class SocketListener:
    """A unix-socket server that counts the connections it accepts."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(5)
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.server.close()


CONNECT = r"""const net = require("net"); const out = {};
let left = process.argv.length - 1;
for (const p of process.argv.slice(1)) {
  const s = net.connect(p);
  s.on("connect", () => { out[p] = "connected"; s.end(); if (--left === 0) console.log(JSON.stringify(out)); });
  s.on("error", (e) => { out[p] = e.code; if (--left === 0) console.log(JSON.stringify(out)); });
}
"""


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[tuple[Path, list[SocketListener], list[str]]]:
    project = tmp_path / "p"
    (project / ".git").mkdir(parents=True)
    (project / "tmp").mkdir()
    paths = [project / ".git" / "fsmonitor--daemon.ipc", project / "tmp" / "db.sock"]
    listeners = [SocketListener(p) for p in paths]
    try:
        yield project, listeners, [str(p) for p in paths]
    finally:
        for listener in listeners:
            listener.close()


def test_project_sockets_are_masked_in_a_network_off_sandbox(
        sockets: tuple[Path, list[SocketListener], list[str]], backend: str, sbox_bin: str) -> None:
    project, listeners, paths = sockets
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    node = shutil.which("node") or "node"
    result = run_sbox(sbox_bin, ["run", "--", node, "-e", CONNECT, *paths], project)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(seen) == set(paths) and "connected" not in seen.values(), seen
    assert [listener.hits for listener in listeners] == [0, 0]


def test_control_the_same_connect_outside_sbox_reaches_the_listeners(
        sockets: tuple[Path, list[SocketListener], list[str]]) -> None:
    _, listeners, paths = sockets
    result = subprocess.run(["node", "-e", CONNECT, *paths], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == {p: "connected" for p in paths}
    assert [listener.hits for listener in listeners] == [1, 1]
