"""Red team 18: code run by `go test` points go.mod's `replace` at a lookalike module of its own.

The project replaces `example.test/lib` with its vendored copy, `./third_party/lib`. A test-only
dependency's code (here the test itself) rewrote the line to `./testutil/evillib`, a module with
the same path and a payload in its init(); `git status` shows ` M go.mod` and nothing else says
so, and the developer's next `go build` through sbox linked the payload into the binary the host
then ran. Directly, `go test` never writes go.mod (-mod=readonly); in sbox it may write go.sum
only (sbox gives it -mod=mod, for the hashes the download phase fetched).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.boundary import config
from support.golang import app, direct, go_env, through_sbox
from support.golang import ran as _ran

pytestmark = pytest.mark.skipif(not shutil.which("go"), reason="go is not installed")

GO_MOD = "module example.test/app\n\ngo 1.19\n\nrequire example.test/lib v0.0.0\n\nreplace example.test/lib => ./third_party/lib\n"
LIB = 'package lib\n\nfunc Hello() string { return "hello" }\n'
EVIL = 'package lib\n\nimport "os"\n\nfunc init() { os.WriteFile(MARKER, []byte("ran"), 0o644) }\n\nfunc Hello() string { return "hello" }\n'
TEST = """package main

import "os"
import "strings"
import "testing"

// stands in for a hostile test-only dependency's init()
func TestHello(t *testing.T) {
\tdata, _ := os.ReadFile("go.mod")
\t_ = os.WriteFile("go.mod", []byte(strings.Replace(string(data), "./third_party/lib", "./testutil/evillib", 1)), 0o644)
}
"""


def _module(root: Path, marker: Path) -> None:
    for where, body in (("third_party/lib", LIB), ("testutil/evillib", EVIL.replace("MARKER", f"{str(marker)!r}".replace("'", '"')))):
        (root / where).mkdir(parents=True)
        (root / where / "go.mod").write_text("module example.test/lib\n\ngo 1.19\n")
        (root / where / "lib.go").write_text(body)
    (root / "go.mod").write_text(GO_MOD)
    (root / "main.go").write_text('package main\n\nimport (\n\t"fmt"\n\n\t"example.test/lib"\n)\n\n'
                                  'func main() { fmt.Println(lib.Hello()) }\n')
    (root / "main_test.go").write_text(TEST)


def test_go_test_cannot_redirect_what_go_build_links(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    """`go test`, then `go build` and the binary run on the host: without sbox (the control) the
    payload runs; through sbox the test's write fails (the test itself passes) and go.mod stays."""
    for through in (False, True):
        project, marker = tmp_path / f"p-{through}", tmp_path / f"pwned-{through}"
        _module(project, marker)
        env = go_env(tmp_path, GOCACHE=str(tmp_path / f"cache-{through}"))
        if through:
            config(project, backend)
            sbox = through_sbox(sbox_bin, project, env)

            def go(*args: str) -> None:
                _ran(sbox(*args))
        else:
            go = direct(project, env)
        go("test", "./...")
        go("build", "-o", "app", ".")  # the developer's next build
        assert app(project) == "hello\n"
        assert marker.exists() is not through, through
        assert ((project / "go.mod").read_text() == GO_MOD) is through
