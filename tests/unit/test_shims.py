"""The shims, run for real by /bin/sh (and bash): fast path, hand-over, recursion, management."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from support.trust import trust

from sbox_shim import cli, shims
from sbox_shim.toolpath import SHIM_MARKER, is_shim

SHELLS = ["/bin/sh"] + (["bash"] if shutil.which("bash") else [])
NO_REAL = "sbox: npm: no real npm on PATH outside the sbox shims\n"
FAKE_TOOL = """#!/bin/sh
printf 'real:%s\\n' "$0"
printf 'pwd:%s\\n' "$PWD"
for a in "$@"; do printf 'arg:[%s]\\n' "$a"; done
"""
RECORDER = """#!/bin/sh
{{
printf 'sbox:%s\\n' "$0"
for a in "$@"; do printf 'arg:[%s]\\n' "$a"; done
printf 'dirs:%s\\n' "$SBOX_SHIM_DIRS"
printf 'guard:%s\\n' "$SBOX_SHIM_GUARD"
printf 'cwd:%s\\n' "$(pwd -P)"
}} > {log}
echo handed-over
"""
TRAP = """#!/bin/sh
echo "$0 $*" >> {log}
echo "TRAP: $0 must not run on this path" >&2
exit 99
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Shims (handing over to a recorder), a fake real npm, a trap for Python and sbox."""
    w = {
        "shims": tmp_path / "shims",
        "real": tmp_path / "real",
        "traps": tmp_path / "traps",
        "project": tmp_path / "project",
        "log": tmp_path / "sbox.log",
        "trap_log": tmp_path / "trap.log",
    }
    _script(w["real"] / "npm", FAKE_TOOL)
    for name in ("python3", "python", "sbox"):
        _script(w["traps"] / name, TRAP.format(log=w["trap_log"]))
    w["recorder"] = _script(tmp_path / "bin" / "fake-sbox", RECORDER.format(log=w["log"]))
    w["project"].mkdir()
    shims.install(str(w["shims"]), ["npm", "pip"], str(w["recorder"]))
    return w


def _path(*dirs: Path | str) -> str:
    return os.pathsep.join(str(d) for d in dirs)


def run(w: dict[str, Path], args: list[str], *, cwd: Path | None = None, path: str | None = None,
        shell: str | None = None, extra: dict[str, str] | None = None,
        tool: str = "npm") -> subprocess.CompletedProcess[str]:
    env = {"PATH": path if path is not None else _path(w["shims"], w["traps"], w["real"], "/usr/bin", "/bin"),
           "HOME": os.environ["HOME"]}
    env.update(extra or {})
    shim = str(w["shims"] / tool)
    argv = [shell, shim, *args] if shell else [tool, *args]
    return subprocess.run(argv, cwd=cwd or w["project"], env=env, capture_output=True, text=True, timeout=20)


def _args(out: str) -> list[str]:
    return re.findall(r"^arg:\[(.*?)\]$", out, re.S | re.M)


def _field(out: str, key: str) -> str:
    return next(line[len(key) + 1:] for line in out.splitlines() if line.startswith(key + ":"))


TRICKY = ["install", "", "two words", "it's", 'say "hi"', "*", "$HOME", "a\\b", "-- --x", "line\nbreak"]


# ---------------------------------------------------------------- generation


def test_render_fills_every_placeholder_and_carries_the_marker(tmp_path: Path) -> None:
    text = shims.render("npm", "/opt/sbox venv/bin/sbox", str(tmp_path / "it's shims"))
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == SHIM_MARKER
    assert "@" not in text.replace("$@", "")
    assert "_sbox_tool=npm" in text
    assert "_sbox_bin='/opt/sbox venv/bin/sbox'" in text


def test_render_rejects_a_name_that_is_not_a_command() -> None:
    with pytest.raises(Exception, match="not a command name"):
        shims.render("../npm", "/x/sbox", "/x/shims")


def test_install_writes_every_tool_executable_and_marks_the_dir(tmp_path: Path) -> None:
    d = tmp_path / "shims"
    outcomes = shims.install(str(d), shims.tools(), "/x/sbox")
    assert {o.action for o in outcomes} == {"wrote"}
    for name in ("npm", "npx", "pnpm", "yarn", "pip", "pip3", "cargo", "go", "uv", "poetry", "bun"):
        path = d / name
        assert is_shim(str(path)), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert is_shim(str(d / shims.SENTINEL))
    assert shims.installed(str(d)) == sorted(shims.tools())


def test_reinstall_is_idempotent_and_refreshes_our_own_shims(tmp_path: Path) -> None:
    d = tmp_path / "shims"
    shims.install(str(d), ["npm", "go"], "/old/sbox")
    assert {o.action for o in shims.install(str(d), ["npm", "go"], "/old/sbox")} == {"unchanged"}
    again = shims.install(str(d), ["npm", "go"], "/new/sbox")
    assert {o.name: o.action for o in again} == {"npm": "refreshed", "go": "refreshed", shims.SENTINEL: "unchanged"}
    assert "_sbox_bin=/new/sbox" in (d / "npm").read_text()
    (d / "go").chmod(0o644)
    assert {o.name: o.action for o in shims.install(str(d), ["go"], "/new/sbox")}["go"] == "refreshed"
    assert stat.S_IMODE((d / "go").stat().st_mode) == 0o755


def test_install_never_overwrites_a_file_that_is_not_ours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "shims"
    d.mkdir()
    (d / "npm").write_text("#!/bin/sh\necho mine\n")
    (d / "yarn").symlink_to("/usr/bin/env")
    code = cli.main(["shims", "install", "--dir", str(d)])
    assert code == 1
    assert (d / "npm").read_text() == "#!/bin/sh\necho mine\n"
    assert os.readlink(d / "yarn") == "/usr/bin/env"
    err = capsys.readouterr().err
    assert f"{d / 'npm'} exists and is not an sbox shim; left it alone" in err
    assert "yarn" in err
    assert is_shim(str(d / "pip")) and is_shim(str(d / "cargo"))


def test_uninstall_removes_only_our_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "shims"
    shims.install(str(d), ["npm", "pip"], "/x/sbox")
    (d / "cargo").write_text("not ours\n")
    assert cli.main(["shims", "uninstall", "--dir", str(d)]) == 0
    assert sorted(os.listdir(d)) == ["cargo"]
    assert "removed 2 shims" in capsys.readouterr().out
    (d / "cargo").unlink()
    shims.install(str(d), ["npm"], "/x/sbox")
    shims.uninstall(str(d))
    assert not d.exists()


def test_list_shows_each_shim_and_the_real_tool_it_runs(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env = {"PATH": _path(world["shims"], world["real"])}
    assert cli.main(["shims", "list", "--dir", str(world["shims"])], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{world['shims'] / 'npm'} -> {world['real'] / 'npm'}" in out
    assert f"{world['shims'] / 'pip'} -> (no real pip on PATH)" in out


def test_verify_reports_ok_shadowed_missing_and_no_real_tool(world: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = str(world["shims"])
    ahead = _script(tmp_path / "ahead" / "npm", FAKE_TOOL)
    assert shims.status("npm", d, _path(world["shims"], world["real"])) == ("ok", str(world["real"] / "npm"))
    assert shims.status("npm", d, _path(ahead.parent, world["shims"], world["real"])) == ("shadowed", str(ahead))
    assert shims.status("pip", d, _path(world["shims"], world["real"])) == ("no real tool", None)
    assert shims.status("cargo", d, _path(world["shims"], world["real"])) == ("missing", None)

    env = {"PATH": _path(world["shims"], world["real"])}
    assert cli.main(["shims", "verify", "--dir", d], env=env) == 0  # no real pip: reported, not a failure
    out = capsys.readouterr().out
    assert "npm" in out and f"ok ({world['real'] / 'npm'})" in out
    assert "no real tool" in out and "missing" in out
    env = {"PATH": _path(ahead.parent, world["shims"], world["real"])}
    assert cli.main(["shims", "verify", "--dir", d], env=env) == 1
    assert f"shadowed by {ahead}" in capsys.readouterr().out


def test_verify_with_nothing_installed_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["shims", "verify", "--dir", str(tmp_path / "none")], env={"PATH": "/usr/bin"}) == 1
    assert "sbox shims install" in capsys.readouterr().err


def test_default_dir_is_in_user_data_and_env_overrides_it(tmp_path: Path) -> None:
    assert shims.default_dir({}).startswith(os.environ["HOME"])
    assert shims.default_dir({}).endswith(os.path.join("sbox", "shims"))
    assert shims.default_dir({"SBOX_SHIMS_DIR": str(tmp_path / "s")}) == str(tmp_path / "s")


# ---------------------------------------------------------------- fast path: no opt-in


@pytest.mark.parametrize("shell", [None, *SHELLS])
def test_no_config_execs_the_real_tool_with_args_intact(world: dict[str, Path], shell: str | None) -> None:
    proc = run(world, TRICKY, shell=shell)
    assert proc.returncode == 0, proc.stderr
    assert _args(proc.stdout) == TRICKY
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    assert not world["log"].exists() and not world["trap_log"].exists()


def test_argv0_is_the_path_on_path_not_its_realpath(world: dict[str, Path], tmp_path: Path) -> None:
    linked = tmp_path / "linkbin"
    linked.mkdir()
    (linked / "npm").symlink_to(world["real"] / "npm")  # rustup-style: the name matters
    proc = run(world, ["-v"], path=_path(world["shims"], linked))
    assert _field(proc.stdout, "real") == str(linked / "npm")


def test_fast_path_keeps_the_logical_pwd(world: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "via-link"
    link.symlink_to(world["project"])
    env = {"PATH": _path(world["shims"], world["real"]), "PWD": str(link)}
    proc = subprocess.run(["npm"], cwd=link, env=env, capture_output=True, text=True, timeout=20)
    assert _field(proc.stdout, "pwd") == str(link)


def test_fast_path_starts_no_python_and_no_sbox(world: dict[str, Path]) -> None:
    """Traps named python3/python/sbox sit on PATH, and the shim's sbox is the recorder."""
    proc = run(world, ["--version"])
    assert proc.returncode == 0 and "TRAP" not in proc.stderr
    assert not world["trap_log"].exists() and not world["log"].exists()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_fast_path_execs_only_the_shell_and_the_real_tool(world: dict[str, Path], tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    env = {"PATH": _path(world["shims"], world["traps"], world["real"], "/usr/bin", "/bin")}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), "npm", "x"],
                          cwd=world["project"], env=env, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    execs = [line.split('"')[1] for line in trace.read_text().splitlines()
             if "execve(" in line and "= 0" in line]
    assert execs == [str(world["shims"] / "npm"), str(world["real"] / "npm")], execs


def test_missing_real_tool_exits_127_with_one_line(world: dict[str, Path]) -> None:
    proc = run(world, ["install"], path=_path(world["shims"], world["traps"]))
    assert proc.returncode == 127
    assert proc.stderr == NO_REAL
    assert proc.stdout == ""


# ---------------------------------------------------------------- recursion


def test_shims_dir_twice_and_through_a_symlink_cannot_loop(world: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "shims-link"
    link.symlink_to(world["shims"])
    path = _path(world["shims"], link, world["shims"], str(world["shims"]) + "/", world["real"])
    proc = run(world, ["ok"], path=path)
    assert proc.returncode == 0, proc.stderr
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    proc = run(world, ["ok"], path=_path(link, world["shims"]))
    assert (proc.returncode, proc.stderr) == (127, NO_REAL)


def test_a_linked_or_copied_shim_elsewhere_cannot_loop(world: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "npm").symlink_to(world["shims"] / "npm")
    proc = run(world, ["x"], path=_path(tmp_path / "a", world["shims"], world["real"]))
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    # a copy outside any shims dir: it skips itself by identity and finds the real tool
    shutil.copy2(world["shims"] / "npm", tmp_path / "copy-npm")
    _script(tmp_path / "b" / "npm", (tmp_path / "copy-npm").read_text())
    proc = run(world, ["x"], path=_path(world["shims"], tmp_path / "b", world["real"]))
    assert proc.returncode == 0 and _field(proc.stdout, "real") == str(world["real"] / "npm")


def test_another_installs_shims_dir_is_skipped(world: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-shims"
    shims.install(str(other), ["npm"], str(world["recorder"]))
    for path in (_path(world["shims"], other, world["real"]), _path(other, world["shims"], world["real"])):
        proc = run(world, ["x"], path=path)
        assert proc.returncode == 0, proc.stderr
        assert _field(proc.stdout, "real") == str(world["real"] / "npm")


@pytest.mark.parametrize("var", ["SBOX_ACTIVE", "SBOX_SHIM_GUARD"])
def test_nested_calls_pass_through_even_with_config(world: dict[str, Path], var: str) -> None:
    (world["project"] / "sbox.yaml").write_text("version: 1\n")
    proc = run(world, ["install"], extra={var: "1"})
    assert proc.returncode == 0, proc.stderr
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    assert not world["log"].exists()


# ---------------------------------------------------------------- opted in: hand over to sbox


@pytest.mark.parametrize("name", ["sbox.yaml", ".sbox.yaml"])
def test_config_hands_the_command_to_sbox(world: dict[str, Path], name: str) -> None:
    (world["project"] / name).write_text("version: 1\n")
    proc = run(world, TRICKY, extra={"SBOX_SHIM_DIRS": "/elsewhere"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "handed-over\n"
    log = world["log"].read_text()
    assert _field(log, "sbox") == str(world["recorder"])
    assert _args(log) == ["run", "--", "npm", *TRICKY]
    assert _field(log, "dirs") == f"{world['shims']}:/elsewhere"
    assert _field(log, "guard") == "1"
    assert _field(log, "cwd") == str(world["project"].resolve())
    run(world, [], extra={"SBOX_SHIM_DIRS": f"/a:{world['shims']}"})
    assert _field(world["log"].read_text(), "dirs") == f"/a:{world['shims']}"


def test_walks_up_from_a_subdirectory(world: dict[str, Path]) -> None:
    (world["project"] / "sbox.yaml").write_text("version: 1\n")
    deep = world["project"] / "a" / "b" / "c"
    deep.mkdir(parents=True)
    proc = run(world, ["ci"], cwd=deep)
    assert proc.stdout == "handed-over\n"
    assert _field(world["log"].read_text(), "cwd") == str(deep.resolve())


def test_pyproject_with_tool_sbox_opts_in_and_without_does_not(world: dict[str, Path]) -> None:
    pyproject = world["project"] / "pyproject.toml"
    _script(world["real"] / "pip", FAKE_TOOL)
    pyproject.write_text('[project]\nname = "x"\n# [tool.sbox] in a comment does not count\n')
    proc = run(world, ["install", "x"], tool="pip")
    assert _field(proc.stdout, "real") == str(world["real"] / "pip")
    assert not world["log"].exists()
    pyproject.write_text('[project]\nname = "x"\n\n[tool.sbox.profiles.default]\nnetwork = false\n')
    proc = run(world, ["install", "x"], tool="pip")
    assert proc.stdout == "handed-over\n"
    assert _args(world["log"].read_text()) == ["run", "--", "pip", "install", "x"]


def test_the_physical_path_is_walked_as_sbox_does(world: dict[str, Path], tmp_path: Path) -> None:
    """A symlinked dir under an opted-in parent is not opted in: sbox would not find that config."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (world["project"] / "sbox.yaml").write_text("version: 1\n")
    (world["project"] / "link").symlink_to(outside)
    env = {"PATH": _path(world["shims"], world["real"]), "PWD": str(world["project"] / "link")}
    proc = subprocess.run(["npm"], cwd=world["project"] / "link", env=env, capture_output=True, text=True,
                          timeout=20)
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    assert _field(proc.stdout, "pwd") == str(world["project"] / "link")
    (world["project"] / "a").mkdir()
    (world["project"] / "inside").symlink_to(world["project"] / "a")
    proc = run(world, [], cwd=world["project"] / "inside")
    assert proc.stdout == "handed-over\n"


def test_host_mode_through_the_real_sbox_reaches_the_real_tool(world: dict[str, Path], sbox_bin: str) -> None:
    """sbox runs `npm` unsandboxed (mode: host): PATH still has the shim, the guard sends it on."""
    shims.install(str(world["shims"]), ["npm"], sbox_bin)
    (world["project"] / "sbox.yaml").write_text("version: 1\nprofiles:\n  default:\n    mode: host\n")
    trust(world["project"] / "sbox.yaml")
    env = dict(os.environ, PATH=_path(world["shims"], world["real"], "/usr/bin", "/bin"))
    env.pop("SBOX_SHIM_DIRS", None)
    proc = subprocess.run(["npm", "run", "a b"], cwd=world["project"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _field(proc.stdout, "real") == str(world["real"] / "npm")
    assert _args(proc.stdout) == ["run", "a b"]
