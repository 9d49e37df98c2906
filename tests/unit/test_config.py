"""Config discovery, the spec's own example, and a table of bad configs: one line each, exit 2."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sbox_shim import config
from sbox_shim.cli import main
from sbox_shim.errors import ConfigError
from support.spec import SPEC_PROFILES
from support.trust import trust

SPEC_EXAMPLE = SPEC_PROFILES


def write(tmp_path: Path, text: str, name: str = "sbox.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_spec_example_loads_with_yaml_booleans(tmp_path: Path) -> None:
    write(tmp_path, SPEC_EXAMPLE)
    cfg = config.load(str(tmp_path), {})
    assert cfg.profiles["download"].network is True  # YAML 1.1 read `on` as a boolean
    assert cfg.profiles["scripts"].network is False
    assert cfg.profiles["download"].network_allow == ("*.npmjs.org",)
    assert [r.name for r in cfg.dispatch] == ["npm-download", "npm-rebuild"]


def test_quoted_on_off_strings_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, 'profiles:\n  p:\n    network: "on"\n    network_allow: [a.example]\n  q:\n    network: "off"\n')
    cfg = config.load(str(tmp_path), {})
    assert cfg.profiles["p"].network and not cfg.profiles["q"].network


def test_names_are_kept_as_written_even_yaml_booleans(tmp_path: Path) -> None:
    """A profile called `on` (or `no`) is that name, not True: `--profile on` finds it."""
    write(tmp_path, "profiles:\n  on:\n    network: on\n  no:\n    network: off\n"
                    "dispatch:\n  yes:\n    match: ['npm publish*']\n    profile: \"on\"\n")
    cfg = config.load(str(tmp_path), {})
    assert sorted(cfg.profiles) == ["no", "on"] and cfg.profiles["on"].network is True
    assert [(r.name, r.profile) for r in cfg.dispatch] == [("yes", "on")]
    write(tmp_path, "profiles:\n  on:\n    network: on\ndispatch:\n  r:\n    match: ['x*']\n    profile: on\n")
    with pytest.raises(ConfigError, match=r"sbox.yaml:7: dispatch.r.profile: expected a profile name, got a boolean"):
        config.load(str(tmp_path), {})


def test_discovery_walks_up_and_finds_every_form(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert config.find_config(str(deep)) is None or not config.find_config(str(deep)).startswith(str(tmp_path))
    write(tmp_path / "a", "version: 1\n", ".sbox.yaml")
    assert config.find_config(str(deep)) == str(tmp_path / "a" / ".sbox.yaml")
    (tmp_path / "a" / "b" / "pyproject.toml").write_text('[project]\nname="x"\n\n[tool.sbox]\nbackend = "docker"\n')
    assert config.find_config(str(deep)) == str(deep / "pyproject.toml")
    cfg = config.load(str(deep), {})
    assert cfg.backend == "docker" and cfg.root == str(deep)


def test_pyproject_without_tool_sbox_does_not_opt_in(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert config.find_config(str(tmp_path)) in (None,) or not config.find_config(str(tmp_path)).startswith(str(tmp_path))


def test_user_config_sets_defaults_but_never_opts_in(tmp_path: Path) -> None:
    user = write(tmp_path, "backend: docker\nprofiles:\n  default:\n    network: off\n", "user.yaml")
    project = tmp_path / "p"
    project.mkdir()
    cfg = config.load(str(project), {"SBOX_USER_CONFIG": str(user)})
    assert cfg.path is None and cfg.backend == "docker"  # defaults, but not opted in
    write(project, "profiles:\n  x: {}\n")
    cfg = config.load(str(project), {"SBOX_USER_CONFIG": str(user)})
    assert cfg.path == str(project / "sbox.yaml") and set(cfg.profiles) == {"default", "x"}


def test_writable_takes_true_false_or_project_relative_paths(tmp_path: Path) -> None:
    write(tmp_path, "profiles:\n  a:\n    writable: false\n  b: {}\n  c:\n"
                    "    writable:\n      - node_modules/\n      - ./dist//x/\n      - package-lock.json\n")
    cfg = config.load(str(tmp_path), {"SBOX_USER_CONFIG": str(tmp_path / "none.yaml")})
    assert cfg.profiles["a"].writable is False and cfg.profiles["b"].writable is True
    assert cfg.profiles["c"].writable == ("node_modules/", "dist/x/", "package-lock.json")


BAD = [
    ("malformed", "profiles:\n  a: [\n", 2, "malformed YAML"),
    ("unknown top key", "version: 1\nprofile:\n  a: {}\n", 2, "profile: unknown key"),
    ("unknown profile key", "profiles:\n  a:\n    netwrok: off\n", 3, "profiles.a.netwrok: unknown key"),
    ("network type", "profiles:\n  a:\n    network: maybe\n", 3, "expected on or off"),
    ("writable type", "profiles:\n  a:\n    writable: 3\n", 3, "expected true, false or a list of project-relative paths"),
    ("writable absolute", "profiles:\n  a:\n    writable:\n      - dist/\n      - /etc\n", 5,
     "profiles.a.writable.1: expected a path relative to the project root"),
    ("writable dotdot", "profiles:\n  a:\n    writable: [out, ../elsewhere]\n", 3, "profiles.a.writable.1: '..' is not allowed"),
    ("writable hidden dotdot", "profiles:\n  a:\n    writable:\n      - a/../../b\n", 4, "'..' is not allowed"),
    ("writable glob", "profiles:\n  a:\n    writable:\n      - \"build/*\"\n", 4, "profiles.a.writable.0: globs are not supported"),
    ("writable root", "profiles:\n  a:\n    writable:\n      - ./\n", 4, "use writable: true"),
    ("writable not string", "profiles:\n  a:\n    writable:\n      - 5\n", 4, "expected a project-relative path"),
    ("writable home", "profiles:\n  a:\n    writable: [\"~/x\"]\n", 3, "relative to the project root"),
    ("mode", "profiles:\n  a:\n    mode: chroot\n", 3, "expected one of sandbox | host"),
    ("backend", "backend: podman\n", 1, "expected one of auto | docker | bwrap"),
    ("version", "version: 2\n", 1, "unsupported version"),
    ("allow not list", "profiles:\n  a:\n    network: on\n    network_allow: 5\n", 4, "expected a list"),
    ("star", 'profiles:\n  a:\n    network: on\n    network_allow: ["*"]\n', 4, "would allow every host"),
    ("star dot com", 'profiles:\n  a:\n    network: on\n    network_allow:\n      - "*.com"\n', 5, "public suffix"),
    ("star co.uk", 'profiles:\n  a:\n    network: on\n    network_allow:\n      - "*.co.uk"\n', 5, "public suffix"),
    ("star github.io", 'profiles:\n  a:\n    network: on\n    network_allow:\n      - "*.github.io"\n', 5, "public suffix"),
    ("wildcard ip", 'profiles:\n  a:\n    network: on\n    network_allow:\n      - "*.10.0.0.1"\n', 5, "IP address"),
    ("inner star", 'profiles:\n  a:\n    network: on\n    network_allow:\n      - "reg*.npmjs.org"\n', 5, "leading"),
    ("allow with off", 'profiles:\n  a:\n    network: off\n    network_allow: [x.example]\n', 4, "has no effect"),
    ("unknown dispatch profile", "profiles:\n  a: {}\ndispatch:\n  r:\n    match: [npm*]\n    profile: b\n", 6,
     "unknown profile 'b'"),
    ("dispatch missing match", "profiles:\n  a: {}\ndispatch:\n  r:\n    profile: a\n", 4, "missing key 'match'"),
    ("duplicate key", "profiles:\n  a: {}\n  a: {}\n", 3, "duplicate key"),
    ("bad memory", "profiles:\n  a:\n    limits:\n      memory: lots\n", 4, "expected a size"),
    ("bad hosts ip", "hosts:\n  reg.test: [not-an-ip]\n", 2, "expected IP addresses"),
    # Profiles named after a built-in phase: only what may be added to sbox's phase.
    ("phase writable", "profiles:\n  npm:scripts:\n    writable: true\n", 3,
     "profiles.npm:scripts.writable: not settable for a built-in phase"),
    ("phase mode host", "profiles:\n  pip:download:\n    mode: host\n", 3, "accepted: env, network, network_allow, limits"),
    ("phase unknown label", "profiles:\n  npm:install:\n    env: [X]\n", 2, "expected npm:download or npm:scripts"),
    ("phase unknown tool", "profiles:\n  nmp:scripts:\n    env: [X]\n", 2, "no built-in policy for 'nmp'"),
    ("phase allow offline", "profiles:\n  npm:scripts:\n    network_allow: [x.example]\n", 3,
     "the scripts phase runs with the network off; add network: on"),
    ("phase download off", "profiles:\n  cargo:download:\n    network: off\n", 3, "needs the network"),
    ("phase secret offline", "profiles:\n  npm:scripts:\n    env: [NPM_TOKEN]\n", 3, "NPM_TOKEN looks like a credential"),
    ("phase dispatch", "profiles:\n  npm:scripts: {}\ndispatch:\n  r:\n    match: [npm*]\n    profile: npm:scripts\n", 6,
     "configures sbox's built-in phase"),
    ("env empty name", "profiles:\n  a:\n    env: [\"=1\"]\n", 3, "expected a variable name or NAME=value"),
]


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_with_file_line_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    name: str, text: str, line: int, message: str,
) -> None:
    path = write(tmp_path, text)
    trust(path)
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    code = main(["run", "--", "sh", "-c", f"touch {marker}"], env=dict(os.environ, PATH="/usr/bin:/bin"))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"sbox: {path}:{line}:"), err
    assert message in err
    assert not marker.exists()  # nothing ran


def test_phase_profiles_are_kept_apart_from_profiles(tmp_path: Path) -> None:
    write(tmp_path, """\
        profiles:
          npm:scripts:
            env: [PUPPETEER_SKIP_DOWNLOAD, "FOO=a=b"]
            limits: {timeout: 60}
          pip:download:
            network_allow: [mirror.example]
          go:scripts:
            network: on
            network_allow: [proxy.golang.org]
          default:
            env: [X=1]
        """)
    cfg = config.load(str(tmp_path), {})
    assert sorted(cfg.profiles) == ["default"]
    scripts = cfg.phases["npm:scripts"]
    assert scripts.env == ("PUPPETEER_SKIP_DOWNLOAD",) and scripts.env_set == (("FOO", "a=b"),)
    assert scripts.limits.timeout == 60 and not scripts.network and scripts.line == 2
    assert cfg.phases["pip:download"].network and cfg.phases["pip:download"].network_allow == ("mirror.example",)
    assert cfg.phases["go:scripts"].network
    assert cfg.profiles["default"].env == () and cfg.profiles["default"].env_set == (("X", "1"),)


def test_config_error_str_names_file_line_key() -> None:
    err = ConfigError("/p/sbox.yaml", 7, "profiles.a.network", "expected on or off, got 'x'")
    assert str(err) == "sbox: /p/sbox.yaml:7: profiles.a.network: expected on or off, got 'x'"


def test_unknown_profile_on_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(write(tmp_path, "profiles:\n  a: {}\n"))
    monkeypatch.chdir(tmp_path)
    code = main(["plan", "--profile", "nope", "--", "true"], env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert code == 2
    assert "--profile nope: no such profile" in capsys.readouterr().err
