"""cargo through the built-in two-phase policy, with the real `sbox run` and the real cargo.

A local sparse registry on 127.0.0.1 replaces crates.io through the caller's
`$CARGO_HOME/config.toml` (source replacement). The policy runs `cargo fetch` through the
allowlist, then `cargo build --offline` with the network off: build scripts run only there.
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
from support.registries import CargoRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")

MAIN = 'fn main() { println!("{} {}", sbox_evil::ok(), sbox_hello::n()); }\n'


def _project(project: Path, backend: str) -> None:
    (project / "src").mkdir(parents=True, exist_ok=True)
    (project / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n'
        '[dependencies]\nsbox_evil = "1"\nsbox_hello = "1"\n')
    (project / "src" / "main.rs").write_text(MAIN)
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")


@pytest.fixture
def world(tmp_path: Path, fake_home: Path, backend: str) -> Iterator[tuple[Trap, CargoRegistry, dict[str, str]]]:
    with trap(fake_home, tmp_path, tmp_path / "project", proofs_in="target") as t:
        _project(t.project, backend)
        crates = [
            pkg.crate("sbox_evil", "1.0.0", "pub fn ok() -> bool { true }\n", build_rs=pkg.hostile_build_rs(*t.args())),
            pkg.crate("hi", "1.1.0", "pub fn n() -> u32 { 42 }\n"),
            pkg.crate("sbox_hello", "1.0.0", "pub fn n() -> u32 { hi::n() }\n", deps=[("hi", "1")]),
        ]
        with CargoRegistry(crates) as registry:
            cargo_home = tmp_path / "cargo-home"
            cargo_home.mkdir()
            (cargo_home / "config.toml").write_text(
                '[source.crates-io]\nreplace-with = "sbox-test"\n\n'
                f'[source.sbox-test]\nregistry = "{registry.index_url}"\n')
            (cargo_home / "credentials.toml").write_text('[registry]\ntoken = "cargo-token-for-fetch-only"\n')
            env = dict(os.environ, CARGO_HOME=str(cargo_home), CARGO_TERM_COLOR="never")
            yield t, registry, env


def test_build_script_runs_offline_and_confined(world: tuple[Trap, CargoRegistry, dict[str, str]],
                                                backend: str, sbox_bin: str) -> None:
    t, registry, env = world
    env.pop("SBOX_QUIET", None)
    result = run_sbox(sbox_bin, ["run", "--", "cargo", "build"], t.project, env=env, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    assert lines == [
        f"sbox: step 1/2 [download] cargo fetch -> sandbox ({backend}), profile cargo:download, "
        "network: allowlist (proxy)",
        f"sbox: step 2/2 [scripts] cargo build --offline -> sandbox ({backend}), profile cargo:scripts, network off",
    ]

    # Fetched from the local registry, built, and it runs.
    assert {"/index/config.json", "/index/sb/ox/sbox_evil", "/api/v1/crates/sbox_evil/1.0.0/download",
            "/api/v1/crates/hi/1.1.0/download"} <= set(registry.requests)
    assert (t.project / "Cargo.lock").is_file()
    app = subprocess.run([str(t.project / "target" / "debug" / "app")], capture_output=True, text=True)
    assert app.stdout.strip() == "true 42"

    # build.rs ran once, in the offline phase, and could do none of its four things.
    proofs = t.proofs()
    assert len(proofs) == 1, proofs
    assert proofs[0]["profile"] == "cargo:scripts"
    t.assert_confined(proofs[0])
    t.assert_nothing_escaped(out)


def test_build_script_cannot_touch_the_shared_cargo_cache(tmp_path: Path, fake_home: Path, backend: str,
                                                          sbox_bin: str) -> None:
    """sbox's CARGO_HOME (registry sources of every project) is read-only while build scripts run:
    a build.rs cannot plant code or config there for the next project."""
    cache_home = Path(os.environ["SBOX_CACHE_DIR"]) / "cargo"
    with trap(fake_home, tmp_path, tmp_path / "project", proofs_in="target") as t:
        t.outside = cache_home / "config"  # cargo would read this file on every later run
        build_rs = pkg.hostile_build_rs(*t.args())
        (t.project / "src").mkdir(parents=True)
        (t.project / "Cargo.toml").write_text(
            '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nsbox_evil = "1"\n')
        (t.project / "src" / "main.rs").write_text('fn main() { println!("{}", sbox_evil::ok()); }\n')
        (t.project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
        trust(t.project / "sbox.yaml")
        with CargoRegistry([pkg.crate("sbox_evil", "1.0.0", "pub fn ok() -> bool { true }\n",
                                      build_rs=build_rs)]) as registry:
            cargo_home = tmp_path / "cargo-home"
            cargo_home.mkdir()
            (cargo_home / "config.toml").write_text(
                f'[source.crates-io]\nreplace-with = "t"\n\n[source.t]\nregistry = "{registry.index_url}"\n')
            env = dict(os.environ, CARGO_HOME=str(cargo_home))
            result = run_sbox(sbox_bin, ["run", "--", "cargo", "build"], t.project, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-6000:]
        proofs = t.proofs()
        assert len(proofs) == 1 and proofs[0]["profile"] == "cargo:scripts"
        assert proofs[0]["wrote_outside"] is False, proofs[0]
        assert "Read-only file system" in proofs[0]["errors"]["write"], proofs[0]
        assert not (cache_home / "config").exists()
        assert (cache_home / "registry").is_dir()  # the fetch phase did write there
