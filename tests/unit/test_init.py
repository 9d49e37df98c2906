"""`sbox init`: detection, a starter sbox.yaml that loads and dispatches, no overwrites."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sbox_shim import cli, config, init
from sbox_shim.build import build_plan
from sbox_shim.host import Host

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
    # The profiles that govern an install are the built-in phases' own, one pair per ecosystem.
    names = [f"{name}:{label}" for name in (ecosystems or tuple(init.REGISTRIES)) for label in ("download", "scripts")]
    assert sorted(cfg.phases) == sorted(names)
    assert all(p.env == () and p.network_allow == () for p in cfg.phases.values())
    assert all(cfg.phases[n].network == n.endswith(":download") for n in names)
    default = cfg.profiles["default"]
    assert list(cfg.profiles) == ["default"] and not default.network and default.mode == "sandbox"
    assert cfg.dispatch == ()
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'sbox.yaml'}" in out
    assert "next:" in out and "sbox plan --" in out


def test_the_starter_files_profiles_are_the_ones_an_install_runs_in(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, item 3: the starter file's profiles looked as if they governed `npm install`
    and did not. Its phase profiles do: an edit to them reaches the install's steps."""
    (tmp_path / "package.json").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    path = tmp_path / "sbox.yaml"
    text = path.read_text()
    assert text.count("    env: []") == 1
    path.write_text(text.replace("    env: []", "    env: [PUPPETEER_SKIP_DOWNLOAD=1]"))
    cfg = config.load(str(tmp_path), {})
    host = Host(uid=1000, gid=1000, user="dev", home="/home/dev-not-here", cwd=str(tmp_path),
                env={"PATH": "/usr/bin:/bin"}, shim_dirs=(), python="/usr/bin/python3", python_prefix="/usr",
                package_dir="/opt/sbox/sbox_shim", cache_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "s"))
    plan = build_plan(["npm", "install"], cfg, host, resolver=lambda name: ("104.16.0.1",),
                      which=lambda name, path, shims: f"/usr/bin/{name}")
    download, scripts = plan.steps
    assert f"with profile npm:download ({path}:" in download.reason
    assert f"with profile npm:scripts ({path}:" in scripts.reason
    assert scripts.environ["PUPPETEER_SKIP_DOWNLOAD"] == "1" and scripts.network.policy == "off"
    assert "PUPPETEER_SKIP_DOWNLOAD" not in download.environ


def test_no_dispatch_rules_but_a_commented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Cargo.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    assert config.load(str(tmp_path), {}).dispatch == ()
    assert "# dispatch:" in (tmp_path / "sbox.yaml").read_text()


@pytest.mark.parametrize("files,suggested", [
    ([".venv/pyvenv.cfg"], "pip install PACKAGE"),
    (["requirements.txt", "pyproject.toml"], "pip install -r requirements.txt"),
    (["requirements-dev.txt"], "pip install -r requirements-dev.txt"),
    (["pyproject.toml"], "pip install -e ."),
    (["setup.py"], "pip install -e ."),
    (["package.json"], "npm install"),
    (["package.json", "yarn.lock"], "yarn install"),
    (["package.json", "pnpm-lock.yaml"], "pnpm install"),
    (["go.mod"], "go mod download"),
    ([], "npm install"),
])
def test_the_suggested_command_fits_the_project(tmp_path: Path, files: list[str], suggested: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11, item 13: a venv-only Python project was told to run `npm install` (then a
    requirements file it does not have)."""
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("home = /usr/bin\n" if name.endswith(".cfg") else "")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    assert f"run `sbox plan -- {suggested}`" in capsys.readouterr().out
    assert f"a plain `{suggested}`" in (tmp_path / "sbox.yaml").read_text().splitlines()[0]


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
