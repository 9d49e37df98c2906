"""pip's one-phase install: the plan's three steps (pip.py, pip_venv.installer), the hook that skips
the two phases once it completed (pip_run.py), and the pure parts of the step itself
(pip_install.py), on files made in a temp dir. The step run for real, planted files and all, is in
tests/e2e/test_pip_one_phase.py."""
from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sbox_shim import ecosystems
from sbox_shim.ecosystems import Context, Phase, pip_install, pip_run
from sbox_shim.plan import Mount, Step

OWN = os.path.dirname(str(importlib.util.find_spec("pip").origin))  # type: ignore[union-attr]
OWN_INFO = next(n for n in os.listdir(os.path.dirname(OWN)) if n.startswith("pip-") and n.endswith(".dist-info"))
MINOR = "python%d.%d" % sys.version_info[:2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("project", "home", "cache", "elsewhere")}
    for d in dirs.values():
        d.mkdir()
    base = dirs["home"] / ".pyenv" / "versions" / "python"  # where pyenv installs: no sandbox writes there
    write(base / "bin" / "python3.11", "").chmod(0o755)
    write(base / "lib" / "python3.11" / "os.py", "")
    venv = dirs["project"] / ".venv"
    write(venv / "pyvenv.cfg", f"home = {base}/bin\nversion = 3.11.7\n")
    write(venv / "bin" / "pip", f"#!{venv}/bin/python3\n")
    (venv / "lib" / "python3.11" / "site-packages" / OWN_INFO).mkdir(parents=True)  # sbox's pip, by name
    dirs["venv"] = venv
    return dirs


def plan(where: dict[str, Path], argv: str, real: str | None = ".venv/bin/pip") -> tuple[Phase, ...]:
    ctx = Context(cwd=str(where["project"]), project_root=str(where["project"]), home=str(where["home"]),
                  env={"VIRTUAL_ENV": str(where["venv"]), "PIP_INDEX_URL": "http://u:p@127.0.0.1:9/simple"},
                  cache_dir=str(where["cache"]), real_tool=real)
    found = ecosystems.phases(argv.split(), ctx)
    assert found is not None
    return found


def test_an_install_into_a_venv_with_sboxs_pip_tries_one_phase_first(where: dict[str, Path]) -> None:
    first, download, offline = plan(where, "pip install -U x")
    venv, wheelhouse = str(where["venv"]), str(where["cache"] / "pip" / "runs")
    assert first.argv[1:] == ("-I", "-S", "/.sbox/pip-install", "install", "-U", "x")
    assert first.label == "download" and first.network and first.writable == ()
    assert first.env["SBOX_PIP_DONE"] == os.path.join(wheelhouse, pip_run.DONE)
    assert (first.env["SBOX_PIP_VENV"], first.env["SBOX_PIP_TOOL"]) == (venv, os.path.join(venv, "bin", "pip"))
    assert first.secrets == download.secrets and "PIP_INDEX_URL" in first.secrets  # as the download phase's
    by_target = {m.target: m for m in first.mounts}
    assert by_target[venv] == Mount(venv, venv, readonly=False)  # what it installs into
    assert by_target["/.sbox/pip-install"].source.endswith("sbox_shim/ecosystems/pip_install.py")
    info = os.path.join(os.path.dirname(OWN), OWN_INFO)
    assert by_target[OWN].readonly and by_target[info].readonly  # sbox's pip and its RECORD, read-only
    assert by_target[wheelhouse].kind == "run"  # where the mark goes: this run's own
    # The two phases as before, each decided at run time by pip's hook, as the attempt itself is.
    note = first.hook[2]
    assert first.hook == download.hook == offline.hook == ("pip", wheelhouse, note)
    assert note.startswith(str(where["cache"] / "pip" / "two-phase") + "/")
    assert plan(where, "pip install -U y")[0].hook[2] != note  # one note a command
    assert download.argv[3:5] == ("/.sbox/pip", "download") and offline.argv[:2] == ("pip", "install")
    assert {m.target: m for m in download.mounts}[venv].readonly


@pytest.mark.parametrize("argv", ["pip install -e .", "pip install .", "pip install --user x",
                                  "pip install --target=t x", "pip install --no-binary :all: x",
                                  "pip install --report r.json x", "pip install git+https://h/x.git",
                                  "pip download x", "pip wheel x"])
def test_commands_that_would_build_or_write_elsewhere_keep_two_phases(where: dict[str, Path], argv: str) -> None:
    write(where["project"] / "setup.py", "")
    assert len(plan(where, argv)) <= 2


def test_no_one_phase_when_the_venvs_pip_is_another_or_not_the_one_run(where: dict[str, Path]) -> None:
    assert len(plan(where, "pip install x", real="/usr/bin/pip")) == 2  # the pip run is not the venv's
    info = where["venv"] / "lib" / "python3.11" / "site-packages" / OWN_INFO
    info.rename(info.with_name("pip-1.0.dist-info"))
    assert len(plan(where, "pip install x")) == 2


def step(hook: tuple[str, ...]) -> Step:
    return Step(label="scripts", argv=("pip",), profile="pip:scripts", reason="", mode="sandbox", cwd="/",
                env=(), network=None, mounts=(), files=(), writable=(), hook=hook)  # type: ignore[arg-type]


def run_hooks(hook: tuple[str, ...]) -> list[str]:
    """What pip's hook does with the three steps, in order: run, or the skip's reason."""
    state: str | None = None
    out = []
    for label in ("download", "download", "scripts"):
        s = step(hook)
        state, chosen, why = pip_run.before(state, s, io.StringIO())
        out.append("run" if chosen is s else why)
        if label == "download" and chosen is s and out == ["run"] and (Path(hook[1]) / "mark-now").exists():
            (Path(hook[1]) / pip_run.DONE).write_text("")  # what the one-phase step leaves on success
    return out


def test_the_two_phases_are_skipped_only_on_the_mark_as_a_file(tmp_path: Path) -> None:
    wheelhouse, note = tmp_path / "wh", tmp_path / "notes" / "n"
    wheelhouse.mkdir()
    hook = ("pip", str(wheelhouse), str(note))
    (wheelhouse / pip_run.DONE).symlink_to("/etc/passwd")  # not a file: no mark
    assert run_hooks(hook) == ["run", "run", "run"]
    (wheelhouse / pip_run.DONE).unlink()
    note.unlink()
    (wheelhouse / "mark-now").write_text("")
    assert run_hooks(hook) == ["run", pip_run.SKIPPED, pip_run.SKIPPED]


def test_a_command_that_fell_back_goes_straight_to_the_two_phases_for_a_day(tmp_path: Path) -> None:
    wheelhouse, note = tmp_path / "wh", tmp_path / "notes" / "n"
    wheelhouse.mkdir()
    hook = ("pip", str(wheelhouse), str(note))
    assert run_hooks(hook) == ["run", "run", "run"] and note.is_file()  # fell back: noted
    assert run_hooks(hook) == [pip_run.NOTED, "run", "run"]
    os.utime(note, (0, 0))  # a day later: tried again, and on success the note goes
    (wheelhouse / "mark-now").write_text("")
    assert run_hooks(hook) == ["run", pip_run.SKIPPED, pip_run.SKIPPED] and not note.exists()


@pytest.mark.parametrize("line,named", [
    ("#!{v}/bin/python3", "{v}/bin/python3"), ("#!{v}/bin/python", "{v}/bin/python"),
    (f"#!{{v}}/bin/{MINOR}", f"{{v}}/bin/{MINOR}"), ("#!/usr/bin/python3", None), ("#!/bin/sh", None),
    ("#!{v}/bin/python3 -E", None), ("#!{v}/../v/bin/python3", None), ("import sys", None)])
def test_scripts_get_the_interpreter_of_the_venvs_pip_script_only_if_it_is_the_venvs_python(
        tmp_path: Path, line: str, named: str | None) -> None:
    v = str(tmp_path / "v")
    tool = write(tmp_path / "v" / "bin" / "pip", line.format(v=v) + "\nrest\n")
    assert pip_install.interpreter(v, str(tool)) == (named.format(v=v) if named else None)
    assert pip_install.interpreter(v, str(tmp_path / "pip")) is None  # not in the venv's bin
    tool.unlink()
    tool.symlink_to(tmp_path / "elsewhere")
    assert pip_install.interpreter(v, str(tool)) is None


def record(directory: Path, lines: list[str]) -> None:
    write(directory / "pip-23.2.1.dist-info" / "RECORD", "\n".join(lines) + "\n")


def test_the_venvs_pip_must_be_sboxs_file_for_file(tmp_path: Path) -> None:
    own, venv = tmp_path / "own", tmp_path / "venv"
    theirs = Path(pip_install.site_packages(str(venv)))
    pip = ["pip/__init__.py,sha256=a,1", "pip/_internal/x.py,sha256=b,2"]
    record(own, pip + ["../../bin/pip,sha256=c,3", "pip/__pycache__/x.pyc,,"])
    record(theirs, list(reversed(pip)) + ["../../../bin/pip,sha256=d,3"])
    assert pip_install.same_pip(str(own), str(venv)) is None
    record(theirs, pip[:1] + ["pip/_internal/x.py,sha256=EVIL,2"])
    assert pip_install.same_pip(str(own), str(venv)) == "the venv's pip is not sbox's own"
    (theirs / "pip-23.2.1.dist-info").rename(theirs / "pip-99.dist-info")
    record(theirs, pip)
    assert pip_install.same_pip(str(own), str(venv)) == "the venv has no single pip distribution"


def test_site_paths_read_pth_files_as_text_and_refuse_code_that_changes_sys_path(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    site = Path(pip_install.site_packages(str(venv)))
    write(venv / "pyvenv.cfg", "include-system-site-packages = false\n")
    (tmp_path / "src").mkdir()
    write(site / "a.pth", f"# comment\n{tmp_path / 'src'}\n/nonexistent\nimport os; os.x = 1\n\n")
    write(site / "distutils-precedence.pth", "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; "
                                             "enabled and __import__('_distutils_hack').add_shim(); \n")
    paths = pip_install.site_paths(str(venv), str(venv / "bin"), ["/std"])
    assert paths == [str(venv / "bin"), "/std", str(site), str(tmp_path / "src")]
    for code in ("import sys; sys.path.insert(0, '/x')", "import site; site.addsitedir('/x')",
                 "import x; __import__('sys').path.append('/x')"):
        write(site / "b.pth", code + "\n")
        assert pip_install.site_paths(str(venv), str(venv / "bin"), []) is None


def test_site_paths_include_the_base_site_packages_when_pyvenv_cfg_says_so(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    Path(pip_install.site_packages(str(venv))).mkdir(parents=True)
    write(venv / "pyvenv.cfg", "include-system-site-packages = true\n")
    paths = pip_install.site_paths(str(venv), str(venv / "bin"), []) or []
    base = pip_install.site_packages(sys.base_prefix)
    assert pip_install.site_packages(str(venv)) in paths and (base in paths) == os.path.isdir(base)


def link(url: str) -> SimpleNamespace:
    return SimpleNamespace(is_wheel=url.endswith(".whl"), filename=url.rsplit("/", 1)[1])


@pytest.mark.parametrize("req,why", [
    (SimpleNamespace(link=link("/f/a-1.0-py3-none-any.whl"), original_link=link("/f/a-1.0-py3-none-any.whl"),
                     is_wheel_from_cache=False), ""),
    (SimpleNamespace(link=link("/f/a-1.0.tar.gz"), original_link=None), "a-1.0.tar.gz is not a wheel"),
    (SimpleNamespace(link=link("/c/a-1.0-py3-none-any.whl"), original_link=link("/f/a-1.0.tar.gz"),
                     is_wheel_from_cache=True), "would install a wheel pip built earlier"),
    (SimpleNamespace(link=None), "is not a wheel")])
def test_anything_but_a_wheel_needs_a_build(req: SimpleNamespace, why: str) -> None:
    found = pip_install.needs_build(req)
    assert why in found and bool(found) == bool(why)


def test_no_one_phase_when_the_venv_has_its_own_pip_conf(where: dict[str, Path]) -> None:
    """The downloading pip does not read a venv's pip.conf (README: the trust boundary); the one-phase
    step, which is that pip, leaves it to the two phases rather than differ from them."""
    write(where["venv"] / "pip.conf", "[install]\nno-compile = true\n")
    assert len(plan(where, "pip install x")) == 2


def test_a_planted_fifo_is_never_opened_for_reading_to_the_end(tmp_path: Path) -> None:
    """A `.pth`, pyvenv.cfg or RECORD that is a FIFO would block the step: skipped as site.py's
    reader cannot, read as nothing."""
    venv = tmp_path / "v"
    site = Path(pip_install.site_packages(str(venv)))
    site.mkdir(parents=True)
    os.mkfifo(site / "a.pth")
    os.mkfifo(venv / "pyvenv.cfg")
    (site / "pip-1.dist-info").mkdir()
    os.mkfifo(site / "pip-1.dist-info" / "RECORD")
    assert pip_install.site_paths(str(venv), str(venv / "bin"), []) == [str(venv / "bin"), str(site)]
    record(tmp_path / "own", ["pip/__init__.py,sha256=a,1"])
    assert pip_install.same_pip(str(tmp_path / "own"), str(venv)) == "the venv has no single pip distribution"
