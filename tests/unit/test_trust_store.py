"""The trust store, the gate's gathering, and the boundary checks on mounts: pure parts, real files."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from sbox_shim import trust
from sbox_shim.trust import boundary, gate
from sbox_shim.build import host_path, network_path
from sbox_shim.environment import has_url_credentials
from sbox_shim.errors import ConfigError, UsageError
from sbox_shim.network import build_network
from sbox_shim.plan import Mount
from sbox_shim.trust.files import read_regular
from sbox_shim.trust import Input
from sbox_shim.trust.cmd import trust_paths


def _state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def test_a_new_file_is_untrusted_until_trusted_and_an_edit_needs_a_new_trust(tmp_path: Path) -> None:
    cfg = tmp_path / "sbox.yaml"
    cfg.write_text("version: 1\n")
    item = Input(str(cfg), trust.OPT_IN)
    assert trust.verdict(item, _state(tmp_path)).state == "new"
    trust.record(item, _state(tmp_path))
    assert trust.verdict(item, _state(tmp_path)).state == "trusted"
    cfg.write_text("version: 1\nprofiles: {default: {mode: host}}\n")
    v = trust.verdict(item, _state(tmp_path))
    assert v.state == "changed"
    assert "+profiles: {default: {mode: host}}" in trust.change(v)  # the change since the last trust
    with pytest.raises(trust.UntrustedError) as err:
        trust.require([item], _state(tmp_path))
    line = str(err.value)
    assert line == (f"sbox: {cfg}: opt-in config changed since you trusted it and is not trusted, nothing ran; "
                    f"review it, then: sbox trust {cfg}")


def test_only_the_deciding_part_counts(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.0\n")
    item = Input(str(req), "requirements file", "options")
    assert trust.verdict(item, _state(tmp_path)).state == "empty"  # no option line: nothing to trust
    req.write_text("requests==2.0\n--index-url http://127.0.0.1:9/simple\n")
    assert trust.verdict(item, _state(tmp_path)).state == "new"
    trust.record(item, _state(tmp_path))
    req.write_text("requests==2.1\nflask\n--index-url http://127.0.0.1:9/simple\n")  # packages change freely
    assert trust.verdict(item, _state(tmp_path)).state == "trusted"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[project]\nname = 'a'\n[tool.sbox]\nversion = 1\n")
    opt = Input(str(pyproject), trust.OPT_IN, "tool.sbox")
    trust.record(opt, _state(tmp_path))
    pyproject.write_text("[project]\nname = 'b'\ndependencies = ['x']\n[tool.sbox]\nversion = 1\n")
    assert trust.verdict(opt, _state(tmp_path)).state == "trusted"
    pyproject.write_text("[project]\nname = 'b'\n[tool.sbox]\nversion = 1\n[tool.sbox.profiles.default]\nmode = 'host'\n")
    assert trust.verdict(opt, _state(tmp_path)).state == "changed"


def test_lines_with_credentials_are_not_kept(tmp_path: Path) -> None:
    rc = tmp_path / ".npmrc"
    rc.write_text("registry=https://r.example/\n//r.example/:_authToken=npm_SECRETCANARY\n")
    trust.record(Input(str(rc), "npm config"), _state(tmp_path))
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert b"SECRETCANARY" not in path.read_bytes()


def test_untrust_forgets(tmp_path: Path) -> None:
    cfg = tmp_path / "sbox.yaml"
    cfg.write_text("version: 1\n")
    item = Input(str(cfg), trust.OPT_IN)
    trust.record(item, _state(tmp_path))
    assert trust.forget(str(cfg), _state(tmp_path)) is True
    assert trust.verdict(item, _state(tmp_path)).state == "new"


@pytest.mark.parametrize("kind", ["fifo", "link", "device", "big"])
def test_what_is_not_a_small_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "requirements.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        (tmp_path / "real.txt").write_text("-i http://x/\n")
        path.symlink_to(tmp_path / "real.txt")
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.write_bytes(b"-i x\n" * (1 << 19))
    started = time.monotonic()
    assert read_regular(str(path)) is None
    v = trust.verdict(Input(str(path), "requirements file", "options"), _state(tmp_path))
    assert v.state == "unreadable" and time.monotonic() - started < 5


def test_every_opt_in_file_up_the_tree_is_gathered_and_two_in_one_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sbox.yaml").write_text("version: 1\n")
    deep = tmp_path / "packages" / "web"
    deep.mkdir(parents=True)
    (deep / ".sbox.yaml").write_text("version: 1\n")
    found = [i.path for i in gate.opt_in(str(deep))]
    assert found[:2] == [str(deep / ".sbox.yaml"), str(tmp_path / "sbox.yaml")]
    (deep / "sbox.yaml").write_text("version: 1\n")
    with pytest.raises(ConfigError, match="both opt this directory in"):
        gate.opt_in(str(deep))


def test_trust_paths_on_a_project_trusts_its_inputs(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "sbox.yaml").write_text("version: 1\n")
    (project / ".npmrc").write_text("registry=https://r.example/\n")
    (project / "requirements.txt").write_text("-r more.txt\nx\n")
    (project / "more.txt").write_text("--find-links ./wheels\n")
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "SBOX_STATE_DIR": _state(tmp_path),
           "SBOX_CACHE_DIR": str(tmp_path / "cache"), "SBOX_USER_CONFIG": str(tmp_path / "uc.yaml")}
    out = io.StringIO()
    assert trust_paths([str(project)], env, out=out) == 0
    text = out.getvalue()
    for name in ("sbox.yaml", ".npmrc", "requirements.txt"):
        assert f"trusted: {project / name}" in text
    items = gate.project(str(project), env)
    assert all(v.state in ("trusted", "empty") for v in trust.check(items, _state(tmp_path)))


def test_mounts_never_include_home_its_secrets_or_links_in_the_project(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "home" / "code" / "app"
    (home / ".ssh").mkdir(parents=True)
    root.mkdir(parents=True)
    (root / ".claude").symlink_to("../../.ssh")
    with pytest.raises(UsageError, match="symbolic link"):
        boundary.check_mounts([Mount(str(root / ".claude"), str(root / ".claude"))], str(root), str(home), ())
    with pytest.raises(UsageError, match="HOME or a directory above it"):
        boundary.check_mounts([Mount(str(tmp_path), str(tmp_path))], str(root), str(home), ())
    with pytest.raises(UsageError, match="secret places"):
        boundary.check_mounts([Mount(str(home / ".ssh"), str(home / ".ssh"))], str(root), str(home), ())
    masks = boundary.check_mounts([Mount(str(home / "code"), str(home / "code"))], str(root), str(home), ())
    assert masks == []
    (home / "code" / ".netrc").write_text("x")  # not a secret place: only HOME's own
    masks = boundary.check_mounts([Mount(str(home / ".local"), str(home / ".local"))], str(root), str(home), ())
    assert masks == []
    (home / ".local" / "share" / "keyrings").mkdir(parents=True)
    masks = boundary.check_mounts([Mount(str(home / ".local"), str(home / ".local"))], str(root), str(home), ())
    assert masks == [Mount("", str(home / ".local" / "share" / "keyrings"), kind="tmpfs")]
    with pytest.raises(UsageError, match="is your HOME or contains it"):
        boundary.check_root(str(home), str(home), str(home / "sbox.yaml"))


def test_own_dirs_in_a_writable_mount_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".state").mkdir(parents=True)
    with pytest.raises(UsageError, match="lies inside"):
        boundary.check_mounts([Mount(str(root), str(root), readonly=False)], str(root), "/nonexistent",
                              [str(root / ".state")])
    boundary.check_mounts([Mount(str(root), str(root), readonly=True)], str(root), "/nonexistent", [str(root / ".state")])


def test_names_from_project_files_are_never_explicit() -> None:
    net, _ = build_network(True, ("*.npmjs.org", "127.0.0.1:4873"), "proxy", implied=("10.0.0.5:8080", "r.example"),
                           static={"r.example": ("10.1.1.1",)})
    assert "127.0.0.1" in net.explicit
    assert "10.0.0.5" not in net.explicit and "r.example" not in net.explicit
    assert dict(net.pins)["r.example"] == ("10.1.1.1",)


def test_url_credentials_and_host_path() -> None:
    assert has_url_credentials("https://u:pass@registry.example/")
    assert has_url_credentials("x https://token@h/ y")
    assert not has_url_credentials("https://registry.example/@scope/pkg")
    assert host_path("./node_modules/.bin:/p/node_modules/.bin::/usr/bin:bin", "/p", "/p") == "/usr/bin"


def test_network_and_host_paths_leave_out_what_sandboxes_write(tmp_path: Path) -> None:
    """A venv's bin (any venv: pip writes the one it installs into), the project, sbox's cache."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    cache, tools = tmp_path / "cache", tmp_path / "tools"
    (cache / "bin").mkdir(parents=True)
    tools.mkdir()
    path = os.pathsep.join([str(venv / "bin"), str(cache / "bin"), str(tools), "rel", "/usr/bin"])
    assert network_path(path, (str(cache),)) == os.pathsep.join([str(tools), "/usr/bin"])
    assert host_path(path, "/p", "/p", (str(cache),)) == os.pathsep.join([str(tools), "/usr/bin"])


def test_a_name_listed_bare_and_with_a_port_keeps_the_default_ports() -> None:
    net, _ = build_network(True, ("registry.test", "registry.test:8080"), "proxy",
                           static={"registry.test": ("203.0.113.5",)})
    assert dict(net.ports)["registry.test"] == (80, 443, 8080)
    only, _ = build_network(True, ("registry.test:8080",), "proxy", static={"registry.test": ("203.0.113.5",)})
    assert dict(only.ports)["registry.test"] == (8080,)


def test_a_bind_source_is_opened_without_following_a_link_below_the_root(tmp_path: Path) -> None:
    from sbox_shim.backends import pinned

    root = tmp_path / "p"
    (root / "out").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (root / "swapped").symlink_to("../home")
    fd = pinned.open_source(str(root), str(root / "out"))
    try:
        assert os.fstat(fd).st_ino == os.stat(root / "out").st_ino
    finally:
        os.close(fd)
    for source in (root / "swapped", root / "swapped" / "x"):
        with pytest.raises(OSError):
            pinned.open_source(str(root), str(source))


def test_an_invisible_prefix_does_not_hide_an_option_line() -> None:
    from sbox_shim.ecosystems.pip import option_lines

    assert option_lines("\ufeff--index-url http://127.0.0.1:9/simple\nx==1\n") == ["--index-url http://127.0.0.1:9/simple"]


def test_a_registry_url_sbox_cannot_hold_is_dropped_not_a_traceback() -> None:
    from sbox_shim.ecosystems import url_entry

    assert url_entry("http://localhost.:48731/") == "localhost:48731"
    assert url_entry("http://reg.example:99999/") is None


def test_a_file_trusted_whole_is_trusted_for_any_part(tmp_path: Path) -> None:
    req = tmp_path / "a.txt"
    req.write_text("-r b.txt\n")
    trust.record(Input(str(req), "tool config"), _state(tmp_path))  # `sbox trust a.txt`: the whole file
    assert trust.verdict(Input(str(req), "requirements file", "options"), _state(tmp_path)).state == "trusted"


def test_a_rust_toolchain_inside_the_project_is_refused(tmp_path: Path) -> None:
    from sbox_shim import ecosystems

    root = tmp_path / "p"
    root.mkdir()
    (root / "rust-toolchain.toml").write_text('[toolchain]\npath = "tc"\n')
    ctx = ecosystems.Context(str(root), str(root), str(tmp_path / "home"), {}, str(tmp_path / "cache"), None)
    with pytest.raises(UsageError, match="names a toolchain inside the project"):
        ecosystems.phases(("cargo", "build"), ctx)
    (root / "rust-toolchain.toml").write_text(f'[toolchain]\npath = "{tmp_path / "elsewhere"}"\n')
    assert ecosystems.phases(("cargo", "build"), ctx)


def test_what_a_sandbox_wrote_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    rc = tmp_path / ".npmrc"
    rc.write_text("registry=https://r.example/\ncafile=/x\x1b[1A\x1b[2K\r\n")
    out = io.StringIO()
    env = {"HOME": str(tmp_path / "home"), "SBOX_STATE_DIR": _state(tmp_path), "PATH": "/usr/bin"}
    trust_paths([str(rc)], env, out=out)
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert "cafile=/x\\x1b[1A\\x1b[2K" in out.getvalue()


def test_a_utf16_requirements_file_has_option_lines_too(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_bytes("--find-links /srv/wheels\nx==1\n".encode("utf-16"))
    assert trust.verdict(Input(str(req), "requirements file", "options"), _state(tmp_path)).state == "new"


def test_a_tool_in_the_local_bin_gets_only_that_bin(tmp_path: Path) -> None:
    from sbox_shim.layout import tool_prefix

    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "mytool").write_text("#!/bin/sh\n")
    assert tool_prefix(str(home / ".local" / "bin" / "mytool"), str(home)) == str(home / ".local" / "bin")


def test_an_unreadable_registry_url_is_no_entry() -> None:
    from sbox_shim.ecosystems import url_entry

    assert url_entry("http://[::1/") is None  # no traceback; a zoned link-local literal is refused by the proxy


def _host_mode_plan(tmp_path: Path, argv: list[str]):  # type: ignore[no-untyped-def]
    from sbox_shim.build import build_plan
    from sbox_shim.config import Config, Profile
    from sbox_shim.host import Host

    root = tmp_path / "p"
    root.mkdir(exist_ok=True)
    host = Host(uid=1000, gid=1000, user="dev", home=str(tmp_path / "home"), cwd=str(root), env={"PATH": "/usr/bin"},
                shim_dirs=(), python="/usr/bin/python3", python_prefix="/usr", package_dir="/nonexistent",
                cache_dir=str(tmp_path / "cache"), state_dir=_state(tmp_path))
    cfg = Config(str(root / "sbox.yaml"), str(root), "bwrap", {"default": Profile("default", mode="host")})
    return build_plan(argv, cfg, host, which=lambda name, path, shims: f"/usr/bin/{name}"), host, root


def test_host_mode_npx_and_npm_prefix_read_trusted_config_only(tmp_path: Path) -> None:
    plan, host, root = _host_mode_plan(tmp_path, ["npx", "-c", "echo hi"])
    (root / ".npmrc").write_text("script-shell=/x.sh\n")
    assert str(root / ".npmrc") in [i.path for i in gate.host_scripts(plan, host.cwd, host)]
    (root / "pkg").mkdir()
    (root / "pkg" / ".npmrc").write_text("script-shell=/x.sh\n")
    (root / "pkg" / "package.json").write_text('{"scripts": {"test": "evil"}}')
    plan, host, root = _host_mode_plan(tmp_path, ["npm", "--prefix", "pkg", "test"])
    paths = [i.path for i in gate.host_scripts(plan, host.cwd, host)]
    assert str(root / "pkg" / ".npmrc") in paths and str(root / "pkg" / "package.json") in paths


def test_host_mode_refuses_an_interpreter_inside_the_project(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="lies inside the project"):
        _host_mode_plan(tmp_path, ["pip", "--python", ".venv/bin/python", "list"])


def test_publish_config_is_part_of_what_a_host_mode_npm_trusts() -> None:
    """npm lays package.json's publishConfig over its config: `script-shell` there ran a project file
    on the host under a host-mode `npm publish` (red team). It decides, like the scripts."""
    plain = json.dumps({"name": "a", "scripts": {"prepack": "echo hi"}}).encode()
    planted = json.dumps({"name": "a", "scripts": {"prepack": "echo hi"},
                          "publishConfig": {"script-shell": "./evil.sh"}}).encode()
    assert trust.decisive(plain, "scripts") != trust.decisive(planted, "scripts")
    assert trust.decisive(json.dumps({"name": "a", "version": "2"}).encode(), "scripts") == ""


@pytest.mark.parametrize("name", ["npm_config_key", "npm_config_otp", "AWS_SKIP_ACCESS_KEY_ID", "GH_SKIP_PAT",
                                  "SKIP_PASS", "SKIP_PW", "NPM_TOKEN_SKIP", "GPG_KEY"])
def test_credential_names_never_pass_even_as_skip_switches(name: str) -> None:
    from sbox_shim.environment import scrub

    assert name not in scrub({name: "x", "PUPPETEER_SKIP_DOWNLOAD": "1"})
    assert scrub({name: "x", "PUPPETEER_SKIP_DOWNLOAD": "1"}) == {"PUPPETEER_SKIP_DOWNLOAD": "1"}


def test_npm_local_dependencies_the_scripts_phase_may_write(tmp_path: Path) -> None:
    """file: dependencies inside the project: their own directories, never the root, a hidden
    directory (.git, .husky, .venv: what the host runs) or a venv; a link leading out is outside."""
    from sbox_shim.ecosystems import npm_local

    root = tmp_path / "p"
    for d in ("packages/lib", ".husky", ".venv", "env", "outside"):
        (root / d).mkdir(parents=True)
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "lnk").symlink_to(tmp_path)
    deps = {"a": "file:packages/lib", "b": "file:.husky", "c": "file:.venv", "d": "file:env", "e": "file:.",
            "f": "file:packages/lib/../.."}
    (root / "package.json").write_text(json.dumps({"dependencies": deps}))
    assert npm_local.inside_dirs(str(root), str(root)) == ()  # lib builds nothing: read-only
    for lib in ({"scripts": {"postinstall": "node build.js"}}, {"scripts": {"prepare": "tsc"}}, "binding.gyp"):
        if lib == "binding.gyp":
            (root / "packages" / "lib" / "package.json").write_text("{}")
            (root / "packages" / "lib" / "binding.gyp").write_text("{}")
        else:
            (root / "packages" / "lib" / "package.json").write_text(json.dumps(lib))
        assert npm_local.inside_dirs(str(root), str(root)) == ("packages/lib/",)
    (root / "packages" / "lib" / "binding.gyp").unlink()
    (root / "packages" / "lib" / "package.json").write_text(json.dumps({"scripts": {"test": "x", "build": "y"}}))
    assert npm_local.inside_dirs(str(root), str(root)) == ()
    (root / "package.json").write_text(json.dumps({"dependencies": {"g": "file:lnk/x"}}))
    with pytest.raises(UsageError, match="outside the project root"):
        npm_local.check(str(root), str(root), [])
