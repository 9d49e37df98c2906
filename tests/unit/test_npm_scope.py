"""The run-time halves of npm's built-in policy, on real files and no sandbox: which install
scripts the offline phase runs (npm_scope), the rollback's keep and restore (rollback), and the
line for a `file:` dependency outside the project (npm_local)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sbox_shim import rollback
from sbox_shim.ecosystems import npm_local, npm_scope
from sbox_shim.errors import UsageError


def _lock(packages: dict[str, dict[str, object]]) -> bytes:
    return json.dumps({"lockfileVersion": 3, "packages": {"": {"name": "app"}, **packages}}).encode()


def test_only_added_or_changed_packages_with_scripts_are_built(tmp_path: Path) -> None:
    before = npm_scope.entries(_lock({
        "node_modules/a": {"version": "1.0.0", "hasInstallScript": True},
        "node_modules/b": {"version": "1.0.0", "hasInstallScript": True}}))
    after = npm_scope.entries(_lock({
        "node_modules/a": {"version": "1.0.0", "hasInstallScript": True},  # unchanged
        "node_modules/b": {"version": "2.0.0", "hasInstallScript": True},  # changed
        "node_modules/c": {"version": "1.0.0", "hasInstallScript": True},  # added
        "node_modules/d": {"version": "1.0.0"},  # added, no scripts
        "node_modules/c/node_modules/e": {"version": "1.0.0", "hasInstallScript": True, "inBundle": True},
        "node_modules/w": {"resolved": "packages/w", "link": True}}))  # a link: npm runs its scripts every time
    argv = npm_scope.scripts_argv(("npm", "rebuild"), "/p", before, after, root=False)
    assert argv == ("npm", "rebuild", "--", "/p/node_modules/b", "/p/node_modules/c", "/p/node_modules/w")
    assert npm_scope.scripts_argv(("npm", "rebuild"), "/p", after, after, root=True) == (
        "npm", "rebuild", "--", "/p/node_modules/w", "/p")
    nothing = npm_scope.entries(_lock({"node_modules/d": {"version": "1.0.0"}}))
    assert npm_scope.scripts_argv(("npm", "rebuild"), "/p", None, nothing, root=False) is None


def test_a_lying_lockfile_names_nothing_outside_node_modules() -> None:
    after = npm_scope.entries(_lock({
        "../../home/u/.ssh": {"hasInstallScript": True}, "/etc": {"hasInstallScript": True},
        "node_modules/../../x": {"hasInstallScript": True}, "node_modules/..": {"hasInstallScript": True},
        "node_modules/@../..": {"hasInstallScript": True}, "node_modules/a/node_modules/.": {"hasInstallScript": True}, "--script-shell=/bin/evil": {"hasInstallScript": True},
        "node_modules/ok": {"hasInstallScript": True}}))
    assert npm_scope.scripts_argv(("npm", "rebuild"), "/p", None, after, root=False) == (
        "npm", "rebuild", "--", "/p/node_modules/ok")
    # Unreadable state after the download: every script, as a plain `npm rebuild` runs them.
    assert npm_scope.scripts_argv(("npm", "rebuild"), "/p", None, None, root=False) == ("npm", "rebuild")
    assert npm_scope.entries(b"[1, 2]") is None and npm_scope.entries(b"\xff") is None


def test_a_key_with_a_trailing_newline_is_not_a_package() -> None:
    """A lying lockfile's `node_modules/a\n` named a folder that npm never made (a regular
    expression's `$` matches before a final newline)."""
    lock = _lock({"node_modules/a\n": {"version": "1", "hasInstallScript": True}, "node_modules/b": {"version": "1"}})
    assert list(npm_scope.entries(lock) or {}) == ["node_modules/b"]


def test_lockfiles_are_never_read_through_a_link(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    (real / "node_modules" / "a").mkdir(parents=True)
    (real / "node_modules" / ".package-lock.json").write_bytes(_lock({"node_modules/a": {"version": "1"}}))
    project = tmp_path / "project"
    project.mkdir()
    (project / "node_modules").symlink_to(real / "node_modules")
    assert npm_scope.read_state(str(project)) is None
    assert npm_scope.read_state(str(real)) == {"node_modules/a": (repr(["1", None, None, None]), False, False)}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            out[rel] = ("link:" + os.readlink(path)) if path.is_symlink() else "dir" if path.is_dir() else path.read_text()
    return out


@pytest.mark.parametrize("whole", [False, True])
def test_rollback_puts_files_and_node_modules_back(tmp_path: Path, whole: bool) -> None:
    _write(tmp_path, {"package.json": "{}", "package-lock.json": "lock", "node_modules/a/index.js": "a",
                      "node_modules/.package-lock.json": "hidden"})
    (tmp_path / "node_modules" / ".bin").mkdir()
    (tmp_path / "node_modules" / ".bin" / "a").symlink_to("../a/index.js")
    before = _snapshot(tmp_path)
    kept = rollback.keep(str(tmp_path), ("package.json", "package-lock.json", "npm-shrinkwrap.json"), whole=whole)
    # What an install might do: replace a package, add one, rewrite the lockfiles, plant links.
    if not whole:
        os.rename(tmp_path / "node_modules" / "a", tmp_path / "node_modules" / ".a-retired")
    _write(tmp_path, {"node_modules/a/index.js": "a2", "node_modules/b/index.js": "b",
                      "node_modules/.package-lock.json": "hidden2", "npm-shrinkwrap.json": "new"})
    (tmp_path / "package-lock.json").unlink()
    (tmp_path / "package-lock.json").symlink_to("/etc/passwd")
    (tmp_path / "package.json").write_text('{"dependencies": {"b": "1"}}')
    done, problem = rollback.restore(kept)
    assert problem is None
    assert done == ["node_modules", "package.json", "package-lock.json", "npm-shrinkwrap.json"]
    after = _snapshot(tmp_path)
    assert after == before


def test_rollback_of_a_first_install_removes_node_modules(tmp_path: Path) -> None:
    _write(tmp_path, {"package.json": "{}"})
    kept = rollback.keep(str(tmp_path), ("package.json", "package-lock.json"))
    _write(tmp_path, {"node_modules/a/index.js": "a", "package-lock.json": "lock"})
    assert rollback.restore(kept) == (["node_modules", "package-lock.json"], None)
    assert _snapshot(tmp_path) == {"package.json": "{}"}


def test_file_dependency_outside_the_root_names_file_line_and_key(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "package.json").write_text('{\n  "dependencies": {\n    "lib": "file:../lib"\n  }\n}\n')
    with pytest.raises(UsageError) as caught:
        npm_local.check(str(project), str(project), ())
    assert str(caught.value).startswith(f"sbox: {project}/package.json:3: dependencies.lib: file:../lib is outside")
    (project / "package.json").write_text('{"dependencies": {"lib": "file:./lib"}}')
    npm_local.check(str(project), str(project), ())  # inside: nothing to say
    with pytest.raises(UsageError, match=r"^sbox: \.\./other is outside the project root"):
        npm_local.check(str(project), str(project), ("../other",))


def test_a_named_install_is_hooked_as_named(tmp_path: Path) -> None:
    from sbox_shim import ecosystems

    (tmp_path / "package.json").write_text('{"scripts": {"prepare": "x"}}')
    ctx = ecosystems.Context(str(tmp_path), str(tmp_path), "/home/u-not-here", {}, str(tmp_path / "c"), None)
    assert [p.hook for p in ecosystems.phases(["npm", "ci"], ctx) or ()] == [
        ("npm", "ci", str(tmp_path))] * 2 + [()]
    assert [p.hook for p in ecosystems.phases(["yarn", "install"], ctx) or ()] == [(), (), ()]
    phases = ecosystems.phases(["npm", "install", "left-pad"], ctx)
    assert phases is not None and [p.label for p in phases] == ["download", "scripts"]
    assert phases[1].hook == ("npm", "named", str(tmp_path))


def test_the_clone_shares_nothing_the_guard_watches(tmp_path: Path) -> None:
    """A step that rewrites a nested .envrc in place or sets a setuid bit on a shared inode does
    not get it back through the rollback (the persistence guard would have quarantined it)."""
    import stat

    _write(tmp_path, {"package.json": "{}", "node_modules/a/index.js": "a", "node_modules/a/.envrc": "ok",
                      "node_modules/a/.git/HEAD": "ref"})
    kept = rollback.keep(str(tmp_path), ("package.json",))
    for rel in ("node_modules/a/.envrc", "node_modules/a/.git/HEAD"):
        with open(tmp_path / rel, "r+") as f:  # in place: the same inode
            f.write("evil")
    os.chmod(tmp_path / "node_modules/a/index.js", 0o4755)
    assert rollback.restore(kept)[1] is None
    assert (tmp_path / "node_modules/a/.envrc").read_text() == "ok"
    assert (tmp_path / "node_modules/a/.git/HEAD").read_text() == "ref"
    assert not os.stat(tmp_path / "node_modules/a/index.js").st_mode & stat.S_ISUID


def _settled(tmp_path: Path) -> None:
    """A tree as npm leaves it: `a` (with an install script) asked for, locked and installed."""
    packages = {"node_modules/a": {"version": "1.0.0", "hasInstallScript": True}}
    (tmp_path / "node_modules" / "a").mkdir(parents=True)
    (tmp_path / "node_modules" / ".package-lock.json").write_bytes(_lock(packages))
    lock = json.loads(_lock(packages))
    lock["packages"][""]["dependencies"] = {"a": "1.0.0"}
    (tmp_path / "package-lock.json").write_text(json.dumps(lock))
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "dependencies": {"a": "1.0.0"}}))


def test_a_settled_tree_is_one_whose_lockfiles_agree_with_package_json(tmp_path: Path) -> None:
    _settled(tmp_path)
    before = npm_scope.read_state(str(tmp_path))
    assert npm_scope.settled(str(tmp_path), before)
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "dependencies": {"a": "^2"}}))
    assert not npm_scope.settled(str(tmp_path), before)
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "dependencies": {"a": "1.0.0"}}))
    (tmp_path / "node_modules" / ".package-lock.json").write_bytes(_lock({}))
    assert not npm_scope.settled(str(tmp_path), npm_scope.read_state(str(tmp_path)))
    kept = rollback.keep(str(tmp_path), ("package.json",), tree=False)
    assert kept.modules == "left" and rollback.restore(kept) == ([], None)
    assert (tmp_path / "node_modules" / ".package-lock.json").exists()


def test_the_scripts_phase_is_guessed_skipped_for_a_bare_install_of_a_settled_tree(tmp_path: Path) -> None:
    """The guess that starts the phase's sandbox early: a settled tree changes nothing for a bare
    `npm install` (no CPU spent on a phase that is then skipped); `npm ci` rebuilds it all; the
    project's own install scripts are always due."""
    from sbox_shim.ecosystems import npm_run
    from sbox_shim.plan import Network, Step

    _settled(tmp_path)

    def phase(kind: str) -> Step:
        return Step("scripts", ("npm",), "p", "r", "sandbox", str(tmp_path), (), Network("off"),
                    hook=("npm", kind, str(tmp_path)))

    assert not npm_run.likely(phase("install"))
    assert npm_run.likely(phase("ci")) and npm_run.likely(phase("named"))
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "dependencies": {"a": "1.0.0"},
                                                      "scripts": {"postinstall": "x"}}))
    assert npm_run.likely(phase("install"))
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "dependencies": {"a": "^2"}}))
    assert npm_run.likely(phase("install"))


def test_a_package_folder_gone_or_changed_since_the_hidden_lockfile_is_not_known(tmp_path: Path) -> None:
    """npm reinstalls (or looks anew at) a folder missing or changed since it wrote its hidden
    lockfile: its scripts are due again, as npm would run them."""
    for name in ("a", "b", "c"):
        (tmp_path / "node_modules" / name).mkdir(parents=True)
    hidden = tmp_path / "node_modules" / ".package-lock.json"
    hidden.write_bytes(_lock({f"node_modules/{n}": {"version": "1.0.0", "hasInstallScript": True} for n in "abc"}))
    old = hidden.stat().st_mtime - 60
    for name in ("a", "b", "c"):
        os.utime(tmp_path / "node_modules" / name, (old, old))
    os.utime(hidden, (old + 1, old + 1))
    (tmp_path / "node_modules" / "b").rmdir()
    (tmp_path / "node_modules" / "c" / "built.txt").write_text("new")  # the folder changed since
    assert sorted(npm_scope.read_state(str(tmp_path)) or {}) == ["node_modules/a"]
    npm_scope.touch(str(tmp_path))
    assert sorted(npm_scope.read_state(str(tmp_path)) or {}) == ["node_modules/a", "node_modules/c"]


def test_a_rollback_that_cannot_finish_says_where_the_state_is_kept(tmp_path: Path) -> None:
    import io

    from sbox_shim.ecosystems import npm_run

    _write(tmp_path, {"package.json": "{}", "node_modules/a/index.js": "a"})
    kept = rollback.keep(str(tmp_path), ("package.json",))
    os.rename(Path(kept.keep) / "node_modules", tmp_path / "elsewhere")  # the kept tree is gone
    err = io.StringIO()
    npm_run.failed(npm_run.State(kept, None, str(tmp_path)), err)
    (line,) = err.getvalue().splitlines()
    assert line.startswith("sbox: the install failed and could not be rolled back (")
    assert line.endswith(f"the state before it is kept in {kept.keep}: move its contents back into {tmp_path}")
    assert os.path.isdir(kept.keep)  # not removed
    assert (tmp_path / "node_modules" / "a" / "index.js").is_file()  # what was there stays


def test_an_option_s_path_value_is_not_taken_for_a_local_package(tmp_path: Path) -> None:
    """`npm install --script-shell /bin/zsh` names a shell, not a package outside the project."""
    from sbox_shim import ecosystems

    (tmp_path / "package.json").write_text("{}")
    ctx = ecosystems.Context(str(tmp_path), str(tmp_path), "/home/u-not-here", {}, str(tmp_path / "c"), None)
    for argv in (["npm", "install", "--script-shell", "/bin/zsh"], ["npm", "--nodedir", "/usr/include/node", "ci"]):
        phases = ecosystems.phases(argv, ctx)
        assert phases is not None and [p.label for p in phases][0] == "download", argv
    with pytest.raises(UsageError, match="is outside the project root"):
        ecosystems.phases(["npm", "install", "--script-shell", "/bin/zsh", "../other"], ctx)
