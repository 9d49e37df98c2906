"""`sbox doctor`: backends, shims and config, each with its reason; exit code from backends+config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.trust import trust
from conftest import backend_reason

from sbox_shim import cli, doctor, shims


def _any_backend() -> bool:
    return any(backend_reason(name) is None for name in ("bwrap", "docker"))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    d = tmp_path / "shims"
    real = tmp_path / "real"
    real.mkdir()
    (real / "npm").write_text("#!/bin/sh\n")
    (real / "npm").chmod(0o755)
    shims.install(str(d), ["npm", "pip"], "/x/sbox")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return {"shims": d, "real": real, "project": project}




def test_backend_reasons_are_one_line_or_none() -> None:
    for name in doctor.BACKENDS:
        reason = doctor.backend_reason(name)
        assert reason is None or (reason and "\n" not in reason)
        assert (reason is None) == (backend_reason(name) is None)


def test_no_config_reports_backends_shims_and_not_opted_in(setup: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    env = dict(os.environ, PATH=f"{setup['shims']}:{setup['real']}")
    code = cli.main(["doctor", "--dir", str(setup["shims"])], env=env)
    out = capsys.readouterr().out
    assert code == (0 if _any_backend() else 1)
    assert "backends:" in out and "bwrap" in out and "docker" in out
    assert f"shims: {setup['shims']} (first on PATH)" in out
    assert f"npm     ok ({setup['real'] / 'npm'})" in out
    assert "pip     no real tool" in out
    assert "cargo   missing" in out
    assert "config: none from" in out and "not opted in" in out


def test_shims_not_first_are_reported_with_the_fix(setup: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    env = dict(os.environ, PATH=f"{setup['real']}:{setup['shims']}", SHELL="/bin/zsh")
    cli.main(["doctor", "--dir", str(setup["shims"])], env=env)
    out = capsys.readouterr().out
    assert "(on PATH but not first)" in out
    assert f"npm     shadowed by {setup['real'] / 'npm'}" in out
    assert 'eval "$(sbox activate zsh)"' in out


def test_no_shims_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["doctor", "--dir", str(tmp_path / "none")], env=dict(os.environ, PATH="/usr/bin"))
    out = capsys.readouterr().out
    assert "(not on PATH)" in out and "none installed: run `sbox shims install`" in out


def test_valid_config_is_named(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    (setup["project"] / "sbox.yaml").write_text("version: 1\nprofiles:\n  build:\n    network: off\n")
    trust(setup["project"] / "sbox.yaml")
    code = cli.main(["doctor", "--dir", str(setup["shims"])])
    out = capsys.readouterr().out
    assert f"config: {setup['project'] / 'sbox.yaml'} (valid; backend: auto, profiles: build)" in out
    assert code == (0 if _any_backend() else 1)


def test_invalid_config_fails_with_its_one_line_error(setup: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (setup["project"] / "sbox.yaml").write_text("version: 1\nbackend: podman\n")
    trust(setup["project"] / "sbox.yaml")
    assert cli.main(["doctor", "--dir", str(setup["shims"])]) == 1
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("config:"))
    assert line.startswith(f"config: invalid: sbox: {setup['project'] / 'sbox.yaml'}:2: backend:")
    assert "Traceback" not in out


def test_a_config_naming_an_unusable_backend_fails(setup: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    broken = [name for name in ("bwrap", "docker") if backend_reason(name) is not None]
    if not broken:
        pytest.skip("every backend works here")
    (setup["project"] / "sbox.yaml").write_text(f"version: 1\nbackend: {broken[0]}\n")
    assert cli.main(["doctor", "--dir", str(setup["shims"])]) == 1
    assert f"backend {broken[0]} is not usable here" in capsys.readouterr().out


def test_an_untrusted_config_is_named_with_the_remedy(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    (setup["project"] / "sbox.yaml").write_text("version: 1\n")
    assert cli.main(["doctor", "--dir", str(setup["shims"])]) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("config:"))
    assert line == f"config: not trusted: {setup['project'] / 'sbox.yaml'} (new) (review, then `sbox trust`)"
