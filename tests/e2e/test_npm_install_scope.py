"""An npm install through sbox runs the install scripts npm would run, and no more; a failed one
is rolled back; a `file:` dependency outside the project says so in one line (issue 11, items 4,
5 and 6; both backends, the real npm, fixtures from a loopback registry).

Each fixture's script appends its package name to node_modules/.ran (the only part of the project
the scripts phase may write): the file says who ran.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

MARK = ("node -e \"require('fs').appendFileSync(process.env.INIT_CWD + '/node_modules/.ran', "
        "process.env.npm_package_name + ':' + process.env.npm_lifecycle_event + '\\n')\"")


def _package(name: str, event: str | None = None, command: str = MARK) -> bytes:
    return pkg.npm_package(name, "1.0.0", {"index.js": f"module.exports = {name!r};\n"},
                           scripts={event: command} if event else None)


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    packages = [_package("sbox-a", "postinstall"), _package("sbox-b", "install"), _package("sbox-plain"),
                _package("sbox-plain2"), _package("sbox-fails", "postinstall", "node -e \"process.exit(3)\"")]
    with NpmRegistry(packages) as reg:
        yield reg


def _project(tmp_path: Path, backend: str, registry: NpmRegistry, deps: dict[str, str],
             scripts: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    manifest = {"name": "app", "version": "0.0.0", "private": True, "dependencies": deps}
    if scripts:
        manifest["scripts"] = scripts
    (project / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
               npm_config_audit="false", SBOX_QUIET="0")
    return project, env


def _ran(project: Path) -> list[str]:
    marks = project / "node_modules" / ".ran"
    return sorted(marks.read_text().split()) if marks.exists() else []


def _tree(project: Path) -> dict[str, str]:
    """Every entry of package.json, the lockfile and node_modules: its kind and content."""
    out = {}
    for name in ("package.json", "package-lock.json"):
        path = project / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
    for root, dirs, files in os.walk(project / "node_modules"):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(project))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _steps(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("sbox: step")]


def test_named_install_runs_only_the_new_packages_script(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-a": "1.0.0"}, {"postinstall": MARK})
    first = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _ran(project) == ["app:postinstall", "sbox-a:postinstall"]  # a bare install: the root's too
    (project / "node_modules" / ".ran").unlink()

    result = run_sbox(sbox_bin, ["run", "--", "npm", "install", "sbox-b"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (project / "node_modules" / "sbox-b" / "index.js").is_file()
    # As npm runs it: the added package's script only, not sbox-a's again, not the project's own.
    assert _ran(project) == ["sbox-b:install"], result.stderr[-3000:]
    (project / "node_modules" / ".ran").unlink()

    again = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _ran(project) == ["app:postinstall"], again.stderr[-3000:]  # nothing changed: the root's only


def test_no_scripts_phase_when_nothing_has_install_scripts(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-plain": "1.0.0"})
    for command in (["npm", "install"], ["npm", "ci"], ["npm", "install", "sbox-plain2"]):
        result = run_sbox(sbox_bin, ["run", "--", *command], project, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        steps = _steps(result.stderr)
        assert len(steps) == 2 and steps[0].startswith("sbox: step 1/2 [download]"), steps
        assert steps[1] == ("sbox: step 2/2 [scripts] skipped: nothing this install added or changed has "
                            "install scripts"), steps
    assert (project / "node_modules" / "sbox-plain2" / "index.js").is_file()
    assert not list(project.glob(".sbox-rollback-*"))  # the kept state is gone after a success


def test_the_users_own_ignore_scripts_runs_no_script(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    """`npm install --ignore-scripts` directly runs no install script; through sbox neither."""
    project, env = _project(tmp_path, backend, registry, {"sbox-a": "1.0.0"}, {"postinstall": MARK})
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install", "--ignore-scripts"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (project / "node_modules" / "sbox-a" / "index.js").is_file()
    assert _ran(project) == [], result.stderr[-3000:]
    assert "profile npm:download" in result.stderr and "scripts" not in " ".join(_steps(result.stderr))


def test_a_failing_scripts_phase_rolls_the_install_back(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-a": "1.0.0", "sbox-plain": "1.0.0"})
    first = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _tree(project)
    assert before["package-lock.json"] != "absent" and "node_modules/sbox-a/index.js" in before

    result = run_sbox(sbox_bin, ["run", "--", "npm", "install", "sbox-fails"], project, env=env)
    assert result.returncode == 3, result.stderr[-3000:]
    assert _tree(project) == before  # package.json, the lockfile and node_modules as they were
    lines = [ln for ln in result.stderr.splitlines() if "rolled back" in ln]
    assert lines == ["sbox: the install failed; rolled back node_modules, package.json, package-lock.json "
                     "to their state before it"], result.stderr[-3000:]
    assert not list(project.glob(".sbox-rollback-*"))


def test_a_failing_first_install_leaves_no_node_modules(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    project, env = _project(tmp_path, backend, registry, {"sbox-fails": "1.0.0"})
    text = (project / "package.json").read_bytes()
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 3, result.stderr[-3000:]
    assert not (project / "node_modules").exists() and not (project / "package-lock.json").exists(), \
        (result.stderr[-3000:], list((project / "node_modules").rglob("*")))
    assert (project / "package.json").read_bytes() == text


def test_file_dependency_outside_the_root_is_one_line(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "package.json").write_text(json.dumps({"name": "lib", "version": "1.0.0"}))
    project, env = _project(tmp_path, backend, registry, {"lib": "file:../lib"})
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert result.stderr.startswith(f"sbox: {project}/package.json:")
    assert f"dependencies.lib: file:../lib is outside the project root {project} ({lib})" in result.stderr
    assert not (project / "node_modules").exists()


def test_a_file_dependency_inside_the_project_runs_its_script_in_place(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    """`"local-lib": "file:packages/local-lib"`: npm links it and runs its postinstall in its own
    directory, which the scripts phase may write (it failed there with EROFS); the rest of the
    project stays read-only."""
    project, env = _project(tmp_path, backend, registry, {"local-lib": "file:packages/local-lib"})
    lib = project / "packages" / "local-lib"
    lib.mkdir(parents=True)
    (lib / "package.json").write_text(json.dumps({
        "name": "local-lib", "version": "1.0.0",
        "scripts": {"postinstall": "node -e \"require('fs').writeFileSync('built.txt', 'ok')\" && "
                                   "(touch ../../outside.txt 2>/dev/null || true)"}}))
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (lib / "built.txt").read_text() == "ok"
    assert not (project / "outside.txt").exists()  # the project around it stays read-only


def _beside_a_local_lib(tmp_path: Path, backend: str, reg: NpmRegistry, package: str,
                        scripts: dict[str, str]) -> tuple[Path, dict[str, str], Path]:
    """A project that depends on a registry `package` and on a first-party `file:` library (its
    `scripts`), and a copy of it installed by npm alone: the control. (project, env, control)"""
    project, env = _project(tmp_path, backend, reg, {"local-lib": "file:packages/local-lib", package: "1.0.0"})
    lib = project / "packages" / "local-lib"
    lib.mkdir(parents=True)
    (lib / "package.json").write_text(json.dumps({"name": "local-lib", "version": "1.0.0", "scripts": scripts}))
    (lib / "index.js").write_text("module.exports = 1;\n")
    control = tmp_path / "control"
    shutil.copytree(project, control)
    direct = subprocess.run(["npm", "install"], cwd=control, env=env, capture_output=True, text=True, timeout=300)
    assert direct.returncode == 0, direct.stderr[-2000:]
    return project, env, control


WRITER = ("node -e \"const p = process.env.INIT_CWD + '/packages/local-lib/index.js'; "
          "try { require('fs').appendFileSync(p, '/* planted */') } catch (e) { console.error('writer: ' + e.code) }\"")


def test_a_file_dependency_that_builds_nothing_is_not_writable_to_other_packages_scripts(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """A red-team finding: a registry package's postinstall rewrote a first-party `file:` library
    (no scripts of its own), which the scripts phase had made writable to every script. Now only
    a local dependency that builds in place is writable there. The control: npm alone lets it."""
    with NpmRegistry([_package("sbox-writer", "postinstall", WRITER)]) as reg:
        project, env, control = _beside_a_local_lib(tmp_path, backend, reg, "sbox-writer", {})
        lib = project / "packages" / "local-lib"
        assert (control / "packages" / "local-lib" / "index.js").read_text().endswith("/* planted */")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install", "--foreground-scripts"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "writer: EROFS" in result.stdout + result.stderr
    assert (lib / "index.js").read_text() == "module.exports = 1;\n"


PLANTER = ("node -e \"const fs = require('fs'); const lib = process.env.INIT_CWD + '/packages/local-lib/'; "
           "fs.writeFileSync(lib + 'Makefile', 'all:\\\\n\\\\ttouch pwned\\\\n'); "
           "for (const d of ['.vscode', 'hooks']) { try { fs.mkdirSync(lib + d) } catch {} } "
           "fs.writeFileSync(lib + '.vscode/tasks.json', '{}'); fs.writeFileSync(lib + 'hooks/pre-commit', 'touch pwned')\"")


def test_a_makefile_planted_in_a_file_dependency_that_builds_is_quarantined(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """A local dependency that builds in place is writable to every package's scripts in the phase:
    a registry package's postinstall plants its Makefile (you `make` there on the host), an
    editor's tasks, and a hook in the hooks directory of the library's own repository
    (`core.hooksPath = hooks`). The guard watches the top of that directory as it watches the
    project's, and that repository's hooks directory. The control: npm alone keeps them."""
    builds = {"postinstall": "node -e \"require('fs').writeFileSync('built.txt', 'ok')\""}
    planted = ("Makefile", ".vscode", "hooks")
    with NpmRegistry([_package("sbox-planter", "postinstall", PLANTER)]) as reg:
        project, env, control = _beside_a_local_lib(tmp_path, backend, reg, "sbox-planter", builds)
        lib = project / "packages" / "local-lib"
        for name in planted:
            assert (control / "packages" / "local-lib" / name).exists(), name
        subprocess.run(["git", "init", "-q"], cwd=lib, check=True)
        subprocess.run(["git", "config", "core.hooksPath", "hooks"], cwd=lib, check=True)
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (lib / "built.txt").read_text() == "ok"  # its own build ran in place
    for name in planted:
        assert not (lib / name).exists(), name
        assert f"sbox: quarantined packages/local-lib/{name}" in result.stderr, result.stderr[-2000:]


def test_npx_of_a_package_not_installed_fails_at_once_with_the_remedy(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    """`npx cowsay` runs in the default profile, network off: npm retried for about 70 s, then sbox
    said nothing. Now npm is told it is offline (it fails at once) and sbox says what to do."""
    project, env = _project(tmp_path, backend, registry, {})
    result = run_sbox(sbox_bin, ["run", "--", "npx", "--yes", "sbox-a"], project, env=env, timeout=60)
    assert result.returncode != 0
    assert "sbox: npx ran with the network off" in result.stderr, result.stderr[-2000:]
    assert not any("/sbox-a" in r for r in registry.requests)


def test_a_hook_installer_that_exits_0_still_gets_the_line(
        tmp_path: Path, backend: str, sbox_bin: str, registry: NpmRegistry) -> None:
    """husky 9's `prepare` exits 0 when it could not set core.hooksPath (.git is read-only in every
    sandbox): the install "succeeded" and the hooks silently were not installed. sbox says so."""
    project, env = _project(tmp_path, backend, registry, {"sbox-plain": "1.0.0"},
                            {"prepare": "echo 'husky - git config failed' || husky"})
    (project / ".git").mkdir()
    result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sbox: the git hooks were not installed" in result.stderr, result.stderr[-2000:]
