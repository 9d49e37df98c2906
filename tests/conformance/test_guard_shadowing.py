"""Red team 23 (every backend): source a step adds that Python or Node then runs in place of the
project's, and git settings whose words are no scripts. Each plant is quarantined, the host's
action afterwards runs nothing, and the same file made on the host runs (the control); an
ordinary write a common alias's words name is left alone."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.trust import trust

from .helpers import Runs
from .test_guard_repos import GIT_ENV, _programs_are_held
from .test_persistence_guard import git, husky_project


def _payload(marker: Path, then: str = "") -> str:
    return f"open({str(marker)!r}, 'w').write('ran')\n{then}"


def _plant(runs: Runs, root: Path, files: dict[str, str], env: dict[str, str] | None = None) -> str:
    """A step writes `files` (their text given on stdin, a tar of them); its stderr."""
    script = " && ".join(f"mkdir -p ./$(dirname {p}) && printf '%s' {_quoted(text)} > {p}" for p, text in files.items())
    result = runs.run(root, "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    return result.stderr


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _commit(root: Path) -> None:
    """What the project holds is reviewed and committed (the guard weighs a plant against it)."""
    git(root, "add", "-A")
    git(root, "commit", "-qm", "reviewed")


def _nothing_ran_then_the_control(root: Path, plant: dict[str, str], hosts: tuple[list[str], ...],
                                  marks: dict[str, Path]) -> None:
    """The host's `hosts` commands run no plant the guard moved; then `plant` made on the host (the
    control), and they run each."""
    for command in hosts:
        subprocess.run(command, cwd=root, env=GIT_ENV, capture_output=True, timeout=120)
    assert not any(m.exists() for m in marks.values()), [n for n, m in marks.items() if m.exists()]
    _write(root, plant)
    for command in hosts:
        subprocess.run(command, cwd=root, env=GIT_ENV, capture_output=True, timeout=120)
    assert all(m.exists() for m in marks.values()), [n for n, m in marks.items() if not m.exists()]


def _write(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_a_standard_module_at_the_top_that_python_m_imports_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """The global config's `textconv = python3 -m json.tool` (nbstripout's `python -m nbstripout`
    has the same shape): `-m` puts the worktree's top first on sys.path, and json.tool imports
    argparse, so a step's `argparse.py` there ran at the host's `git diff` (bwrap 3/3, docker 3/3)."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    config = tmp_path / "gitconfig"
    config.write_text(f'[diff "json"]\n\ttextconv = "{sys.executable}" -m json.tool\n')
    _write(root, {".gitattributes": "*.json diff=json\n", "data.json": '{"a": 1}\n'})
    git(root, "add", ".gitattributes", "data.json")
    git(root, "commit", "-qm", "data")
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(config))
    marker = tmp_path / "argparse-ran"
    plant = {"argparse.py": _payload(marker), "data.json": '{"a": 2}\n'}
    stderr = _plant(runs, root, plant, env=env)
    assert "quarantined argparse.py (created by the sandbox" in stderr, stderr
    diff = ["git", "diff"]
    host_env = dict(GIT_ENV, GIT_CONFIG_GLOBAL=str(config))
    subprocess.run(diff, cwd=root, env=host_env, capture_output=True, timeout=60)
    assert not marker.exists()
    _write(root, plant)  # the control, made on the host
    subprocess.run(diff, cwd=root, env=host_env, capture_output=True, timeout=60)
    assert marker.exists()


def test_a_file_node_requires_before_the_project_s_own_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """`require("./lib")` takes `lib.js` before `lib/index.js`, `config.js` before `config.json`,
    `tools/helpers.js` before `tools/helpers/index.js`: a step's new files ran at the host's
    `node .` and `git diff` (1/1 per backend), as `tools/nbdiff.node` did before `tools/nbdiff/`."""
    root = husky_project(tmp_path)
    marker = tmp_path / "node-ran"
    _write(root, {"package.json": '{"name": "app", "version": "1.0.0", "main": "index.js"}\n',
                  "index.js": "require('./lib'); require('./config');\n",
                  "lib/index.js": "module.exports = 1;\n", "config.json": "{}\n"})
    _commit(root)
    touch = f"require('fs').writeFileSync({str(marker)!r}, 'ran');\n"
    plant = {"lib.js": touch, "config.js": touch}
    stderr = _plant(runs, root, plant)
    for path in plant:
        assert f"quarantined {path} (created by the sandbox" in stderr, stderr
    _nothing_ran_then_the_control(root, {"lib.js": touch}, (["node", "."],), {"lib": marker})


def test_a_native_addon_before_a_directory_node_runs_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """`textconv = node tools/nbdiff` (whose package.json names `cli.js`): Node tries
    `tools/nbdiff.node` first, and a step's addon there ran at the host's `git diff` (6/6)."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    git(root, "config", "diff.csv.textconv", "node tools/nbdiff")
    _write(root, {"tools/nbdiff/package.json": '{"main": "cli.js"}\n', "tools/nbdiff/cli.js": "",
                  "probe.js": "console.log(require.resolve('./tools/nbdiff'));\n"})
    _commit(root)
    stderr = _plant(runs, root, {"tools/nbdiff.node": "not an addon\n"})
    assert "quarantined tools/nbdiff.node (created by the sandbox" in stderr, stderr
    assert not (root / "tools/nbdiff.node").exists()
    found = subprocess.run(["node", "probe.js"], cwd=root, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip().endswith("tools/nbdiff/cli.js"), found
    _write(root, {"tools/nbdiff.node": "not an addon\n"})  # the control: Node loads the file made on the host
    found = subprocess.run(["node", "probe.js"], cwd=root, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip().endswith("tools/nbdiff.node"), found


def test_test_modules_a_step_made_are_said(runs: Runs, tmp_path: Path) -> None:
    """`tests/conftest.py` and `tests/test_zz_cache.py` with a `tests/.gitignore` that ignores them
    and itself: `git status` shows nothing, and the host's `python3 -m pytest` ran them (red teams
    23 and 24, 1/1 per backend). A code generator writes new tests too (red team 26's
    openapi-generator run had its `test/test_store_api.py` moved), so one line names them, and
    nothing is moved; the control: pytest runs them, as the line warns."""
    root = husky_project(tmp_path)
    marker = tmp_path / "conftest-ran"
    _write(root, {"tests/test_a.py": "def test_a():\n    pass\n"})
    _commit(root)
    plant = {"tests/conftest.py": _payload(marker), "tests/test_zz_cache.py": "",
             "tests/.gitignore": "conftest.py\ntest_zz_cache.py\n.gitignore\n"}
    stderr = _plant(runs, root, plant)
    said = [line for line in stderr.splitlines() if "made test modules git does not track" in line]
    assert said and "tests/conftest.py" in said[0] and "tests/test_zz_cache.py" in said[0], stderr
    assert "quarantined" not in stderr and (root / "tests/conftest.py").exists(), stderr
    assert not git(root, "status", "--porcelain").stdout.strip()
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    subprocess.run(pytest, cwd=root, capture_output=True, timeout=120)
    assert marker.exists()
    again = _plant_by(runs, root, "true")  # said by the step that made them, once
    assert "made test modules" not in again, again


def test_python_tool_configs_a_step_writes_are_quarantined(runs: Runs, tmp_path: Path) -> None:
    """pylint's init-hook in a `.pylintrc` ran at a host's pre-commit hook running pylint (red team
    23); pytest.ini, .flake8, mypy.ini and .coveragerc load plugins the same way."""
    root = husky_project(tmp_path)
    names = (".pylintrc", "pylintrc", ".flake8", "pytest.ini", "mypy.ini", ".coveragerc")
    stderr = _plant(runs, root, {name: "[x]\n" for name in names})
    for name in names:
        assert f"quarantined {name} (created by the sandbox" in stderr, stderr


def test_words_of_a_command_a_wrapper_runs_no_script_from_are_not_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 23: the global alias `cleanup = !git branch --merged main | grep -v main | xargs -n 1
    git branch -d` and `!bash -c "git rebase origin/main"` made a formatter's edit of `main.py`
    quarantined and reverted. No word there is a script."""
    root = husky_project(tmp_path)
    config = tmp_path / "gitconfig"
    config.write_text("[alias]\n\tcleanup = \"!git branch --merged main | grep -v '\\\\*\\\\|main' | xargs -n 1 git "
                      "branch -d\"\n\tup = !bash -c \\\"git rebase origin/main\\\"\n")
    listed = subprocess.run(["git", "config", "--get-regexp", "alias"], cwd=root, capture_output=True, text=True,
                            env=dict(GIT_ENV, GIT_CONFIG_GLOBAL=str(config)), timeout=60)
    assert "xargs -n 1 git branch -d" in listed.stdout and 'bash -c "git rebase' in listed.stdout, listed
    _write(root, {"main.py": "print('hello')\n", "main.js": "1\n"})
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(config))
    for n in range(2):
        result = runs.run(root, "sh", "-c", f"echo '# {n}' >> main.py && echo '// {n}' >> main.js", env=env)
        assert result.returncode == 0 and "quarantined" not in result.stderr, result.stderr
    assert (root / "main.py").read_text().endswith("# 1\n")


def test_scripts_behind_runners_wrappers_and_pipes_are_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 24: reading only the simple commands that run an interpreter missed `timeout 30s
    python3 release.py` (a wrapper's value not a number) and `(python3 check.py)`, and with them
    `uv run x.py`, `cat x.sh | sh`, `sh -c 'python3 "$0"' x.py`: a step's edit of each ran at the
    host's git alias (bwrap 3/3, docker 3/3), where the word had been watched before."""
    _programs_are_held(runs, tmp_path, {"core.fsmonitor": "timeout 30s sh fsmon", "alias.chk": "!(python3 check.py)",
                                        "alias.u": "!uv run release.py", "alias.c": "!cat rel.sh | sh",
                                        "alias.p": "!sh -c 'python3 \"$0\"' pos.py"},
                       ("fsmon", "check.py", "release.py", "rel.sh", "pos.py"), existing=True)


def test_a_build_s_output_beside_its_own_output_is_left_alone(runs: Runs, tmp_path: Path) -> None:
    """Red team 24: an incremental TypeScript build (`src/api.ts` and `src/api/index.ts`) writes
    `dist/api.js` beside the `dist/api/` an earlier build made; once any file was added to `dist/`
    the guard moved `dist/api.js` ("Node requires it before the project's own") and the app broke.
    git tracks neither: nothing reviewed is shadowed."""
    root = husky_project(tmp_path)
    _write(root, {"src/api.ts": "export {}\n", "src/api/index.ts": "export {}\n", ".gitignore": "dist/\n"})
    _commit(root)
    build = "mkdir -p dist/api && echo 1 > dist/api/index.js && echo 1 > dist/api.js"
    assert "quarantined" not in _plant_by(runs, root, build)
    rebuild = "echo 2 > dist/api.js && echo 2 > dist/new.js"
    assert "quarantined" not in _plant_by(runs, root, rebuild)
    assert (root / "dist/api.js").read_text() == "2\n"


def _plant_by(runs: Runs, root: Path, script: str) -> str:
    result = runs.run(root, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stderr


# what yarn classic does with the `.yarnrc`'s `yarn-path`: runs that release (a stand-in's last line)
YARN_PATH_RUN = "exec node \"$(sed -n 's/^yarn-path \"\\(.*\\)\"/\\1/p' .yarnrc)\" \"$@\"\n"


def _stand_in(tmp_path: Path, tool: str, script: str) -> dict[str, str]:
    """The environment with a stand-in `tool` (a shell `script`) first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / tool).write_text(script)
    (bindir / tool).chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")


def _left_alone(runs: Runs, tmp_path: Path, files: dict[str, str], build: str, kept: tuple[str, ...]) -> None:
    """A reviewed, committed project with `files`; a step runs `build` in it: nothing is moved, and
    each of `kept` is still there."""
    root = husky_project(tmp_path)
    _write(root, files)
    _commit(root)
    stderr = _plant_by(runs, root, build)
    assert "quarantined" not in stderr, stderr
    assert all((root / path).exists() for path in kept), kept


def test_node_takes_a_package_json_or_a_node_modules_a_step_hid(runs: Runs, tmp_path: Path) -> None:
    """Red team 24: `lib/package.json` ({"main": "evil.js"}) beside a reviewed `lib/index.js`, and
    `src/node_modules/dep/` before the installed `node_modules/dep`, each hidden by its own
    `.gitignore`: the host's `node .` ran both (bwrap 3/3, docker 3/3)."""
    root = husky_project(tmp_path)
    lib, dep = tmp_path / "lib-ran", tmp_path / "dep-ran"
    _write(root, {"package.json": '{"name": "app", "version": "1.0.0", "main": "src/app.js"}\n',
                  "src/app.js": "require('../lib'); require('dep');\n", "lib/index.js": "module.exports = 1;\n",
                  ".gitignore": "node_modules/\n", "node_modules/dep/index.js": "module.exports = 1;\n"})
    _commit(root)
    plant = {"lib/package.json": '{"main": "evil.js"}\n',
             "lib/evil.js": f"require('fs').writeFileSync({str(lib)!r}, 'ran');\n",
             "lib/.gitignore": "package.json\nevil.js\n.gitignore\n",
             "src/node_modules/dep/index.js": f"require('fs').writeFileSync({str(dep)!r}, 'ran');\n"}
    stderr = _plant(runs, root, plant)
    assert "quarantined lib/package.json (created by the sandbox" in stderr, stderr
    assert "quarantined src/node_modules (created by the sandbox" in stderr, stderr
    assert not git(root, "status", "--porcelain").stdout.strip()
    subprocess.run(["node", "."], cwd=root, capture_output=True, timeout=60)
    assert not lib.exists() and not dep.exists()
    _write(root, plant)  # the control, made on the host
    subprocess.run(["node", "."], cwd=root, capture_output=True, timeout=60)
    assert lib.exists() and dep.exists()


def test_python_takes_a_test_module_a_plugin_or_a_probed_module_a_step_hid(runs: Runs, tmp_path: Path) -> None:
    """Red team 24: a hidden `zz-1.0.dist-info` naming a pytest
    plugin ran at the host's `python3 -m pytest`; an `org/` package (which `copy` tries to import)
    and a `helpers.py` before the namespace package `helpers/` at the host's `python3 app.py`."""
    root = husky_project(tmp_path)
    marks = {n: tmp_path / f"{n}-ran" for n in ("plugin", "org", "helpers")}
    _write(root, {"app.py": "import copy\nfrom helpers import fmt\n", "helpers/fmt.py": "",
                  "tests/test_a.py": "def test_a():\n    pass\n"})
    _commit(root)
    plant = {"zz-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: zz\nVersion: 1.0\n",
             "zz-1.0.dist-info/entry_points.txt": "[pytest11]\nzz = zzplug\n",
             "zz-1.0.dist-info/.gitignore": "*\n", "zzplug/__init__.py": _payload(marks["plugin"]),
             "zzplug/.gitignore": "*\n",
             "org/__init__.py": _payload(marks["org"]), "org/.gitignore": "*\n",
             "helpers.py": _payload(marks["helpers"], "from importlib import import_module as i\n")}
    stderr = _plant(runs, root, plant)
    for path in ("zz-1.0.dist-info", "org", "helpers.py"):
        assert f"quarantined {path} (created by the sandbox" in stderr, stderr
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    _nothing_ran_then_the_control(root, plant, (pytest, [sys.executable, "app.py"]), marks)


def test_a_git_index_the_step_made_vouches_for_nothing(runs: Runs, tmp_path: Path) -> None:
    """The fixes above, attacked: in a project below its repository's top (`mono/frontend`), a step
    made `frontend/.git` whose index lists its `lib.js`, to pass it off as reviewed, and hid it
    from the repository above with a `.gitignore`. The enclosing repository's index is read."""
    mono = tmp_path / "mono"
    mono.mkdir()
    git(mono, "init", "-q")
    root = husky_project(mono)  # mono/project, a repository of its own until the step's .git is moved
    subprocess.run(["rm", "-rf", str(root / ".git")], check=True)
    marker = tmp_path / "vouched-ran"
    _write(root, {"package.json": '{"name": "app", "version": "1.0.0", "main": "index.js"}\n',
                  "index.js": "require('./lib');\n", "lib/index.js": "module.exports = 1;\n"})
    git(mono, "add", "-A")
    git(mono, "commit", "-qm", "reviewed")
    touch = f"require('fs').writeFileSync({str(marker)!r}, 'ran');\n"
    step = (f"printf '%s' {_quoted(touch)} > lib.js && printf 'lib.js\\n.gitignore\\n' > .gitignore && "
            "git init -q . && git add -f lib.js")
    stderr = _plant_by(runs, root, step)
    assert "quarantined lib.js (created by the sandbox" in stderr, stderr
    assert "quarantined .git" in stderr, stderr
    _nothing_ran_then_the_control(root, {"lib.js": touch}, (["node", "."],), {"lib": marker})


def test_a_dependency_s_bin_named_as_a_system_command_is_said(runs: Runs, tmp_path: Path) -> None:
    """Red team 23: a `file:` dependency's `"bin": {"git": "git.js"}` lands in node_modules/.bin
    even under --ignore-scripts, and a shell with node_modules/.bin on PATH (direnv's `layout
    node`) ran it at the next `git status`, sbox silent. Now one line names it; the control: the
    same PATH runs the dependency's `git`."""
    root = husky_project(tmp_path)
    marker = tmp_path / "bin-ran"
    _write(root, {"package.json": '{"name": "app", "version": "1.0.0"}\n'})
    _commit(root)
    step = ("mkdir -p node_modules/dep node_modules/.bin && "
            f"printf '#!/bin/sh\\ntouch {marker}\\n' > node_modules/dep/git.js && chmod +x node_modules/dep/git.js && "
            "ln -s ../dep/git.js node_modules/.bin/git && ln -s ../dep/git.js node_modules/.bin/not-a-system-command")
    stderr = _plant_by(runs, root, step)
    assert "sbox: node_modules/.bin now holds git, named as your system's commands" in stderr, stderr
    again = _plant_by(runs, root, "true")  # said once: the step that put it there
    assert "node_modules/.bin now holds" not in again, again
    path = f"{root / 'node_modules/.bin'}:{os.environ['PATH']}"
    subprocess.run(["git", "status"], cwd=root, env=dict(GIT_ENV, PATH=path), capture_output=True, timeout=60)
    assert marker.exists()  # the control: what the line warns of


def test_red_team_25_s_ways_in_are_held(runs: Runs, tmp_path: Path) -> None:
    """Red team 25, each hidden by its own `.gitignore` (bwrap 2/2, docker 1/1): a `tests/__init__.py`
    and an `evil.egg-info` naming a pytest plugin ran at the host's `python3 -m pytest`; under
    `core.splitIndex` (the index's names in `sharedindex.*`) a `src/lib.js` before the tracked
    `src/lib/` ran at `node .`; a textconv's `awk -f conv.awk` rewritten ran at `git diff`."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    git(root, "config", "core.splitIndex", "true")
    git(root, "config", "diff.txt.textconv", "awk -f conv.awk")
    marks = {n: tmp_path / f"{n}-ran" for n in ("init", "egg", "lib", "awk")}
    _write(root, {"package.json": '{"name": "app", "version": "1.0.0", "main": "src/app.js"}\n',
                  "src/app.js": "require('./lib');\n", "src/lib/index.js": "module.exports = 1;\n",
                  "tests/test_a.py": "def test_a():\n    pass\n", "conv.awk": "{ print }\n",
                  ".gitattributes": "*.txt diff=txt\n", "data.txt": "a\n"})
    _commit(root)
    git(root, "update-index", "--split-index")
    plant = {"tests/__init__.py": _payload(marks["init"]), "tests/.gitignore": "__init__.py\n.gitignore\n",
             "evil.egg-info/PKG-INFO": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
             "evil.egg-info/entry_points.txt": "[pytest11]\nevilplug = evilplug\n", "evil.egg-info/.gitignore": "*\n",
             "evilplug/__init__.py": _payload(marks["egg"]), "evilplug/.gitignore": "*\n",
             "src/lib.js": f"require('fs').writeFileSync({str(marks['lib'])!r}, 'ran');\n",
             "src/.gitignore": "lib.js\n.gitignore\n",
             "conv.awk": f'BEGIN {{ system("touch {marks["awk"]}") }}\n{{ print }}\n', "data.txt": "b\n"}
    stderr = _plant(runs, root, plant)
    for path in ("tests/__init__.py", "evil.egg-info", "src/lib.js", "conv.awk"):
        assert f"quarantined {path} (" in stderr, stderr
    hosts = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], ["node", "."], ["git", "diff"])
    _nothing_ran_then_the_control(root, plant, hosts, marks)


def test_typescript_compiled_in_place_is_left_alone(runs: Runs, tmp_path: Path) -> None:
    """Red team 25: tsc without an outDir writes `src/routes.js` beside `src/routes/`, whose tracked
    files are `.ts`: Node loads nothing there that git tracks, so the build's file is its own."""
    root = husky_project(tmp_path)
    _write(root, {"src/routes.ts": "export {}\n", "src/routes/index.ts": "export {}\n", "src/app.ts": "export {}\n"})
    _commit(root)
    build = "for f in routes routes/index app; do echo 'exports.x = 1;' > src/$f.js; done"
    assert "quarantined" not in _plant_by(runs, root, build)
    assert (root / "src/routes.js").exists()


def test_red_team_26_s_ways_in_are_held(runs: Runs, tmp_path: Path) -> None:
    """Red team 26 (bwrap 2/2, docker 1/1): in a submodule, whose own index tracks `config.json`,
    a hidden `config.js` ran at the host's `node .` (only the project's index had been read); in a
    Python project whose `.gitignore` already ignores `*.egg-info/` and `local_settings.py`, an
    egg-info naming a pytest plugin ran at `python3 -m pytest`; a top-level `package.json` whose
    `main` names a hidden file ran at `node .` in a project with a tracked `index.js`."""
    root = husky_project(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q")
    _write(lib, {"config.json": "{}\n"})
    _commit(lib)
    marks = {n: tmp_path / f"{n}-ran" for n in ("sub", "egg", "main")}
    _write(root, {"index.js": "require('./vendor/lib/config');\n", "tests/test_a.py": "def test_a():\n    pass\n",
                  "pyproject.toml": "[project]\nname = 'p'\nversion = '1'\n",
                  ".gitignore": "*.egg-info/\nlocal_settings.py\n.cache/\n"})
    subprocess.run(["git", "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib"],
                   cwd=root, env=GIT_ENV, check=True, capture_output=True, timeout=60)
    _commit(root)
    plant = {"vendor/lib/config.js": f"require('fs').writeFileSync({str(marks['sub'])!r}, 'ran');\n",
             "vendor/lib/.gitignore": "*\n",
             "p.egg-info/PKG-INFO": "Metadata-Version: 2.1\nName: p\nVersion: 1\n",
             "p.egg-info/entry_points.txt": "[pytest11]\np_dev = local_settings\n",
             "local_settings.py": _payload(marks["egg"]),
             "package.json": '{"main": ".cache/x.js"}\n',
             ".cache/x.js": f"require('fs').writeFileSync({str(marks['main'])!r}, 'ran'); require('../index.js');\n"}
    stderr = _plant(runs, root, {**plant, ".gitignore": "*.egg-info/\nlocal_settings.py\n.cache/\n/package.json\n"})
    for path in ("vendor/lib/config.js", "p.egg-info", "package.json"):
        assert f"quarantined {path} (" in stderr, stderr
    hosts = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], ["node", "."])
    _nothing_ran_then_the_control(root, plant, hosts, marks)


def test_red_team_26_s_builds_are_left_alone(runs: Runs, tmp_path: Path) -> None:
    """Red team 26's false positives: protobuf output into a package kept by a `.gitkeep`
    (`app/gen/__init__.py`), tsc without an outDir beside a JSON import (`src/config.js` from the
    tracked `src/config.ts`, beside `src/config.json`), a Lambda's `pip install --target .`
    (`x-1.0.dist-info` naming scripts only), ncc's `dist/package.json` `{"type": "module"}`."""
    files = {"app/gen/.gitkeep": "", "app/gen/.gitignore": "*\n!.gitkeep\n!.gitignore\n",
             "src/config.ts": "export {}\n", "src/config.json": "{}\n", "dist/index.js": "", "app/__init__.py": ""}
    build = ("echo > app/gen/__init__.py && echo > app/gen/x_pb2.py && echo 'exports.x = 1;' > src/config.js && "
             "mkdir -p x-1.0.dist-info && printf '[console_scripts]\\nx = x:main\\n' > x-1.0.dist-info/entry_points.txt && "
             "echo '{\"type\": \"module\"}' > dist/package.json")
    _left_alone(runs, tmp_path, files, build, ("app/gen/__init__.py", "dist/package.json"))


def test_red_team_27_s_builds_are_left_alone(runs: Runs, tmp_path: Path) -> None:
    """Red team 27's false positives: a tracked Django app `profile/` (a standard module's name)
    whose `__init__.py` a formatter rewrote was moved whole, the tracked app deleted; `go build
    -buildmode=plugin` into `plugins/greeter.so` beside the Go package `plugins/greeter/`; a Lambda's
    staging `build/lambda/node_modules`; a cross-compiled Mach-O `cli` beside a tracked `cli.js`;
    a pytest plugin's own `setup.py egg_info`, whose setup.py declares the `pytest11` group."""
    files = {"profile/__init__.py": "x=1\n", "profile/models.py": "", "manage.py": "",
             "plugins/greeter/greeter.go": "package main\n", "index.js": "", "cli.js": "",
             "setup.py": "setup(entry_points={'pytest11': ['myplugin = pytest_myplugin']})\n", "pytest_myplugin.py": ""}
    build = ("mkdir -p .ruff_cache2 profile/migrations && sed -i 's/=/ = /' profile/__init__.py && "
             "printf '\\177ELF' > plugins/greeter.so && mkdir -p build/lambda/node_modules/dep && "
             "echo > build/lambda/node_modules/dep/index.js && cp index.js build/lambda/ && "
             "printf '\\317\\372\\355\\376 macho' > cli && mkdir -p pytest_myplugin.egg-info && "
             "printf '[pytest11]\\nmyplugin = pytest_myplugin\\n' > pytest_myplugin.egg-info/entry_points.txt")
    _left_alone(runs, tmp_path, files, build, ("profile/models.py", "cli"))


def test_modules_pytest_s_own_config_collects_are_said(runs: Runs, tmp_path: Path) -> None:
    """Red team 27: with pytest-django's `python_files = tests.py test_*.py` (or `--doctest-modules`)
    in the tracked pytest.ini, a hidden `polls/tests.py` ran at the host's `python3 -m pytest`, no
    line said (bwrap 1/1, docker 1/1). Every module a step makes where pytest collects is said then."""
    root = husky_project(tmp_path)
    marker = tmp_path / "tests-py-ran"
    _write(root, {"pytest.ini": "[pytest]\npython_files = tests.py test_*.py\n", "polls/models.py": ""})
    _commit(root)
    stderr = _plant(runs, root, {"polls/tests.py": _payload(marker), "polls/.gitignore": "tests.py\n.gitignore\n"})
    assert "made test modules git does not track" in stderr and "polls/tests.py" in stderr, stderr
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, capture_output=True,
                   timeout=120)
    assert marker.exists()  # the control: pytest runs it, as the line warns


def test_a_module_pytest_finds_first_in_a_test_directory_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 28: pytest's default import mode puts a test directory without an `__init__.py`
    first on `sys.path`, so a hidden `tests/app.py` ran in place of the top's reviewed `app.py` at
    the host's `python3 -m pytest` (bwrap 1/1). The same for a package named as one of the
    project's (`tests/helpers/`), a standard module (`tests/wave.py`), and a package installed in
    the project's venv (`tests/fakepkg.py`); a test helper of another name is left alone."""
    root = husky_project(tmp_path)
    site = root / ".venv/lib/python3/site-packages"
    marks = {n: tmp_path / f"{n}-ran" for n in ("app", "helpers", "wave", "fakepkg")}
    _write(root, {"app.py": "X = 1\n", "helpers/__init__.py": "", "helpers/fmt.py": "",
                  "tests/test_app.py": "import app, wave, fakepkg\nfrom helpers import fmt\n\n"
                                       "def test_a():\n    assert app.X == 1\n",
                  ".gitignore": ".venv/\n"})
    _write(site, {"fakepkg/__init__.py": ""})
    (root / ".venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    _commit(root)
    plant = {"tests/app.py": _payload(marks["app"]), "tests/helpers/__init__.py": _payload(marks["helpers"]),
             "tests/helpers/fmt.py": "", "tests/wave.py": _payload(marks["wave"]),
             "tests/fakepkg.py": _payload(marks["fakepkg"]), "tests/util_for_tests.py": "",
             "tests/.gitignore": "*\n"}
    stderr = _plant(runs, root, plant)
    for path in ("tests/app.py", "tests/helpers", "tests/wave.py", "tests/fakepkg.py"):
        assert f"quarantined {path} (created by the sandbox" in stderr, stderr
    assert (root / "tests/util_for_tests.py").exists(), stderr
    assert not git(root, "status", "--porcelain").stdout.strip()
    pytest = ["env", f"PYTHONPATH={site}", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    _nothing_ran_then_the_control(root, plant, (pytest,), marks)


def test_a_plugin_project_s_egg_info_naming_another_module_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 28's note: a pytest plugin's own egg-info is left alone when its tracked setup.py
    declares the `pytest11` group (red team 27), but the group alone vouched for every entry: a
    step's `pytest_myplugin.egg-info` naming a hidden `evilmod` too ran it at the host's
    `python3 -m pytest`. Each entry's module must be one the packaging names."""
    root = husky_project(tmp_path)
    marker = tmp_path / "evilmod-ran"
    _write(root, {"setup.py": "setup(entry_points={'pytest11': ['myplugin = pytest_myplugin']})\n",
                  "pytest_myplugin.py": "", "tests/test_a.py": "def test_a():\n    pass\n",
                  ".gitignore": "*.egg-info/\n"})
    _commit(root)
    plant = {"pytest_myplugin.egg-info/PKG-INFO": "Metadata-Version: 2.1\nName: pytest-myplugin\nVersion: 1\n",
             "pytest_myplugin.egg-info/entry_points.txt": "[pytest11]\nmyplugin = pytest_myplugin\nevil = evilmod\n",
             "evilmod.py": _payload(marker)}
    stderr = _plant(runs, root, {**plant, ".gitignore": "*.egg-info/\nevilmod.py\n"})
    assert "quarantined pytest_myplugin.egg-info (" in stderr, stderr
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    _nothing_ran_then_the_control(root, plant, (pytest,), {"evilmod": marker})


PYTEST_FIRST = {  # red team 29, on red team 28's fix: (the reviewed files, the step, the plant left to run, pytest's args)
    # a `tests/__init__.py` the step made, which the guard moved: `tests/app.py` had been judged in a package
    "init moved": ({}, "touch tests/__init__.py && echo '{payload}' > tests/app.py", ["tests"]),
    # a directory named `__init__.py`: pytest wants a file
    "init a directory": ({}, "mkdir tests/__init__.py && echo '{payload}' > tests/app.py", ["tests"]),
    # `tests/unit/` a package, `tests/` not: pytest's basedir for `tests/unit/test_app.py` is `tests/`
    "basedir above": ({"tests/test_app.py": None, "tests/unit/__init__.py": "", "tests/unit/test_app.py": "import app\n"},
                      "echo '{payload}' > tests/app.py", ["tests"]),
    # a test directory the step made, collected before `tests/`
    "new test directory": ({}, "mkdir aaa && echo 'def test_ok(): pass' > aaa/test_ok.py && echo '{payload}' > aaa/app.py",
                           []),
    # a link to a directory, imported as the package `app`
    "link to a package": ({}, "mkdir -p build/p && echo '{payload}' > build/p/__init__.py && ln -s ../build/p tests/app",
                          ["tests"]),
    # the reviewed module in `lib/`, which the tracked `pythonpath = lib` reaches
    "pythonpath": ({"app.py": None, "lib/app.py": "", "pytest.ini": "[pytest]\npythonpath = lib\n"},
                   "echo '{payload}' > tests/app.py", ["tests"]),
    # a pytest.ini below the top: `pytest tests/` takes it over the top's pyproject.toml, `-p` and all
    "config below the top": ({"pyproject.toml": "[tool.pytest.ini_options]\n"},
                             "printf '[pytest]\\npythonpath = .\\naddopts = -p tplug\\n' > tests/pytest.ini && "
                             "echo '{payload}' > tests/tplug.py", ["tests"]),
    # red team 31: pytest 9's own `pytest.toml`, below the top
    "pytest.toml below the top": ({"pyproject.toml": "[tool.pytest.ini_options]\n"},
                                  "printf '[pytest]\\npythonpath = [\".\"]\\naddopts = [\"-p\", \"tplug\"]\\n' "
                                  "> tests/pytest.toml && echo '{payload}' > tests/tplug.py", ["tests"]),
    # red team 31: a `pythonpath` directory kept by a `.gitkeep`, no tracked module in it
    "pythonpath kept empty": ({"pytest.ini": "[pytest]\npythonpath = gen\n", "gen/.gitkeep": ""},
                              "echo '{payload}' > gen/app.py", ["tests"]),
    # red team 32: a tracked conftest puts `lib/` on sys.path; `tests/` still comes first
    "conftest sys.path": ({"conftest.py": "import os, sys\nsys.path.insert(0, os.path.join(os.path.dirname("
                                          "__file__), 'lib'))\n", "lib/mylib.py": "",
                           "tests/test_app.py": "import mylib\n\ndef test_a():\n    pass\n"},
                          "echo '{payload}' > tests/mylib.py", ["tests"]),
}


def test_red_team_29_s_ways_past_the_pytest_rule_are_held(runs: Runs, tmp_path: Path) -> None:
    """Red team 29 (both backends, each 1/1 with its control): ways to have pytest import a step's
    module in place of the reviewed `app.py` that red team 28's fix missed. Each plant, hidden by
    the test directory's `.gitignore`, is quarantined (what makes it run), `python3 -m pytest`
    runs nothing, and the same step run on the host makes it run."""
    failed = []
    for case, (files, step, args) in PYTEST_FIRST.items():
        base = tmp_path / case.replace(" ", "-")
        base.mkdir()
        root = husky_project(base)
        marker = base / "ran"
        reviewed = {"app.py": "X = 1\n", "tests/test_app.py": "import app\n\ndef test_a():\n    pass\n", **files}
        _write(root, {p: text for p, text in reviewed.items() if text is not None})
        _commit(root)
        script = step.format(payload=f'open("{marker}", "w").write("ran")')
        hide = " && for d in tests aaa gen; do [ -d $d ] && printf '*\\n' > $d/.gitignore; done; true"
        stderr = _plant_by(runs, root, script + hide)
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        subprocess.run(pytest, cwd=root, env=GIT_ENV, capture_output=True, timeout=120)
        if "quarantined" not in stderr or marker.exists():
            failed.append((case, stderr))
        # the control: the same step on the host, less the `tests/__init__.py` file the guard moves
        control = f"rm -rf build aaa tests/__init__.py && {script} && {{ [ ! -f tests/__init__.py ] || rm tests/__init__.py; }}"
        subprocess.run(["sh", "-c", control], cwd=root, check=True)
        subprocess.run(pytest, cwd=root, env=GIT_ENV, capture_output=True, timeout=120)
        assert marker.exists(), case
    assert not failed, " | ".join(c for c, _ in failed)


def test_a_yarn_release_a_step_rewrote_is_not_run(runs: Runs, tmp_path: Path) -> None:
    """Red team 30 (bwrap and docker, yarn 1.22.22 and 4.x): the trusted `.yarnrc` names
    `.yarn/releases/yarn-*.cjs`, which any step that writes the project could rewrite; the next
    `yarn install` ran it in yarn's download phase, the user's `~/.npmrc` token and `NPM_TOKEN`
    with it. Red team 31: the same through a `yarn-path` wrapper that requires the release. The
    release is now an input the user trusts (`sbox trust` shows its digest), and so is every file
    of `.yarn/releases` and `.yarn/plugins`: a rewritten one stops the install before anything
    runs. The yarn here is a stand-in that does what yarn classic does with `yarn-path` (runs that
    file with node); the control runs it."""
    env = _stand_in(tmp_path, "yarn", "#!/bin/sh\n" + YARN_PATH_RUN)
    release = ".yarn/releases/yarn-1.22.22.cjs"
    for layout, named in (("direct", release), ("wrapper", "scripts/run-yarn.js")):
        base = tmp_path / layout
        base.mkdir()
        root = husky_project(base)
        _write(root, {".yarnrc": f'yarn-path "{named}"\n', release: "console.log('yarn 1.22.22');\n",
                      "scripts/run-yarn.js": f"require('../{release}');\n",
                      "package.json": '{"name": "p", "version": "1.0.0"}\n'})
        _commit(root)
        untrusted = runs.run(root, "yarn", "install", env=env)
        assert untrusted.returncode == 2 and f"{root / release}: yarn release or plugin" in untrusted.stderr, \
            untrusted.stderr
        trust(root, env=env)  # `sbox trust` in the project: the release with the config
        marker = base / "release-ran"
        _plant_by(runs, root, f"printf '%s' \"require('fs').writeFileSync('{marker}', 'ran');\" >> {release}")
        result = runs.run(root, "yarn", "install", env=env)
        assert result.returncode == 2 and "changed since you trusted it" in result.stderr, (layout, result.stderr)
        assert not marker.exists(), layout
        subprocess.run(["yarn"], cwd=root, env=env, capture_output=True, timeout=60)
        assert marker.exists(), layout  # the control: yarn runs the release it is given


def test_red_team_31_s_builds_are_left_alone(runs: Runs, tmp_path: Path) -> None:
    """Red team 31's false positives of red team 29's fix: a generated `tests/utils.py` for a
    project whose `src/pkg/utils.py` imports as `pkg.utils` (pytest then failed to collect), and a
    scaffolded `newproj/` with its own `setup.py` and `tests/` package (both were moved)."""
    files = {"setup.py": "", "src/pkg/__init__.py": "", "src/pkg/utils.py": "",
             "tests/test_a.py": "def test_a():\n    pass\n"}
    build = ("printf 'def mk():\\n    return 1\\n' > tests/utils.py && "
             "printf 'from utils import mk\\n\\ndef test_gen():\\n    assert mk() == 1\\n' > tests/test_gen.py && "
             "mkdir -p newproj/newproj newproj/tests && touch newproj/setup.py newproj/newproj/__init__.py "
             "newproj/tests/__init__.py && printf 'def test_n():\\n    pass\\n' > newproj/tests/test_n.py")
    _left_alone(runs, tmp_path, files, build, ("tests/utils.py", "newproj/tests/__init__.py"))


def test_a_yarn_release_swapped_after_the_check_is_not_what_runs(runs: Runs, tmp_path: Path) -> None:
    """Red team 31 (bwrap 4/12, docker 4/8): another sandbox writing the same project swapped the
    trusted release back and forth, and an install whose check saw the good one ran the bad one,
    with the token. The download phase now reads each file the gate checked as the bytes it
    checked. Made deterministic here: the step's yarn says it has started, the release is rewritten
    then (as the racing sandbox would), and yarn reads it after."""
    env = _stand_in(tmp_path, "yarn", "#!/bin/sh\nmkdir -p node_modules && touch node_modules/.started\n"
                    "while [ ! -e node_modules/.rewritten ]; do sleep 0.05; done\n" + YARN_PATH_RUN)
    root = husky_project(tmp_path)
    release = ".yarn/releases/yarn-1.22.22.cjs"
    _write(root, {".yarnrc": f'yarn-path "{release}"\n', release: "console.log('yarn 1.22.22');\n",
                  "package.json": '{"name": "p", "version": "1.0.0"}\n', ".gitignore": "node_modules/\n"})
    _commit(root)
    trust(root, env=env)
    marker = root / "node_modules/.swapped-ran"  # where the phase can write
    proc = runs.start(root, "yarn", "install", env=env)
    for _ in range(1200):
        if (root / "node_modules/.started").exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert (root / "node_modules/.started").exists(), proc.communicate()
    with open(root / release, "a") as f:  # the racing sandbox's swap, after the check
        f.write(f"require('fs').writeFileSync('{marker}', 'ran');\n")
    (root / "node_modules/.rewritten").touch()
    out, err = proc.communicate(timeout=180)
    assert "yarn 1.22.22" in out + err and not marker.exists(), (out, err)
    subprocess.run(["yarn"], cwd=root, env=env, capture_output=True, timeout=60)
    assert marker.exists()  # the control: yarn runs the release the file holds


def test_a_pnpmfile_the_workspace_file_names_is_trusted_first(runs: Runs, tmp_path: Path) -> None:
    """Red team 32 (bwrap and docker): pnpm 10 reads its settings from `pnpm-workspace.yaml`, whose
    `pnpmfile:` a step pointed at its own hooks; the next `pnpm install` loaded them in the
    download phase, with the token. The workspace file and the pnpmfiles it or a project `.npmrc`
    names are trust inputs now. The pnpm here is a stand-in that loads the workspace file's
    pnpmfile as pnpm does (there is no pnpm on the machine); the control runs it."""
    env = _stand_in(tmp_path, "pnpm", "#!/bin/sh\nf=$(sed -n 's/^pnpmfile: *//p' pnpm-workspace.yaml)\n"
                    "[ -z \"$f\" ] || exec node -e \"require(require('path').resolve('$f'))\"\n")
    root = husky_project(tmp_path)
    _write(root, {"pnpm-workspace.yaml": 'packages:\n  - "."\n', "package.json": '{"name": "p", "version": "1.0.0"}\n'})
    _commit(root)
    trust(root, env=env)
    marker = tmp_path / "pnpmfile-ran"
    plant = {"tools/hooks.cjs": f"require('fs').writeFileSync('{marker}', 'ran');\n",
             "pnpm-workspace.yaml": 'packages:\n  - "."\npnpmfile: tools/hooks.cjs\n'}
    _plant(runs, root, plant)
    result = runs.run(root, "pnpm", "install", env=env)
    assert result.returncode == 2 and "pnpm-workspace.yaml: pnpm project config changed" in result.stderr, result.stderr
    assert f"{root / 'tools/hooks.cjs'}: a pnpmfile" in result.stderr, result.stderr
    assert not marker.exists()
    subprocess.run(["pnpm", "install"], cwd=root, env=env, capture_output=True, timeout=60)
    assert marker.exists()  # the control: pnpm loads the hooks the workspace file names
