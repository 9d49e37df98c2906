"""The persistence guard's pure parts: where git's hooks are, which mounts it watches."""
from __future__ import annotations

from pathlib import Path

import pytest

from sbox_shim import guard
from sbox_shim.plan import Mount


@pytest.mark.parametrize("config, expected", [
    ('[core]\n\thooksPath = .husky/_\n', ".husky/_"),
    ('[Core]\n  hookspath = "githooks" ; a comment\n', "githooks"),
    ('[core]\n\tbare = false\n[hooks]\n\thooksPath = x\n', None),
    ('[core]\n\thooksPath = ../outside\n', None),
    ('[core]\n\thooksPath = ~/hooks\n', None),
    ('[core]\n\thooksPath = .\n', None),
])
def test_hooks_path_is_read_from_git_config_without_git(tmp_path: Path, config: str, expected: str | None) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text(config)
    assert guard.hooks_path(str(tmp_path)) == expected


def test_absolute_hooks_path_inside_the_project_is_watched(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text(f"[core]\n\thooksPath = {tmp_path}/hooks\n")
    assert guard.hooks_path(str(tmp_path)) == "hooks"
    assert "hooks" in guard.watched(str(tmp_path))


def test_writable_parts_of_the_project() -> None:
    root = "/p"
    assert guard.writable_parts([Mount("/p", "/p", readonly=True)], root) == []
    assert guard.writable_parts([Mount("/p", "/p", readonly=False), Mount("/p/.git", "/p/.git")], root) == ["/p"]
    assert guard.writable_parts([Mount("/p/node_modules", "/p/node_modules", readonly=False)], root) == ["/p/node_modules"]
    assert guard.writable_parts([Mount("/", "/", readonly=False)], root) == ["/p"]
    assert guard.writable_parts([Mount("/pq", "/pq", readonly=False), Mount("", "/tmp", False, "tmpfs")], root) == []


def test_a_hook_installer_step_is_recognised() -> None:
    husky = guard.Before("/p", 0, {}, (), b'{"scripts": {"prepare": "husky install"}}')
    plain = guard.Before("/p", 0, {}, (), b'{"scripts": {"prepare": "tsc"}}')
    assert guard.installs_hooks(("npm", "run", "prepare"), husky)
    assert not guard.installs_hooks(("npm", "run", "prepare"), plain)
    assert guard.installs_hooks(("npx", "husky"), plain)


def test_the_programs_git_settings_run_from_the_project() -> None:
    from sbox_shim.guard.watch import command_paths, command_words

    assert command_paths("core", "fsmonitor", "tools/fsmon") == ["tools/fsmon"]
    assert command_paths("core", "fsmonitor", "true") == []  # the built-in daemon
    assert command_paths("core", "sshcommand", "./bin/ssh -i keys/id") == ["./bin/ssh", "keys/id"]
    assert command_paths('filter "x"', "clean", "'scripts/clean' %f") == ["scripts/clean"]
    assert command_paths('filter "fmt"', "clean", "sh tools/clean.sh") == ["tools/clean.sh"]  # red team 17
    assert command_paths('diff "csv"', "textconv", "python3 tools/csv2txt.py") == ["tools/csv2txt.py"]
    assert command_paths("interactive", "difffilter", "tools/df --color") == ["tools/df"]
    assert command_paths('difftool "x"', "cmd", 'sh t/d.sh "$LOCAL" "$REMOTE"') == ["t/d.sh"]
    assert command_paths("alias", "t", "!scripts/t.sh --fast; make -C a/b") == ["scripts/t.sh", "a/b"]
    # red team 18: an interpreter's script without a `/`, a module, and a key not read before
    assert command_paths("core", "fsmonitor", "sh fsmon") == ["fsmon"]
    assert command_paths('filter "x"', "clean", "python3 -u conv.py %f") == ["conv.py"]
    assert command_paths('diff "x"', "textconv", "python3 -m tools.conv") == [
        "tools/conv.py", "tools/conv/__main__.py", "tools/__init__.py", "tools/conv/__init__.py"]
    # red team 19: `-m` joined to its module, a submodule's `update = !…`, and the words behind a
    # wrapper or an option, watched where they name a file (command_words)
    assert command_paths('diff "x"', "textconv", "python3 -mconv") == ["conv.py", "conv/__main__.py", "conv/__init__.py"]
    assert command_paths('submodule "lib"', "update", "!sh ../tools/upd") == ["tools/upd"]  # run in lib/
    assert command_paths('submodule "lib"', "update", "rebase") == []
    assert "fsmon" in command_words("core", "fsmonitor", "timeout 5 sh fsmon")
    assert "conv.py" in command_words('diff "x"', "textconv", "python3 -c 'import conv'")
    assert "x.py" in command_words('diff "x"', "textconv", "python3 -X utf8 x.py")
    assert command_paths('gpg "ssh"', "defaultkeycommand", "tools/key.sh") == ["tools/key.sh"]
    assert command_paths("alias", "b", "!npm run build") == []  # a program's arguments are not scripts
    assert command_paths("core", "fsmonitor", "fsmon") == []  # found on PATH
    assert command_paths("alias", "co", "checkout") == []  # a git subcommand
    assert command_paths("core", "pager", "less -R") == []  # found on PATH
    assert command_paths("core", "editor", "/usr/bin/vim") == []
    assert command_paths("credential", "helper", "store --file=~/.git-credentials") == []
    assert command_paths("user", "name", "a/b") == []  # not a command


def test_only_the_simple_commands_that_run_an_interpreter_give_their_words() -> None:
    """Red team 23: a wrapper anywhere in a setting (`| xargs -n 1 git branch -d`) made every word
    of it (`main` in grep's pattern) a script; a shell's `-c` code is read as commands again."""
    from sbox_shim.guard.watch import command_words

    cleanup = "!git branch --merged main | grep -v '\\*\\|main' | xargs -n 1 git branch -d"
    assert command_words("alias", "cleanup", cleanup) == []
    assert command_words("alias", "up", '!bash -c "git rebase origin/main"') == []
    assert command_words("alias", "f", "!f() { git log main; }; f") == []
    assert "tools/x.py" in command_words("alias", "f", "!f() { python3 tools/x.py; }; f")
    assert "tools/conv3" in command_words('diff "x"', "textconv", "sh -c 'cd tools && exec ./conv3 \"$0\"'")
    assert "tools/t2" in command_words('diff "x"', "textconv", "env -C tools ./t2")
    assert "x.py" in command_words("alias", "n", "!nice -n 10 python3 x.py")
    assert "y.sh" in command_words("alias", "x", "!git ls-files | xargs -n 1 sh y.sh")
    assert "tools/nbdiff.node" in command_words('diff "x"', "textconv", "node tools/nbdiff")


def test_source_python_or_node_takes_before_the_project_s_own(tmp_path: Path) -> None:
    """Red teams 23 and 24: what a step made that git does not track and Python, pytest or Node
    takes before the project's tracked files; not a build's output beside its own output."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    top = str(tmp_path)
    tracked_files = ("lib/index.js", "config.json", "tools/nbdiff/package.json", "app.js", "cli.js", "helpers/fmt.py",
                     "pkg/index.js", "tests/test_a.py", "tests/conftest.py", "argparse.py", "src/app.js")
    made = ("node_modules/x/y.js", "node_modules/x/y.json", "dist/api/index.js", "dist/api.js", "build/lambda/index.js")
    for name in tracked_files + made:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "app").write_bytes(b"\x7fELF\x02\x01\x01")  # a build's binary beside app.js
    (tmp_path / "cli").write_text("require('fs')")  # JavaScript Node would take for ./cli
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", *tracked_files], cwd=tmp_path, check=True)
    is_tracked = tracker(top)

    def shadows(rel: str, py_dirs: frozenset[str] = frozenset([top])) -> bool:
        path, name = str(tmp_path / rel), rel.rsplit("/", 1)[-1]
        return guard.shadowing_source(path, name, py_dirs, top, is_tracked)

    assert shadows("json.py") and shadows("copy.py") and shadows("__pypy__.py") and shadows("_sysconfigdata_x.py")
    assert not shadows("argparse.py")  # tracked: an edit shows in git diff
    assert not shadows("json.py", frozenset()) and not shadows("tools/json.py")
    assert shadows("tools/json.py", frozenset([top + "/tools"]))
    assert not shadows("mymodule.py")
    def tests_made(rel: str) -> bool:
        return guard.tests_made(str(tmp_path / rel), rel.rsplit("/", 1)[-1], top, is_tracked)

    assert tests_made("tests/conftest2/conftest.py") and tests_made("tests/test_zz.py") and tests_made("x_test.py")
    assert not tests_made("tests/conftest.py") and not tests_made("tests/test_a.py")  # tracked
    assert not tests_made("node_modules/x/conftest.py") and not tests_made("build/lib/pkg/tests/test_x.py")
    assert not tests_made(".tox/x/conftest.py")  # pytest skips them
    assert shadows("helpers.py")  # before the namespace package helpers/
    assert shadows("lib.js") and shadows("config.js") and shadows("tools/nbdiff.node") and shadows("tools/nbdiff.js")
    assert shadows("cli") and not shadows("app")
    assert not shadows("pkg/package.json") and not shadows("package.json")  # no main: index.js still
    assert not shadows("config.json") and not shadows("other.js") and not shadows("lib.ts")
    assert not shadows("dist/api.js")  # beside a build's own dist/api/ (red team 24's TypeScript build)
    assert not shadows("node_modules/x/y.js")

    def shadows_dir(rel: str) -> bool:
        path, name = str(tmp_path / rel), rel.rsplit("/", 1)[-1]
        return guard.shadowing_dir(path, name, frozenset([top]), top, is_tracked)

    assert shadows_dir("src/node_modules") and not shadows_dir("node_modules") and not shadows_dir(".cache/x/node_modules")
    assert not shadows_dir("build/lambda/node_modules")  # a build's staging, nothing git tracks there
    assert not shadows_dir("node_modules/a/node_modules") and not shadows_dir("pkg/x.dist-info/..")
    for where in ("zz-1.0.dist-info", "src/zz-1.0.dist-info"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "entry_points.txt").write_text("[pytest11]\nzz = zzplug\n")
    assert shadows_dir("zz-1.0.dist-info") and not shadows_dir("src/zz-1.0.dist-info")
    elsewhere = tmp_path.parent / (tmp_path.name + "-norepo")
    elsewhere.mkdir()
    assert tracker(str(elsewhere))(str(elsewhere / "x")) is None  # no repository: no answer


def test_a_git_index_a_step_could_have_made_vouches_for_nothing(tmp_path: Path) -> None:
    """Red team 24's fixes, attacked: a step's own `frontend/.git` whose index lists its plant
    would make the plant look reviewed; the enclosing repository's index is read instead."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    front = tmp_path / "frontend"
    (front / "lib").mkdir(parents=True)
    (front / "lib/index.js").write_text("")
    (front / "lib.js").write_text("")
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "frontend/lib/index.js"], cwd=tmp_path, check=True)
    subprocess.run([*git, "init", "-q"], cwd=front, check=True)  # the step's
    subprocess.run([*git, "add", "lib.js"], cwd=front, check=True)
    made = str(front / ".git")
    believed = tracker(str(front))
    assert believed(str(front / "lib.js"))  # what trusting the step's index would say
    checked = tracker(str(front), lambda dotgit: dotgit != made)
    assert checked(str(front / "lib.js")) is False and checked(str(front / "lib/index.js")) is True


def test_red_team_25_s_ways_in_are_named_and_a_build_in_place_is_not(tmp_path: Path) -> None:
    """Red team 25: a `tests/__init__.py` (pytest imports the package), an `__init__.py` in a tracked
    namespace package, an `*.egg-info` at a top with no Python packaging (its entry points), a plain
    `x.so` before a namespace package `x/`, a split index (`core.splitIndex`: its entries' names lie
    in the shared index); `sed -f`, `awk -f`, `make -f`, `${PY:-python3}` in a git setting; and
    tsc's `src/routes.js` beside `src/routes/` of tracked `.ts` files is the build's, not a shadow."""
    import subprocess

    from sbox_shim.guard.tracked import tracker
    from sbox_shim.guard.watch import command_words

    top = str(tmp_path)
    files = ("tests/test_a.py", "ns/mod.py", "src/routes/index.ts", "src/routes.ts", "lib/index.js")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "core.splitIndex=true"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", *files], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    subprocess.run([*git, "update-index", "--split-index"], cwd=tmp_path, check=True)
    assert any(p.name.startswith("sharedindex.") for p in (tmp_path / ".git").iterdir())
    is_tracked = tracker(top)
    assert is_tracked(top + "/lib/index.js") and not is_tracked(top + "/lib.js")

    def shadows(rel: str) -> bool:
        return guard.shadowing_source(str(tmp_path / rel), rel.rsplit("/", 1)[-1], frozenset([top]), top, is_tracked)

    assert shadows("tests/__init__.py") and shadows("ns/__init__.py") and not shadows("fresh/__init__.py")
    assert shadows("lib.js")  # through the split index
    assert not shadows("src/routes.js")
    (tmp_path / "evil.egg-info").mkdir()
    (tmp_path / "evil.egg-info/entry_points.txt").write_text("[console_scripts]\nx = x:main\n")
    assert not guard.shadowing_dir(top + "/evil.egg-info", "evil.egg-info", frozenset([top]), top, is_tracked)
    (tmp_path / "evil.egg-info/entry_points.txt").write_text("[console_scripts]\nx = x:main\n[pytest11]\ne = e\n")
    assert guard.shadowing_dir(top + "/evil.egg-info", "evil.egg-info", frozenset([top]), top, is_tracked)
    assert guard.bytecode(top + "/ns.so", "ns.so", is_tracked) and not guard.bytecode(top + "/other.so", "other.so")
    assert not guard.bytecode(top + "/src.so", "src.so", is_tracked)  # src/ holds .ts only: a Go or C build's
    assert "conv.awk" in command_words('diff "x"', "textconv", "awk -f conv.awk")
    assert "red.sed" in command_words('filter "x"', "clean", "sed -f red.sed")
    assert "lint.mk" in command_words("alias", "lint", "!make -f lint.mk")
    assert "conv.py" in command_words('diff "x"', "textconv", "${PY:-python3} conv.py")
    assert command_words("alias", "t", "!make test") == [] and command_words("alias", "s", "!sed -n 1p x") == []


def test_red_team_28_s_modules_pytest_finds_first_are_named(tmp_path: Path) -> None:
    """Red team 28: in a directory pytest puts first on sys.path (collected, no `__init__.py`, a
    tracked Python file), a module named as a tracked top-level or `src/` module, a standard one
    or one installed in a venv at the top shadows it; elsewhere, or of another name, it does not."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    top = str(tmp_path)
    files = ("app.py", "src/lib/core.py", "tests/test_a.py", "pkgtests/__init__.py", "pkgtests/test_b.py",
             "build/x/test_c.py")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / ".venv/lib/python3.11/site-packages/fakepkg").mkdir(parents=True)
    (tmp_path / ".venv/lib/python3.11/site-packages/six.py").write_text("")
    (tmp_path / ".venv/lib/python3.11/site-packages/easy-install.pth").write_text("")
    (tmp_path / ".venv/pyvenv.cfg").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-f", *files], cwd=tmp_path, check=True)
    is_tracked = tracker(top)

    def shadows(rel: str) -> bool:
        return guard.shadowing_source(str(tmp_path / rel), rel.rsplit("/", 1)[-1], frozenset([top]), top, is_tracked)

    for rel in ("tests/app.py", "tests/lib.py", "tests/wave.py", "tests/fakepkg.py", "tests/six.py"):
        assert shadows(rel), rel
    for rel in ("tests/helper.py", "tests/easy.py", "pkgtests/app.py", "build/x/app.py", "docs/app.py"):
        assert not shadows(rel), rel
    assert guard.bytecode(top + "/tests/app.so", "app.so", is_tracked, top)
    assert not guard.bytecode(top + "/tests/helper.so", "helper.so", is_tracked, top)
    (tmp_path / "tests/app/").mkdir()
    (tmp_path / "tests/app/__init__.py").write_text("")
    assert guard.shadowing_package(top + "/tests/app", "app", 0, frozenset([top]), is_tracked, top)
    norepo = tmp_path.parent / (tmp_path.name + "-norepo")
    (norepo / "tests").mkdir(parents=True)
    (norepo / "tests/test_a.py").write_text("")
    (norepo / "other").mkdir()

    def shadows_here(rel: str) -> bool:
        return guard.shadowing_source(str(norepo / rel), rel.rsplit("/", 1)[-1], frozenset([str(norepo)]),
                                      str(norepo), tracker(str(norepo)))

    assert shadows_here("tests/wave.py") and not shadows_here("tests/app.py") and not shadows_here("other/wave.py")


def test_a_plugin_project_s_own_entries_vouch_for_their_modules_only(tmp_path: Path) -> None:
    """Red team 28's note: the packaging that declares `pytest11` vouches for the modules it
    names, not for another entry a step adds to the group."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    (tmp_path / "setup.py").write_text("setup(entry_points={'pytest11': ['p = pytest_p.plugin:main']})\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "setup.py"], cwd=tmp_path, check=True)
    egg = tmp_path / "pytest_p.egg-info"
    egg.mkdir()
    top, is_tracked = str(tmp_path), tracker(str(tmp_path))

    def moved(entries: str) -> bool:
        (egg / "entry_points.txt").write_text(entries)
        return guard.shadowing_dir(str(egg), egg.name, frozenset([top]), top, is_tracked)

    assert not moved("[pytest11]\np = pytest_p.plugin:main\n")
    assert not moved("[console_scripts]\nx = evil:main\n[pytest11]\np = pytest_p.plugin:main\n")
    assert moved("[pytest11]\np = pytest_p.plugin:main\ne = evil\n")
    assert moved("[pytest11]\np = pytest_p\n")  # the package, not the module the packaging names
    assert moved("[flake8.extension]\nX = pytest_p.plugin\n")  # a group the packaging does not declare


def test_red_team_29_s_ways_past_the_pytest_rule_are_named(tmp_path: Path) -> None:
    """Red team 29: a package below a test directory makes pytest's basedir the directory above; an
    `__init__.py` that is a directory, a link, or one the guard moves makes no package; a module
    tracked anywhere in the repository (`lib/`, `packages/foo/foo/`) counts; a pytest config below
    the top with pytest's section is named, one without is not."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    top = str(tmp_path)
    files = ("tests/unit/__init__.py", "tests/unit/test_a.py", "lib/app.py", "packages/foo/foo/__init__.py",
             "checks/test_b.py", "docs/conf.py")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", *files], cwd=tmp_path, check=True)
    site = tmp_path / ".venv/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (tmp_path / ".venv/pyvenv.cfg").write_text("")
    (site / "_foo.pth").write_text(f"{tmp_path / 'packages/foo'}\n")  # an editable install
    (tmp_path / "pytest.ini").write_text("[pytest]\npythonpath =\n    lib\n    gen\n")
    (tmp_path / "gen").mkdir()
    is_tracked = tracker(top)

    def shadows(rel: str) -> bool:
        guard._FIRST.clear()
        return guard.shadowing_source(str(tmp_path / rel), rel.rsplit("/", 1)[-1], frozenset([top]), top, is_tracked)

    assert shadows("tests/app.py") and shadows("tests/foo.py") and not shadows("tests/unit/app.py")
    assert shadows("gen/app.py") and shadows("gen/wave.py") and not shadows("gen/other.py")  # a `pythonpath` directory
    (tmp_path / "checks/__init__.py").mkdir()  # a directory: no package to pytest
    assert shadows("checks/app.py")
    (tmp_path / "checks/__init__.py").rmdir()
    (tmp_path / "checks/__init__.py").write_text("")  # untracked beside a tracked module: the guard moves it
    assert shadows("checks/app.py")
    assert not shadows("docs/other.py")
    (tmp_path / "tests/pytest.ini").write_text("")
    (tmp_path / "tests/tox.ini").write_text("[testenv]\n")
    (tmp_path / "tests/setup.cfg").write_text("[tool:pytest]\naddopts = -p x\n")
    assert shadows("tests/pytest.ini") and not shadows("tests/tox.ini") and shadows("tests/setup.cfg")
    (tmp_path / "pytest.ini").write_text("")
    assert not shadows("pytest.ini")  # the top's: the tool configs the guard watches
    (tmp_path / "tests/app").symlink_to(tmp_path / "packages/foo/foo")
    assert guard.module_link(top + "/tests/app", "app", is_tracked, top)
    assert not guard.module_link(top + "/tests/other", "other", is_tracked, top)


def test_red_team_31_s_builds_are_left_alone_and_its_configs_named(tmp_path: Path) -> None:
    """Red team 31: a tracked `src/pkg/utils.py` imports as `pkg.utils`, so a generated
    `tests/utils.py` shadows nothing; a scaffolded `newproj/` with its own `setup.py` and `tests/`
    shadows nothing at the top; pytest 9's `pytest.toml` below the top is its config."""
    import subprocess

    from sbox_shim.guard.tracked import tracker

    top = str(tmp_path)
    files = ("setup.py", "src/pkg/__init__.py", "src/pkg/utils.py", "tests/test_a.py", "tests/__init__.py")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", *files], cwd=tmp_path, check=True)
    for name in ("gen/test_gen.py", "gen/utils.py", "newproj/setup.py", "newproj/newproj/__init__.py",
                 "newproj/tests/__init__.py", "newproj/tests/test_n.py", "gen/pytest.toml", "gen/.pytest.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    is_tracked = tracker(top)

    def shadows(rel: str) -> bool:
        guard._FIRST.clear()
        guard._IMPORTABLE.clear()
        return guard.shadowing_source(str(tmp_path / rel), rel.rsplit("/", 1)[-1], frozenset([top]), top, is_tracked)

    assert not shadows("gen/utils.py") and shadows("gen/pkg.py") and not shadows("newproj/setup.py")
    assert not guard.shadowing_package(top + "/newproj/tests", "tests", 0, frozenset([top]), is_tracked, top)
    assert shadows("gen/pytest.toml") and shadows("gen/.pytest.toml")
