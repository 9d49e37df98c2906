"""Red team 23 (every backend): source a step adds that Python or Node then runs in place of the
project's, and git settings whose words are no scripts. Each plant is quarantined, the host's
action afterwards runs nothing, and the same file made on the host runs (the control); an
ordinary write a common alias's words name is left alone."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import Runs
from .test_guard_repos import GIT_ENV
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
    touch = f"require('fs').writeFileSync({str(marker)!r}, 'ran');\n"
    plant = {"lib.js": touch, "config.js": touch}
    stderr = _plant(runs, root, plant)
    for path in plant:
        assert f"quarantined {path} (created by the sandbox" in stderr, stderr
    subprocess.run(["node", "."], cwd=root, capture_output=True, timeout=60)
    assert not marker.exists()
    _write(root, {"lib.js": touch})  # the control, made on the host
    subprocess.run(["node", "."], cwd=root, capture_output=True, timeout=60)
    assert marker.exists()


def test_a_native_addon_before_a_directory_node_runs_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """`textconv = node tools/nbdiff` (whose package.json names `cli.js`): Node tries
    `tools/nbdiff.node` first, and a step's addon there ran at the host's `git diff` (6/6)."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    git(root, "config", "diff.csv.textconv", "node tools/nbdiff")
    _write(root, {"tools/nbdiff/package.json": '{"main": "cli.js"}\n', "tools/nbdiff/cli.js": "",
                  "probe.js": "console.log(require.resolve('./tools/nbdiff'));\n"})
    stderr = _plant(runs, root, {"tools/nbdiff.node": "not an addon\n"})
    assert "quarantined tools/nbdiff.node (created by the sandbox" in stderr, stderr
    assert not (root / "tools/nbdiff.node").exists()
    found = subprocess.run(["node", "probe.js"], cwd=root, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip().endswith("tools/nbdiff/cli.js"), found
    _write(root, {"tools/nbdiff.node": "not an addon\n"})  # the control: Node loads the file made on the host
    found = subprocess.run(["node", "probe.js"], cwd=root, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip().endswith("tools/nbdiff.node"), found


def test_a_conftest_hidden_by_its_own_gitignore_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """`tests/conftest.py` with a `tests/.gitignore` that ignores it and itself: `git status` shows
    nothing, and the host's `python3 -m pytest` (an alias, a hook) ran it (1/1 per backend)."""
    root = husky_project(tmp_path)
    marker = tmp_path / "conftest-ran"
    _write(root, {"tests/test_a.py": "def test_a():\n    pass\n"})
    plant = {"tests/conftest.py": _payload(marker), "tests/.gitignore": "conftest.py\n.gitignore\n"}
    stderr = _plant(runs, root, plant)
    assert "quarantined tests/conftest.py (created by the sandbox" in stderr, stderr
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    subprocess.run(pytest, cwd=root, capture_output=True, timeout=120)
    assert not marker.exists()
    _write(root, plant)  # the control, made on the host
    subprocess.run(pytest, cwd=root, capture_output=True, timeout=120)
    assert marker.exists()


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
