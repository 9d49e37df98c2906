"""`sbox init`: detection, a starter sbox.yaml that loads and dispatches, no overwrites."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sbox_shim import cli, config, dispatch, init

MARKERS = {"npm": "package.json", "pip": "requirements-dev.txt", "cargo": "Cargo.toml", "go": "go.mod"}


@pytest.mark.parametrize("files,expected", [
    ([], ()),
    (["package.json"], ("npm",)),
    (["requirements.txt"], ("pip",)),
    (["requirements-dev.txt"], ("pip",)),
    (["pyproject.toml"], ("pip",)),
    (["setup.py"], ("pip",)),
    (["Cargo.toml"], ("cargo",)),
    (["go.mod"], ("go",)),
    (["go.mod", "package.json", "setup.py", "Cargo.toml"], ("npm", "pip", "cargo", "go")),
    (["README.md", "Makefile"], ()),
])
def test_detect(tmp_path: Path, files: list[str], expected: tuple[str, ...]) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    assert init.detect(str(tmp_path)) == expected


ALL_COMBOS = [c for n in range(5) for c in itertools.combinations(("npm", "pip", "cargo", "go"), n)]


@pytest.mark.parametrize("ecosystems", ALL_COMBOS, ids=lambda c: "+".join(c) or "none")
def test_written_file_loads_with_the_real_loader(tmp_path: Path, ecosystems: tuple[str, ...],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name in ecosystems:
        (tmp_path / MARKERS[name]).write_text("{}\n" if name == "npm" else "")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    cfg = config.load(str(tmp_path), {})
    assert cfg.path == str(tmp_path / "sbox.yaml")
    download, scripts = cfg.profiles["download"], cfg.profiles["scripts"]
    expected = [e for name in (ecosystems or tuple(init.REGISTRIES)) for e in init.REGISTRIES[name]]
    assert list(download.network_allow) == expected
    assert download.network and download.no_new_privileges
    # Least privilege: an npm project's profiles write node_modules (and the manifests), others nothing.
    if "npm" in ecosystems or not ecosystems:
        assert download.writable == ("node_modules/", "package.json", "package-lock.json")
        assert scripts.writable == ("node_modules/",)
    else:
        assert download.writable is False and scripts.writable is False
    assert download.mode == scripts.mode == "sandbox"
    assert not scripts.network
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'sbox.yaml'}" in out
    assert "next:" in out and "sbox plan --" in out


def test_npm_gets_the_specs_dispatch_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "package.json").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    cfg = config.load(str(tmp_path), {})
    assert [(r.name, r.patterns, r.profile) for r in cfg.dispatch] == [
        ("npm-download", ("npm install --ignore-scripts*",), "download"),
        ("npm-rebuild", ("npm rebuild*",), "scripts"),
    ]
    hit = dispatch.match(cfg, ["/usr/bin/npm", "install", "--ignore-scripts", "left-pad"])
    assert hit is not None and hit.rule.profile == "download"
    assert dispatch.match(cfg, ["npm", "install"]) is None  # falls to the built-in two-phase policy
    text = (tmp_path / "sbox.yaml").read_text()
    assert "two-phase" in text and "# npm" in text


def test_no_npm_no_dispatch_rules_but_a_commented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Cargo.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    assert config.load(str(tmp_path), {}).dispatch == ()
    assert "# dispatch:" in (tmp_path / "sbox.yaml").read_text()


@pytest.mark.parametrize("name,text", [
    ("sbox.yaml", "version: 1\n# mine\n"),
    (".sbox.yaml", "version: 1\n# mine\n"),
    ("pyproject.toml", "[tool.sbox]\nversion = 1\n"),
])
def test_refuses_when_the_project_already_opted_in(tmp_path: Path, name: str, text: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / name) in err
    assert (tmp_path / name).read_text() == text
    assert not (tmp_path / "sbox.yaml").exists() or name == "sbox.yaml"


def test_refuses_a_dangling_link_named_sbox_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sbox.yaml").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 2
    assert not (tmp_path / "nowhere").exists()


def test_a_plain_pyproject_does_not_block_and_a_parent_config_is_mentioned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sbox.yaml").write_text("version: 1\n")
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\n')
    monkeypatch.chdir(sub)
    assert cli.main(["init"]) == 0
    out = capsys.readouterr().out
    assert "(pip)" in out
    assert f"takes precedence over {tmp_path / 'sbox.yaml'}" in out
    assert config.load(str(sub), {}).path == str(sub / "sbox.yaml")


def test_a_venv_only_project_is_a_pip_project(tmp_path: Path) -> None:
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert init.detect(str(tmp_path)) == ("pip",)
    assert "pip install" in init.render(init.detect(str(tmp_path))).splitlines()[0]
