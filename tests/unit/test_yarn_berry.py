"""yarn 2+ ("berry") in the built-in policy, pure: which yarn a project says it uses, the phases'
commands, settings and outputs; and the two layout pieces its scripts phase needs (optional outputs,
the rebuilt top), on real directories. The sandboxes themselves: tests/e2e/test_ecosystem_yarn.py."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from sbox_shim import ecosystems
from sbox_shim.ecosystems import Context, Phase, yarn
from sbox_shim.layout import TOP, optional_outputs, rebuilt_top
from sbox_shim.plan import YARN_STATE, Mount, Network, Step
from sbox_shim.runner import present


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("project", "home", "cache")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def ctx(where: dict[str, Path], env: dict[str, str] | None = None) -> Context:
    return Context(cwd=str(where["project"]), project_root=str(where["project"]), home=str(where["home"]),
                   env=env or {}, cache_dir=str(where["cache"]), real_tool=None)


def phases(argv: str, c: Context) -> tuple[Phase, ...]:
    found = ecosystems.phases(argv.split(), c)
    assert found is not None
    return found


@pytest.mark.parametrize("files,berry", [
    ({"package.json": '{"packageManager": "yarn@4.5.0"}'}, True),
    ({"package.json": '{"packageManager": "yarn@3.8.7+sha512.abc"}'}, True),
    ({"package.json": '{"packageManager": "yarn@1.22.22"}', ".yarnrc.yml": "x: 1\n"}, False),  # it says classic
    ({"package.json": "{}", ".yarnrc.yml": "nodeLinker: node-modules\n"}, True),
    ({"package.json": "{}", "yarn.lock": '# comment\n\n__metadata:\n  version: 8\n'}, True),
    ({"package.json": "{}", "yarn.lock": "# yarn lockfile v1\n\nleft-pad@^1:\n  version \"1.3.0\"\n"}, False),
    ({"package.json": "{}"}, False),
])
def test_which_yarn_the_project_says(where: dict[str, Path], files: dict[str, str], berry: bool) -> None:
    for name, text in files.items():
        (where["project"] / name).write_text(text)
    assert yarn.is_berry(ctx(where), str(where["project"])) is berry


def test_berry_downloads_with_the_build_step_skipped_then_builds_offline(where: dict[str, Path]) -> None:
    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    (where["home"] / ".yarnrc.yml").write_text("npmRegistryServer: 'https://npm.example.org/'\n")
    c = ctx(where, {"YARN_NPM_AUTH_TOKEN": "t", "YARN_ENABLE_PROGRESS_BARS": "0", "NPM_TOKEN": "n"})
    download, scripts, state = phases("yarn add left-pad --exact", c)
    assert download.argv == ("yarn", "add", "left-pad", "--exact", "--mode=skip-build")
    assert download.network and "npm.example.org" in download.allow
    assert download.env["GIT_ALLOW_PROTOCOL"] == "none" and download.writable is True
    assert {"YARN_NPM_AUTH_TOKEN", "YARN_ENABLE_PROGRESS_BARS", "NPM_TOKEN"} <= set(download.secrets)
    assert str(where["home"] / ".yarnrc.yml") in download.credentials
    # yarn classic, had it run instead, reads its scripts off from the sandbox's HOME
    assert any(f.target == str(where["home"] / ".yarnrc") and "ignore-scripts true" in f.content
               for f in download.files)
    assert scripts.argv == ("yarn", "install") and not scripts.network
    assert scripts.env["YARN_ENABLE_NETWORK"] == "0" and scripts.env["YARN_ENABLE_IMMUTABLE_INSTALLS"] == "1"
    assert "YARN_NPM_AUTH_TOKEN" not in scripts.secrets and "NPM_TOKEN" not in scripts.secrets
    assert "YARN_ENABLE_PROGRESS_BARS" in scripts.secrets
    assert not any(".yarnrc.yml" in m.source for m in scripts.mounts)
    assert scripts.writable == (TOP, "node_modules/?", ".yarn/unplugged/?", ".yarn/build-state.yml?")
    # one cache for both, this project's own: written by the download, read-only to the scripts
    cache = download.env["YARN_GLOBAL_FOLDER"]
    assert scripts.env["YARN_GLOBAL_FOLDER"] == cache and cache.startswith(str(where["cache"]))
    assert {m.target: m.readonly for m in download.mounts}[cache] is False
    assert {m.target: m.readonly for m in scripts.mounts}[cache] is True
    # then the install state as the download wrote it, with the scripts phase's build record alone:
    # offline, from a copy in this run's own directory, writing that one file of the project
    path = str(where["project"] / ".yarn" / "install-state.gz")
    (run,) = [m.source for m in state.mounts if m.kind == "run"]
    note = scripts.hook[4]
    assert note.startswith(str(where["cache"] / "yarn-built") + "/")  # sbox's cache, which no sandbox mounts
    assert scripts.hook == ("yarn", "scripts", path, run, note) and state.hook == ("yarn", "state", path, run, note)
    assert state.argv[0] == "env" and os.path.isabs(state.argv[1]) and os.path.basename(state.argv[1]) == "node"
    assert state.argv[2:] == (YARN_STATE, run + "/install-state.gz", run + "/scripts-install-state.gz", path)
    assert not state.network and state.writable == (".yarn/install-state.gz?",) and not state.secrets
    assert [f.target for f in state.files] == [YARN_STATE] and "storedBuildState" in state.files[0].content


def test_a_berry_monorepo_in_a_directory_of_the_project(where: dict[str, Path]) -> None:
    """sbox's project is the repository; berry's, `web/` in it, whose workspaces each may get a
    node_modules of their own (a version that cannot be hoisted): `yarn install` in a workspace."""
    web = where["project"] / "web"
    (web / "packages" / "a").mkdir(parents=True)
    (web / "packages" / "b").mkdir()
    (web / "package.json").write_text('{"packageManager": "yarn@4.18.1", "workspaces": ["packages/*"]}')
    (web / "yarn.lock").write_text("__metadata:\n  version: 8\n")
    for name in ("a", "b"):
        (web / "packages" / name / "package.json").write_text('{"name": "%s"}' % name)
    c = Context(cwd=str(web / "packages" / "a"), project_root=str(where["project"]), home=str(where["home"]),
                env={}, cache_dir=str(where["cache"]), real_tool=None)
    _, scripts, state = phases("yarn install", c)
    assert state.writable == ("web/.yarn/install-state.gz?",)
    assert scripts.hook[2] == str(web / ".yarn" / "install-state.gz")
    assert scripts.writable == ("web/" + TOP, "web/node_modules/?", "web/.yarn/unplugged/?", "web/.yarn/build-state.yml?",
                                "web/packages/a/node_modules/?", "web/packages/b/node_modules/?")


@pytest.mark.parametrize("manager,rc,env,off", [
    ("yarn@4.18.1", "", {}, True),  # yarn 4 knows the setting: off in the download phase whatever
    ("yarn@3.8.7", "", {}, False),  # yarn 3 refuses a setting it does not know, and has no JS constraints
    ("", "enableConstraintsChecks: true\n", {}, True),
    ("", "", {"YARN_ENABLE_CONSTRAINTS_CHECKS": "true"}, True),
    ("", "", {}, False),
])
def test_yarn_s_constraints_are_off_in_the_download_phase_where_they_could_be_on(
        where: dict[str, Path], manager: str, rc: str, env: dict[str, str], off: bool) -> None:
    (where["project"] / "package.json").write_text('{"packageManager": "%s"}' % manager if manager else "{}")
    (where["project"] / ".yarnrc.yml").write_text(rc)
    download, scripts, _ = phases("yarn install", ctx(where, env))
    assert ("YARN_ENABLE_CONSTRAINTS_CHECKS" in download.env) is off
    assert "YARN_ENABLE_CONSTRAINTS_CHECKS" not in scripts.env


def test_berry_with_update_lockfile_mode_links_nothing_so_builds_nothing(where: dict[str, Path]) -> None:
    (where["project"] / ".yarnrc.yml").write_text("")
    (only,) = phases("yarn install --mode=update-lockfile", ctx(where))
    assert only.argv == ("yarn", "install", "--mode=update-lockfile")
    (only,) = phases("yarn install --mode update-lockfile", ctx(where))
    assert only.argv == ("yarn", "install", "--mode", "update-lockfile")
    assert only.hook == ()  # no git dependency to name if it fails


@pytest.mark.parametrize("argv", ["yarn install --mode=skip-build", "yarn install --mode skip-build"])
def test_berry_with_the_users_own_skip_build_has_no_scripts_phase(where: dict[str, Path], argv: str) -> None:
    (where["project"] / ".yarnrc.yml").write_text("")
    (only,) = phases(argv, ctx(where))
    assert only.argv == ("yarn", "install", "--mode=skip-build")


def test_a_berry_git_dependency_is_named_when_the_download_fails(where: dict[str, Path]) -> None:
    (where["project"] / "package.json").write_text(
        '{"packageManager": "yarn@4.18.1", "dependencies": {"a": "git+https://h/a.git", "b": "^1.0.0",'
        ' "c": "user/repo#v1", "d": "npm:e@^1", "f": "github:u/f"}, "devDependencies": {"g": "https://h/g.git"}}')
    download, _, _ = phases("yarn install", ctx(where))
    assert download.hook == ("yarn", "download", "a", "c", "f", "g")
    err = io.StringIO()
    state, _, _ = yarn.before(None, _hooked("download", ("yarn", "download", "a", "c")), err)
    yarn.failed(state, err)
    assert err.getvalue().startswith("sbox: a, c: a git dependency") and err.getvalue().count("\n") == 1


def _hooked(label: str, hook: tuple[str, ...]) -> Step:
    return Step(label, (), "p", "r", "sandbox", "/", (), Network("off"), hook=hook)


def test_optional_outputs_and_the_tops_are_read_off_the_outputs() -> None:
    assert optional_outputs(True) == (True, (), ())
    assert optional_outputs((TOP, "web/" + TOP, "node_modules/?", "yarn.lock")) == (
        ("node_modules/", "yarn.lock"), ("node_modules/",), ("", "web"))


def _step(project: Path, mounts: tuple[Mount, ...], optional: tuple[str, ...] = (),
          create: tuple[str, ...] = (), staged: tuple[tuple[str, str], ...] = ()) -> Step:
    return Step("scripts", ("true",), "p", "r", "sandbox", str(project), (), Network("off"), mounts=mounts,
                project=str(project), optional=optional, create=create, staged=staged)


def test_an_optional_output_that_is_not_there_as_the_step_starts_is_not_bound(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".yarn").mkdir(parents=True)
    (root / ".pnp.cjs").write_text("")
    there, gone, made = str(root / ".pnp.cjs"), str(root / ".pnp.loader.mjs"), str(root / ".yarn/unplugged")
    step = _step(root, (Mount(str(root), str(root)), Mount(there, there, readonly=False),
                        Mount("/run/x", gone, readonly=False), Mount(made, made, readonly=False)),
                 optional=(there, gone, made), create=(made,), staged=(("/run/x", gone),))
    now = present(step)
    assert [m.target for m in now.mounts] == [str(root), there]
    assert now.create == () and now.staged == ()
    os.mkdir(made)  # made since the plan: bound after all
    assert made in [m.target for m in present(step).mounts]


def test_the_top_is_rebuilt_from_what_is_there_as_the_step_starts(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "package.json").write_text("{}")
    (root / "yarn.lock").write_text("")
    os.symlink("src", root / "lib")
    os.mkfifo(root / "pipe")
    nm = str(root / "node_modules")
    os.mkdir(nm)
    mounts = (Mount(str(root), str(root)), Mount("", str(root), readonly=False, kind="tmpfs"),
              Mount(nm, nm, readonly=False), Mount(str(root / "sbox.yaml"), str(root / "sbox.yaml")))
    rebuilt = rebuilt_top(mounts, str(root), str(root))
    assert rebuilt[:2] == mounts[:2] and rebuilt[-2:] == mounts[2:]
    added = rebuilt[2:-2]
    assert {(m.target, m.kind, m.readonly, m.source) for m in added} == {
        (str(root / "lib"), "symlink", True, "src"),
        (str(root / "package.json"), "bind", True, str(root / "package.json")),
        (str(root / "src"), "bind", True, str(root / "src")),
        (str(root / "yarn.lock"), "bind", True, str(root / "yarn.lock")),
    }  # node_modules: a later mount's (the output); the FIFO left out
    assert rebuilt_top(mounts[:1] + mounts[2:], str(root), str(root)) == mounts[:1] + mounts[2:]  # no TOP


def test_the_install_state_is_kept_and_the_scripts_phase_writes_a_copy(tmp_path: Path) -> None:
    """The hook on real files: as the scripts phase starts, two copies of the file the download
    wrote, one bound over the project's file for that phase to write; the state step skipped when
    that copy is unchanged; the copy renamed back over the file (and over a link put in its place,
    never through it) when the state step fails."""
    project, run, outside = tmp_path / "p", tmp_path / "run", tmp_path / "outside"
    (project / ".yarn").mkdir(parents=True)
    run.mkdir()
    path = project / ".yarn" / "install-state.gz"
    path.write_bytes(b"as the download wrote it")
    scripts_hook = ("yarn", "scripts", str(path), str(run), str(tmp_path / "note"))
    state_hook = ("yarn", "state", *scripts_hook[2:])
    err = io.StringIO()
    state, step, _ = yarn.before({"at": "download", "git": ()}, _hooked("scripts", scripts_hook), err)
    assert step is not None and step.mounts[-1] == Mount(str(run / "scripts-install-state.gz"), str(path), False)
    assert (run / "install-state.gz").read_bytes() == (run / "scripts-install-state.gz").read_bytes() == path.read_bytes()
    _, skipped, why = yarn.before(state, _hooked("state", state_hook), err)
    assert skipped is None and "as the download wrote it" in why
    (run / "scripts-install-state.gz").write_bytes(b"a bin pointed elsewhere")
    state, merge, _ = yarn.before(state, _hooked("state", state_hook), err)
    assert merge is not None and path.read_bytes() == b"as the download wrote it"
    path.write_bytes(b"half written")  # the state step failed
    yarn.failed(state, err)
    assert path.read_bytes() == b"as the download wrote it" and "put back" in err.getvalue()
    # a link in its place: replaced, the file it names untouched
    outside.write_bytes(b"the user's")
    path.unlink()
    path.symlink_to(outside)
    yarn.failed(state, err)
    assert not path.is_symlink() and path.read_bytes() == b"as the download wrote it"
    assert outside.read_bytes() == b"the user's"
    # no state file after the download: nothing kept, nothing bound, the state step skipped
    path.unlink()
    shutil.rmtree(run)
    run.mkdir()
    state, step, _ = yarn.before({}, _hooked("scripts", scripts_hook), err)
    assert state["kept"] is None and step is not None and step.mounts == ()
    assert yarn.before(state, _hooked("state", state_hook), err)[1] is None


def test_berry_s_scripts_phase_is_skipped_when_nothing_that_decides_its_builds_changed(tmp_path: Path) -> None:
    """The note of the last complete install: the same install state, yarn, node and places
    skip the scripts phase and the state step; a changed state or package.json runs them; a failed
    step removes the note."""
    project, run = tmp_path / "p", tmp_path / "run"
    (project / ".yarn").mkdir(parents=True)
    (project / "package.json").write_text("{}")
    state = project / ".yarn" / "install-state.gz"
    state.write_bytes(b"built")
    hook = ("yarn", "scripts", str(state), str(run), str(tmp_path / "cache" / "yarn-built" / "n"))
    err = io.StringIO()

    def turn() -> tuple[object, Step | None, str]:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        return yarn.before({"at": "download"}, _hooked("scripts", hook), err)

    held, step, _ = turn()
    assert step is not None
    yarn.done(held)  # complete: noted
    held, step, why = turn()
    assert step is None and why == yarn.UNCHANGED
    assert yarn.before(held, _hooked("state", ("yarn", "state", *hook[2:])), err)[1] is None
    state.write_bytes(b"a package added")  # the download changed the state
    held, step, _ = turn()
    assert step is not None
    yarn.done(held)
    assert turn()[1] is None
    (project / "package.json").write_text('{"scripts": {"postinstall": "x"}}')  # which builds, not in the state
    os.utime(project / "package.json", ns=(1, 1))
    held, step, _ = turn()
    assert step is not None
    yarn.failed(held, err)  # a failed build: tried again next time
    assert turn()[1] is not None


@pytest.mark.parametrize("where_set", ["rc", "env"])
def test_a_moved_install_state_is_refused(where: dict[str, Path], where_set: str) -> None:
    """`installStatePath` moves the file sbox keeps from the scripts (red team 35): refused, in one
    line naming the setting, before anything runs."""
    from sbox_shim.errors import UsageError

    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    (where["project"] / ".yarnrc.yml").write_text("installStatePath: ./node_modules/.state.gz\n" if where_set == "rc" else "")
    env = {"YARN_INSTALL_STATE_PATH": "/x"} if where_set == "env" else {}
    with pytest.raises(UsageError, match="installStatePath in .*yarnrc.yml moves|YARN_INSTALL_STATE_PATH moves"):
        phases("yarn install", ctx(where, env))


def test_the_state_step_runs_a_node_no_sandbox_could_have_written(where: dict[str, Path], tmp_path: Path) -> None:
    """A PATH with the project's node_modules/.bin first (direnv's `layout node`): the state step's
    node is the next one (red team 35: a postinstall's `node_modules/.bin/node` ran there)."""
    bin_dir = where["project"] / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "node").write_text("#!/bin/sh\n")
    (bin_dir / "node").chmod(0o755)
    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    _, _, state = phases("yarn install", ctx(where, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}))
    assert state.argv[1] == shutil.which("node") and not state.argv[1].startswith(str(where["project"]))


@pytest.mark.parametrize("argv,download,scripts", [
    ("yarn --cwd . install", "yarn --cwd . install --mode=skip-build", "yarn --cwd . install"),
    ("yarn --cwd=web install", "yarn --cwd=web install --mode=skip-build", "yarn --cwd web install"),
    ("yarn dedupe", "yarn dedupe --mode=skip-build", "yarn install"),
    ("yarn remove left-pad", "yarn remove left-pad --mode=skip-build", "yarn install"),
    ("yarn workspace a add left-pad", "yarn workspace a add left-pad --mode=skip-build", "yarn install"),
])
def test_berry_commands_that_install_go_through_the_two_phases(where: dict[str, Path], argv: str, download: str,
                                                                scripts: str) -> None:
    """Red team 36: `yarn --cwd . install`, `dedupe`, `remove`, `workspace X add` install with the
    build step as `install` does; planned as commands given, their packages' scripts ran in a
    writable project and planted what `yarn run` on the host runs."""
    (where["project"] / "web").mkdir()
    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    first, second, state = phases(argv, ctx(where))
    assert (" ".join(first.argv), " ".join(second.argv), state.label) == (download, scripts, "state")
    assert first.network and not second.network


@pytest.mark.parametrize("argv", ["yarn unplug left-pad", "yarn workspaces focus", "yarn --cwd . unplug x"])
def test_berry_commands_that_install_and_cannot_be_split_are_refused(where: dict[str, Path], argv: str) -> None:
    from sbox_shim.errors import UsageError

    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    with pytest.raises(UsageError, match="cannot run apart from the download"):
        phases(argv, ctx(where))


def test_berry_rebuild_is_the_scripts_phase_and_the_state_step(where: dict[str, Path]) -> None:
    """`yarn rebuild`: offline, berry's outputs (not npm's, which left PnP's top read-only: EROFS),
    then the state step; no note decides it (the user asked for the builds)."""
    (where["project"] / "package.json").write_text('{"packageManager": "yarn@4.18.1"}')
    scripts, state = phases("yarn rebuild", ctx(where))
    assert scripts.argv == ("yarn", "rebuild") and not scripts.network and scripts.writable[0] == TOP
    assert scripts.hook[4] == "" and state.label == "state"
