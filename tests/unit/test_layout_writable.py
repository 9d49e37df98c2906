"""What of the project a step may write: the pure layout builder, the tree facts it is given, the
outputs each ecosystem names, and the host-side staging of missing output files."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sbox_shim import ecosystems, layout, outputs, tree
from sbox_shim.backends.bwrapargs import mount_args
from sbox_shim.ecosystems import Context
from sbox_shim.errors import SandboxError
from sbox_shim.plan import Mount

ROOT = "/home/u/project"


def by_target(mounts: tuple[Mount, ...]) -> dict[str, Mount]:
    return {m.target: m for m in layout.dedupe(mounts)}


def test_outputs_are_the_only_writable_binds_of_a_read_only_project() -> None:
    facts = tree.Tree(kinds=(("node_modules/", "dir"), ("package.json", "file"), ("package-lock.json", "missing"),
                             ("dist/", "missing"), ("evil/", "refused: /home/u/project/evil is a symbolic link")),
                      gits=(f"{ROOT}/node_modules/dep/.git",), sockets=(f"{ROOT}/.git/fsmonitor--daemon.ipc",))
    writable = ("node_modules/", "package.json", "package-lock.json", "dist/", "evil/")
    out = layout.project_layout(ROOT, writable, f"{ROOT}/sbox.yaml", facts, "/run/x/out/0",
                                exists=lambda p: p.endswith((".git", "sbox.yaml")))
    m = by_target(out.mounts)
    assert m[ROOT].readonly
    for path in ("node_modules", "package.json", "dist"):
        assert m[f"{ROOT}/{path}"] == Mount(f"{ROOT}/{path}", f"{ROOT}/{path}", readonly=False)
    assert m[f"{ROOT}/package-lock.json"] == Mount("/run/x/out/0/2-package-lock.json", f"{ROOT}/package-lock.json",
                                                   readonly=False)
    assert out.staged == (("/run/x/out/0/2-package-lock.json", f"{ROOT}/package-lock.json"),)
    assert out.create == (f"{ROOT}/dist",)
    assert f"{ROOT}/evil" not in m and out.refused == ("evil/ stays read-only (/home/u/project/evil is a symbolic link)",)
    assert m[f"{ROOT}/node_modules/dep/.git"].readonly and m[f"{ROOT}/sbox.yaml"].readonly
    assert m[f"{ROOT}/.git/fsmonitor--daemon.ipc"] == Mount("/dev/null", f"{ROOT}/.git/fsmonitor--daemon.ipc")
    # bwrap: the protection is bound after (over) the writable output that holds it
    args = mount_args(layout.dedupe(out.mounts))
    assert args.index(f"{ROOT}/node_modules/dep/.git") > args.index(f"{ROOT}/node_modules")
    assert args[args.index(f"{ROOT}/node_modules") - 1] == "--bind"


def test_an_optional_file_whose_directory_is_missing_is_staged_a_plain_one_stays_read_only() -> None:
    """berry's `.yarn/install-state.gz`, planned before the download makes `.yarn/`: staged, and the
    runner leaves it out if it is still missing as the step starts (runner.present)."""
    missing = f"refused: {ROOT}/.yarn does not exist"
    facts = tree.Tree(kinds=((".yarn/install-state.gz", missing), (".yarn/other.gz", missing)))
    out = layout.project_layout(ROOT, (".yarn/install-state.gz", ".yarn/other.gz"), None, facts, "/run/x/out/1",
                                exists=lambda p: False, optional=(".yarn/install-state.gz",))
    assert out.staged == (("/run/x/out/1/0-install-state.gz", f"{ROOT}/.yarn/install-state.gz"),)
    assert out.refused == (f".yarn/other.gz stays read-only ({ROOT}/.yarn does not exist)",)


def test_a_writable_project_protects_every_git_and_the_hooks_path() -> None:
    facts = tree.Tree(gits=(f"{ROOT}/.git", f"{ROOT}/vendor/sub/.git", f"{ROOT}/node_modules/x/.git"),
                      hooks=(f"{ROOT}/.husky",), sockets=(f"{ROOT}/tmp/db.sock",))
    m = by_target(layout.project_layout(ROOT, True, None, facts, "/r", exists=lambda p: False).mounts)
    assert not m[ROOT].readonly
    for path in (".git", "vendor/sub/.git", "node_modules/x/.git", ".husky"):
        assert m[f"{ROOT}/{path}"].readonly, path
    assert m[f"{ROOT}/tmp/db.sock"].source == "/dev/null"


def test_a_read_only_project_still_masks_sockets() -> None:
    facts = tree.Tree(sockets=(f"{ROOT}/x.sock",))
    for writable in (False, ()):
        m = by_target(layout.project_layout(ROOT, writable, None, facts, "/r").mounts)
        assert m[ROOT].readonly and m[f"{ROOT}/x.sock"].source == "/dev/null"
        assert not [t for t, mount in m.items() if not mount.readonly]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n[core]\n\thooksPath = .husky\n")
    (root / ".husky").mkdir()
    (root / "vendor" / "sub").mkdir(parents=True)
    (root / "vendor" / "sub" / ".git").write_text("gitdir: ../../.git/modules/sub\n")
    (root / "node_modules" / "a" / "b").mkdir(parents=True)
    (root / "node_modules" / "a" / "b" / ".git").mkdir()
    (root / "node_modules" / "a" / "b" / ".git" / "nested").mkdir()
    (root / "outside").mkdir()
    (root / "linked").symlink_to(tmp_path)
    (root / "package.json").write_text("{}")
    return root


def test_inspect_finds_every_git_without_following_links(project: Path) -> None:
    facts = tree.inspect(str(project), True)
    assert facts.gits == tuple(sorted(str(project / p) for p in (".git", "vendor/sub/.git", "node_modules/a/b/.git")))
    assert facts.hooks == (str(project / ".husky"),)


def test_a_git_directory_named_through_a_link_out_of_the_project_stops_the_plan(project: Path, tmp_path: Path) -> None:
    """sbox keeps the git directory a `.git` file names read-only; one that lies in the project by
    name but leads out of it through a link (a racing sandbox's `repos -> HOME`) cannot be: the
    plan stops, naming it. Inside the project through a link the host made, it is bound where it
    really is; by name outside the project, no sandbox writes it and it is left alone."""
    from sbox_shim.errors import UsageError

    (tmp_path / "elsewhere" / "sub.git").mkdir(parents=True)
    (project / "repos").symlink_to(tmp_path / "elsewhere")
    (project / "vendor" / "sub" / ".git").write_text("gitdir: ../../repos/sub.git\n")
    with pytest.raises(UsageError, match="repos/sub.git: a git directory named by a .git file in the project, "
                                         "reached through a link that leads outside the project"):
        tree.inspect(str(project), True)
    (project / "repos").unlink()
    (project / "real.git").mkdir()
    (project / "repos").mkdir()
    (project / "repos" / "sub.git").symlink_to(project / "real.git")
    assert str(project / "real.git") in tree.inspect(str(project), True).gits
    (project / "vendor" / "sub" / ".git").write_text(f"gitdir: {tmp_path / 'elsewhere' / 'sub.git'}\n")
    assert not [g for g in tree.inspect(str(project), True).gits if "sub.git" in g]


def test_inspect_kinds_refuse_links(project: Path) -> None:
    (project / "node_modules" / "lnk").symlink_to(project / "outside")
    facts = tree.inspect(str(project), ("node_modules/", "package.json", "package-lock.json", "linked/",
                                        "linked/x/", "node_modules/lnk/", "nodir/lock"))
    kinds = dict(facts.kinds)
    assert kinds["node_modules/"] == "dir" and kinds["package.json"] == "file"
    assert kinds["package-lock.json"] == "missing"
    for refused in ("linked/", "linked/x/", "node_modules/lnk/", "nodir/lock"):
        assert kinds[refused].startswith("refused"), refused
    # every .git of the project, not only those in the parts it writes: vendor/sub's config is
    # redacted in a step that writes node_modules/ only (npm's scripts phase) too
    assert facts.gits == tuple(str(project / g) for g in (".git", "node_modules/a/b/.git", "vendor/sub/.git"))


def test_hooks_path_outside_the_project_or_through_a_link_is_ignored(project: Path) -> None:
    for value in ("../elsewhere", "/etc", "~/hooks", "linked"):
        (project / ".git" / "config").write_text(f"[core]\n  hooksPath = {value}\n")
        assert tree.hooks_path(str(project)) == (), value


def test_inspect_finds_sockets_in_the_top_two_levels(project: Path) -> None:
    made = []
    for path in (project / ".git" / "fsmonitor--daemon.ipc", project / "top.sock",
                 project / "node_modules" / "a" / "deep.sock"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        made.append(s)
    try:
        found = tree.inspect(str(project), False).sockets
    finally:
        for s in made:
            s.close()
    assert found == (str(project / ".git" / "fsmonitor--daemon.ipc"), str(project / "top.sock"))


def ctx(root: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Context:
    return Context(str(cwd or root), str(root), str(root.parent / "home"), env or {}, str(root.parent / "cache"), None)


def test_npm_phases_write_only_their_outputs(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"scripts": {"prepare": "husky"}}')
    (tmp_path / "yarn.lock").write_text("")
    found = ecosystems.phases(["npm", "install"], ctx(tmp_path))
    assert found is not None
    download, rebuild, prepare = found
    assert download.writable == ("node_modules/", "package.json", "yarn.lock", "package-lock.json")
    assert rebuild.writable == ("node_modules/",)
    assert prepare.writable is True
    (tmp_path / "npm-shrinkwrap.json").write_text("{}")
    found = ecosystems.phases(["npm", "ci"], ctx(tmp_path))
    assert found is not None and "package-lock.json" not in found[0].writable  # type: ignore[operator]
    found = ecosystems.phases(["yarn"], ctx(tmp_path))
    assert found is not None and found[0].writable == ("node_modules/", "package.json", "npm-shrinkwrap.json", "yarn.lock")


def test_npm_in_a_workspace_package_writes_its_own_and_the_roots_node_modules(tmp_path: Path) -> None:
    pkg = tmp_path / "packages" / "a"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text("{}")
    found = ecosystems.phases(["npm", "install"], ctx(tmp_path, cwd=pkg))
    assert found is not None
    assert found[0].writable == ("packages/a/node_modules/", "packages/a/package.json",
                                 "packages/a/package-lock.json", "node_modules/")


def test_cargo_writes_target_and_the_lockfile_of_its_workspace(tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_text("[workspace]\nmembers = ['a']\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Cargo.toml").write_text("[package]\nname='a'\n")
    found = ecosystems.phases(["cargo", "build"], ctx(tmp_path, cwd=tmp_path / "a"))
    assert found is not None and all(p.writable == ("target/", "Cargo.lock") for p in found)
    found = ecosystems.phases(["cargo", "build"], ctx(tmp_path, env={"CARGO_TARGET_DIR": str(tmp_path / "out")}))
    assert found is not None and found[1].writable == ("out/", "Cargo.lock")
    found = ecosystems.phases(["cargo", "build"], ctx(tmp_path, env={"CARGO_TARGET_DIR": "/elsewhere"}))
    assert found is not None and found[1].writable == ("Cargo.lock",)


def test_go_and_pip_outputs(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    found = ecosystems.phases(["go", "test", "./..."], ctx(tmp_path))
    assert found is not None and [p.writable for p in found] == [("go.mod", "go.sum"), ("go.sum",)]  # go.mod: red team 18
    found = ecosystems.phases(["go", "build", "-o", "bin/x", "."], ctx(tmp_path))
    assert found is not None and found[1].writable is True  # a new executable: see go.py
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x").write_text("")
    found = ecosystems.phases(["go", "build", "-o", "bin/x", "."], ctx(tmp_path))
    assert found is not None and found[1].writable == ("go.mod", "go.sum", "bin/x")
    found = ecosystems.phases(["pip", "install", "--target", "vendor", "requests"], ctx(tmp_path))
    assert found is not None and [p.writable for p in found] == [(), ("vendor/",)]
    found = ecosystems.phases(["pip", "wheel", "-e", "."], ctx(tmp_path))
    assert found is not None and found[1].writable is True


def test_staging_copies_back_and_leaves_nothing_when_untouched(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    pairs = [(str(tmp_path / "run" / "0-lock"), str(project / "lock")),
             (str(tmp_path / "run" / "1-sum"), str(project / "sum"))]
    made = outputs.stage(str(project), pairs)
    assert (project / "lock").read_bytes() == b"" and (project / "sum").exists()
    Path(pairs[0][0]).write_text('{"lockfileVersion": 3}\n')
    outputs.unstage(str(project), made)
    assert (project / "lock").read_text() == '{"lockfileVersion": 3}\n'
    assert not (project / "sum").exists()


def test_staging_never_writes_through_a_link_planted_at_the_output(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (project / "lock").symlink_to(victim)
    with pytest.raises(SandboxError):
        outputs.stage(str(project), [(str(tmp_path / "run" / "0-lock"), str(project / "lock"))])
    made = outputs.stage(str(project), [(str(tmp_path / "run" / "1-other"), str(project / "other"))])
    os.unlink(project / "other")
    (project / "other").symlink_to(victim)  # swapped while the step ran
    Path(made[0].source).write_text("evil")
    outputs.unstage(str(project), made)
    assert victim.read_text() == "keep"


def test_missing_output_directories_are_made_but_never_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    outputs.make_dirs(str(tmp_path / "p"), [str(tmp_path / "p" / "target" / "sub")])
    assert (tmp_path / "p" / "target" / "sub").is_dir()
    (tmp_path / "p" / "node_modules").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SandboxError):
        outputs.make_dirs(str(tmp_path / "p"), [str(tmp_path / "p" / "node_modules" / "x")])
    assert not (tmp_path / "elsewhere" / "x").exists()


def test_a_directory_on_a_staged_output_s_way_swapped_for_a_link_is_never_followed(tmp_path: Path) -> None:
    """Another sandbox writing the project swaps `gen/` for a link to a directory in HOME between
    the plan and the step (red team 6, Critical): staging must neither read the file there into
    the sandbox, nor make one there, nor write the step's output over it afterwards."""
    project = tmp_path / "p"
    (project / "gen").mkdir(parents=True)
    home = tmp_path / "home" / "secret"
    home.mkdir(parents=True)
    (home / "canary.txt").write_text("CANARY-SECRET")
    made = outputs.stage(str(project), [(str(tmp_path / "run" / "0-canary.txt"), str(project / "gen" / "canary.txt")),
                                        (str(tmp_path / "run" / "1-new.txt"), str(project / "gen" / "new.txt"))])
    (project / "gen").rename(project / "gen.was")
    (project / "gen").symlink_to(home)  # swapped while the step ran
    # The live control: by its path, the output is HOME's file now.
    assert (project / "gen" / "canary.txt").read_text() == "CANARY-SECRET"
    for p in made:
        Path(p.source).write_text("OVERWRITTEN-BY-SANDBOX")
    outputs.unstage(str(project), made)
    assert (home / "canary.txt").read_text() == "CANARY-SECRET"
    assert sorted(x.name for x in home.iterdir()) == ["canary.txt"]
    # Swapped before the step: nothing staged, nothing read from or made in HOME.
    with pytest.raises(SandboxError):
        outputs.stage(str(project), [(str(tmp_path / "run2" / "0-canary.txt"), str(project / "gen" / "canary.txt"))])
    with pytest.raises(SandboxError):
        outputs.stage(str(project), [(str(tmp_path / "run3" / "0-new.txt"), str(project / "gen" / "new.txt"))])
    assert (tmp_path / "run2" / "0-canary.txt").exists() is False
    assert sorted(x.name for x in home.iterdir()) == ["canary.txt"]
    with pytest.raises(SandboxError):
        outputs.make_dirs(str(project), [str(project / "gen" / "made")])
    assert sorted(x.name for x in home.iterdir()) == ["canary.txt"]


def _chain(top: Path, names: list[str], git: bool) -> None:
    fd = os.open(top, os.O_RDONLY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        if git:
            os.mkdir(".git", dir_fd=fd)
    finally:
        os.close(fd)


def test_a_tree_deeper_than_a_path_reaches_is_walked_for_git_entries(tmp_path: Path) -> None:
    """A `.git` 30 levels of 200-character names down (past PATH_MAX) is found, and the look
    again at what changed meanwhile reaches it too (by path, it failed every time: the plan then
    stopped as if the tree kept changing); so is one 600 levels down (red team 8 moved a
    repository there when the walk stopped at 512, and the step read its token)."""
    from sbox_shim import gitwalk

    root = tmp_path / "project"
    root.mkdir()
    _chain(root, ["d" * 200] * 30, True)
    _chain(root, ["e"] * 600, True)
    found = gitwalk.git_entries(str(root))
    assert found == tuple(sorted((str(root) + ("/" + "d" * 200) * 30 + "/.git", str(root) + "/e" * 600 + "/.git")))
    assert tree.inspect(str(root), True).gits == found


def test_a_tree_deeper_than_the_walk_can_go_stops_the_plan(tmp_path: Path) -> None:
    """Deeper than the open-files limit lets the walk hold directories open (a hard limit of 400
    here, in a process of its own), the plan stops rather than plan without what lies below. (Not
    deeper: pytest's own clean-up of its temporary directories recurses a frame per level.)"""
    import subprocess
    import sys

    root = tmp_path / "project"
    root.mkdir()
    _chain(root, ["e"] * 300, True)
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))\n"
            "from sbox_shim import tree\n"
            "from sbox_shim.errors import UsageError\n"
            "try:\n    tree.inspect(sys.argv[1], True)\nexcept UsageError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert "deeper than 272 levels" in out.stdout and "nothing ran" in out.stdout, (out.stdout, out.stderr)
    # The control: with the machine's own limit, the same tree is walked, its `.git` found.
    assert tree.inspect(str(root), True).gits == (str(root) + "/e" * 300 + "/.git",)


def test_pins_are_the_directories_on_the_way_to_each_repository() -> None:
    """Below a writable top, each directory down to a repository's own (its `.git` excluded),
    none inside a read-only target, none outside the top; `pinned` finds them again in a step."""
    gits = ["/p/.git", "/p/vendor/lib/.git", "/p/vendor/lib/sub/.git", "/p/node_modules/a/b/.git",
            "/p/keep/x/.git", "/q/other/.git", "/p/m/.git/modules/s/.git"]
    pins = layout.pins("/p", gits, readonly=["/p/keep"])
    assert pins == ["/p/vendor", "/p/vendor/lib", "/p/vendor/lib/sub", "/p/node_modules",
                    "/p/node_modules/a", "/p/node_modules/a/b", "/p/m"]
    assert layout.pins("/p/node_modules/", gits) == ["/p/node_modules/a", "/p/node_modules/a/b"]
    mounts = [Mount("/p", "/p", readonly=False)] + [Mount(p, p, readonly=False) for p in pins[:2]] + [
        Mount("/p/vendor/lib/.git", "/p/vendor/lib/.git"), Mount("/c", "/c", readonly=False, kind="cache")]
    assert layout.pinned(mounts, "/p") == ["vendor", "vendor/lib"]
    # a writable part of a read-only project is not a pin
    assert layout.pinned([Mount("/p", "/p"), Mount("/p/node_modules", "/p/node_modules", readonly=False)], "/p") == []


def test_a_writable_layout_pins_the_way_to_each_repository(project: Path) -> None:
    (project / "vendor" / "lib" / ".git").mkdir(parents=True)
    whole = layout.project_layout(str(project), True, str(project / "sbox.yaml"),
                                  tree.inspect(str(project), True), "/r")
    pinned = layout.pinned(whole.mounts, str(project))
    assert "vendor" in pinned and "vendor/lib" in pinned
    # the pins come after the project's own bind, so they are mounted on top of it
    targets = [m.target for m in whole.mounts]
    assert targets.index(str(project)) < targets.index(str(project / "vendor"))
    assert targets.index(str(project / "vendor/lib")) < targets.index(str(project / "vendor/lib/.git"))


def test_a_writable_bind_a_phase_adds_in_the_project_pins_its_repositories_too(project: Path) -> None:
    """pip's install phase binds an in-project `.venv` writable: the way to `.venv/src/foo` is
    pinned and its `.git` read-only, as in a writable part of the project (red team 13); a
    read-only bind, one outside the project and the project itself get nothing."""
    (project / ".venv" / "src" / "foo" / ".git").mkdir(parents=True)
    (project / "vendor" / "lib" / ".git").mkdir(parents=True)
    venv = str(project / ".venv")
    inspected = tree.inspect(str(project), (), every=True)
    phase = [Mount(venv, venv, readonly=False), Mount(venv + "/pyvenv.cfg", venv + "/pyvenv.cfg"),
             Mount("/elsewhere", "/elsewhere", readonly=False), Mount(str(project / "vendor"), str(project / "vendor"))]
    got = layout.phase_parts(str(project), phase, inspected, str(project / "sbox.yaml"))
    assert got == [Mount(venv + "/src", venv + "/src", readonly=False),
                   Mount(venv + "/src/foo", venv + "/src/foo", readonly=False),
                   Mount(venv + "/src/foo/.git", venv + "/src/foo/.git")]
    assert layout.pinned([Mount(str(project), str(project)), *phase, *got], str(project)) == [".venv/src", ".venv/src/foo"]


def test_a_project_that_is_a_venv_keeps_what_writable_true_keeps_in_pip_s_install_phase(project: Path) -> None:
    """`python3 -m venv .` in the project: pip's install phase binds the whole project writable.
    Its repositories are pinned and their `.git` read-only, and sbox.yaml stays read-only, as
    under `writable: true` (red team 14: the phase moved `src/foo` and edited sbox.yaml)."""
    (project / "src" / "foo" / ".git").mkdir(parents=True)
    (project / "sbox.yaml").write_text("version: 1\n")
    root = str(project)
    inspected = tree.inspect(root, (), every=True)
    got = layout.phase_parts(root, [Mount(root, root, readonly=False)], inspected, str(project / "sbox.yaml"))
    assert Mount(root + "/src", root + "/src", readonly=False) in got
    assert Mount(root + "/src/foo", root + "/src/foo", readonly=False) in got
    assert Mount(root + "/src/foo/.git", root + "/src/foo/.git") in got and Mount(root + "/.git", root + "/.git") in got
    assert Mount(root + "/sbox.yaml", root + "/sbox.yaml") in got
