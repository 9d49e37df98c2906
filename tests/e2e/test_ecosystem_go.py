"""go through the built-in two-phase policy, with the real `sbox run` and the real go.

A local module proxy on 127.0.0.1 is the caller's `GOPROXY` (with `GOSUMDB=off`,
`GOFLAGS=-mod=mod`). The policy runs `go mod download` through the allowlist, then the command
with `GOPROXY=off` and the network off.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import GoProxy
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")

MAIN = ('package main\n\nimport (\n\t"fmt"\n\n\t"example.test/Mixed"\n\t"example.test/hello"\n)\n\n'
        "func main() { fmt.Println(hello.N() + mixed.N()) }\n")
TEST = ('package main\n\nimport (\n\t"net"\n\t"testing"\n\t"time"\n)\n\n'
        "func TestOffline(t *testing.T) {\n"
        '\tc, err := net.DialTimeout("tcp", "%s", 2*time.Second)\n'
        "\tif err == nil {\n\t\tc.Close()\n\t\tt.Fatal(\"reached the network\")\n\t}\n}\n")


def _modules() -> list[dict[str, bytes]]:
    return [
        pkg.go_module("example.test/hello", "v1.1.0", {"hello.go": "package hello\n\nfunc N() int { return 41 }\n"}),
        pkg.go_module("example.test/Mixed", "v0.1.0", {"mixed.go": "package mixed\n\nfunc N() int { return 1 }\n"}),
    ]


def _project(project: Path, backend: str) -> None:
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    (project / "go.mod").write_text("module example.test/app\n\ngo 1.19\n\n"
                                    "require (\n\texample.test/Mixed v0.1.0\n\texample.test/hello v1.1.0\n)\n")
    (project / "main.go").write_text(MAIN)


def _env(proxy: GoProxy, quiet: bool = True) -> dict[str, str]:
    env = dict(os.environ, GOPROXY=proxy.url, GOSUMDB="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    if not quiet:
        env.pop("SBOX_QUIET", None)
    return env


def test_go_build_downloads_then_builds_offline(tmp_path: Path, backend: str, sbox_bin: str) -> None:
    project = tmp_path / "project"
    _project(project, backend)
    with GoProxy(_modules()) as proxy:
        result = run_sbox(sbox_bin, ["run", "--", "go", "build", "-o", "app", "."], project,
                          env=_env(proxy, quiet=False), timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    assert lines == [
        f"sbox: step 1/2 [download] go mod download -> sandbox ({backend}), profile go:download, "
        "network: allowlist (proxy)",
        f"sbox: step 2/2 [scripts] go build -o app . -> sandbox ({backend}), profile go:scripts, network off",
    ]
    assert {"/example.test/hello/@v/v1.1.0.zip", "/example.test/!mixed/@v/v0.1.0.zip"} <= set(proxy.paths)
    assert "example.test/hello v1.1.0 h1:" in (project / "go.sum").read_text()
    app = subprocess.run([str(project / "app")], capture_output=True, text=True)
    assert app.stdout.strip() == "42", app.stderr


def test_go_test_runs_with_the_network_off(tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """`go test` runs the project's code: it gets the modules, not the network (not even the
    registry that the download phase could reach)."""
    project = tmp_path / "project"
    _project(project, backend)
    with GoProxy(_modules()) as proxy:
        (project / "main_test.go").write_text(TEST % f"127.0.0.1:{proxy.port}")
        result = run_sbox(sbox_bin, ["run", "--", "go", "test", "-count=1", "."], project, env=_env(proxy),
                          timeout=600)
        reached = list(proxy.requests)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ok" in result.stdout
    assert all("/@v/" in r for r in reached), reached  # only the download phase's module fetches


def test_go_get_reaches_the_proxy_then_the_build_is_offline(tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """`go get` exists to find new versions: one step through the allowlist, not an offline one."""
    project = tmp_path / "project"
    _project(project, backend)
    (project / "go.mod").write_text("module example.test/app\n\ngo 1.19\n")
    with GoProxy(_modules()) as proxy:
        env = _env(proxy, quiet=False)
        got = run_sbox(sbox_bin, ["run", "--", "go", "get", "example.test/hello@v1.1.0", "example.test/Mixed"],
                       project, env=env, timeout=600)
        assert got.returncode == 0, got.stderr[-4000:]
        assert [ln for ln in got.stderr.splitlines() if ln.startswith("sbox:")] == [
            f"sbox: go get example.test/hello@v1.1.0 example.test/Mixed -> sandbox ({backend}), "
            "profile go:download, network: allowlist (proxy)"]
        built = run_sbox(sbox_bin, ["run", "--", "go", "build", "-o", "app", "."], project, env=env, timeout=600)
    assert built.returncode == 0, built.stderr[-4000:]
    mod = (project / "go.mod").read_text()
    assert "example.test/hello v1.1.0" in mod and "example.test/Mixed v0.1.0" in mod
    app = subprocess.run([str(project / "app")], capture_output=True, text=True)
    assert app.stdout.strip() == "42", app.stderr
