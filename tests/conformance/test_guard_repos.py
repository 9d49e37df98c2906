"""The persistence guard beyond the project's top (every backend), against a red team's finds: a
repository nested in the project and a package directory of its own get the top's watch (their
Makefile, editors' and agents' settings, their own git hooks directory), husky's layout has its
hooks one directory above `core.hooksPath`, and names the host runs in other spellings (`.pdbrc`,
just's file in any case, a `.code-workspace`) are watched too. Each planted file is proven to run
on the host when sbox is not there (the control), and quarantined when it is."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.trust import trust

from .helpers import PY, Runs
from .test_persistence_guard import git, husky_project

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")


def _commit(repo: Path) -> None:
    """The user's next `git commit` there, on the host (hooks run)."""
    (repo / "f.txt").write_text(str(os.urandom(4).hex()))
    subprocess.run(["git", "add", "f.txt"], cwd=repo, env=GIT_ENV, capture_output=True, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=repo, env=GIT_ENV, capture_output=True, timeout=60)


def _hook(marker: Path) -> str:
    return f"#!/bin/sh\\ntouch {marker}\\n"


def test_husky_in_a_subdirectory_has_its_hooks_above_its_hooks_path(runs: Runs, tmp_path: Path) -> None:
    """husky's monorepo layout: `core.hooksPath = frontend/.husky/_`, whose wrappers run
    `frontend/.husky/<hook>`. A step that writes `frontend/.husky/pre-commit` (a package's bin the
    project's own `prepare` runs) has it quarantined; the control, written on the host, runs."""
    root = husky_project(tmp_path)
    git(root, "config", "core.hooksPath", "frontend/.husky/_")
    husky = root / "frontend" / ".husky" / "_"
    husky.mkdir(parents=True)
    (husky / "h").write_text('#!/bin/sh\nn=$(basename "$0")\ns=$(dirname "$(dirname "$0")")/$n\n'
                             '[ -f "$s" ] && exec sh -e "$s" "$@"\nexit 0\n')
    (husky / "pre-commit").write_text('#!/bin/sh\n. "$(dirname "$0")/h"\n')
    for f in (husky / "h", husky / "pre-commit"):
        f.chmod(0o755)
    marker = tmp_path / "hook-ran"
    result = runs.run(root, "sh", "-c", f"printf '{_hook(marker)}' > frontend/.husky/pre-commit")
    assert result.returncode == 0, result.stderr
    assert "quarantined frontend/.husky/pre-commit (created by the sandbox" in result.stderr, result.stderr
    _commit(root)
    assert not marker.exists()
    (root / "frontend" / ".husky" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))  # control
    _commit(root)
    assert marker.exists()


def test_a_nested_repository_gets_the_watch_of_the_top(runs: Runs, tmp_path: Path) -> None:
    """`app/` is a repository of its own inside the project, with its own `core.hooksPath`: what a
    writable step plants there (its hooks, its Makefile, an editor's tasks) is quarantined."""
    root = husky_project(tmp_path)
    app = root / "app"
    app.mkdir()
    git(app, "init", "-q")
    git(app, "config", "core.hooksPath", "hooks")
    marker = tmp_path / "app-hook-ran"
    plant = (f"mkdir -p app/hooks app/.vscode && printf '{_hook(marker)}' > app/hooks/pre-commit && "
             "chmod +x app/hooks/pre-commit && printf 'all:\\n\\ttouch made\\n' > app/Makefile && "
             "echo '{}' > app/.vscode/tasks.json")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    for planted in ("app/hooks", "app/Makefile", "app/.vscode"):
        assert f"quarantined {planted}" in result.stderr, result.stderr
    _commit(app)
    assert not marker.exists()
    (app / "hooks").mkdir(exist_ok=True)  # control: the same hook put there on the host runs
    (app / "hooks" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))
    (app / "hooks" / "pre-commit").chmod(0o755)
    _commit(app)
    assert marker.exists()


def test_other_spellings_the_host_runs_are_watched_at_the_top(runs: Runs, tmp_path: Path) -> None:
    """`.pdbrc` (pdb runs it at the user's next `breakpoint()`), just's file in any case, and a
    VS Code workspace file are quarantined; the control shows pdb running a `.pdbrc` on the host."""
    root = husky_project(tmp_path)
    marker = tmp_path / "pdbrc-ran"
    rc = f"import pathlib; pathlib.Path({str(marker)!r}).touch()\\ncontinue"
    result = runs.run(root, "sh", "-c", f"printf '{rc}\\n' > .pdbrc && echo 'x:' > JUSTFILE && "
                                        "echo '{}' > team.code-workspace")
    assert result.returncode == 0, result.stderr
    for planted in (".pdbrc", "JUSTFILE", "team.code-workspace"):
        assert f"quarantined {planted} (created by the sandbox" in result.stderr, result.stderr
    script = root / "t.py"
    script.write_text("breakpoint()\n")
    subprocess.run([PY, str(script)], cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert not marker.exists()
    (root / ".pdbrc").write_text(rc.replace("\\n", "\n") + "\n")  # control: pdb runs it
    subprocess.run([PY, str(script)], cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert marker.exists()


def test_a_hard_link_cannot_change_what_the_quarantine_restores(runs: Runs, tmp_path: Path, sbox_bin: str) -> None:
    """The red team's chain: a step plants a Makefile with a hard link to it in node_modules; the
    Makefile is quarantined, and a later step writes through the link. The quarantine holds a copy
    of its own, so what it restores is what was quarantined; and a quarantined file whose bytes no
    longer match the manifest is not restored at all."""
    from .test_persistence_guard import quarantines

    root = husky_project(tmp_path)
    state = Path(os.environ["SBOX_STATE_DIR"])
    first = runs.run(root, "sh", "-c", "printf 'all:\\n\\t@echo benign\\n' > Makefile && ln Makefile node_modules/.m")
    assert first.returncode == 0 and "quarantined Makefile" in first.stderr, first.stderr
    ident = [q for q in quarantines(state) if any(e["path"] == "Makefile" for e in q["entries"])][-1]["id"]
    second = runs.run(root, "sh", "-c", "printf 'all:\\n\\t@touch PWNED\\n' > node_modules/.m")
    assert second.returncode == 0, second.stderr
    assert "PWNED" in (root / "node_modules" / ".m").read_text()  # the write went through (the attack ran)
    done = subprocess.run([sbox_bin, "quarantine", "restore", ident], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (root / "Makefile").read_text() == "all:\n\t@echo benign\n"
    # A quarantined file changed by any other means is refused, with the reason.
    third = runs.run(root, "sh", "-c", "mv Makefile Makefile.x; printf 'all:\\n' > Makefile")
    assert third.returncode == 0 and "quarantined Makefile" in third.stderr, third.stderr
    again = [q for q in quarantines(state) if any(e["path"] == "Makefile" for e in q["entries"])][-1]["id"]
    held = state / "quarantine" / again / "files" / "Makefile"
    held.write_text("all:\n\t@touch PWNED\n")
    (root / "Makefile.x").unlink()
    refused = subprocess.run([sbox_bin, "quarantine", "restore", again], capture_output=True, text=True)
    assert refused.returncode == 1 and "is not what was quarantined" in refused.stderr, refused.stderr
    assert not (root / "Makefile").exists() or "PWNED" not in (root / "Makefile").read_text()


def _planted_hook_is_held(runs: Runs, root: Path, hooks: str, repo: Path, marker: Path) -> None:
    """A pre-commit hook a step writes in `hooks` (relative to `root`; made if missing) is
    quarantined and does not run at `repo`'s next commit; the same hook made on the host does (the
    control)."""
    result = runs.run(root, "sh", "-c", f"mkdir -p {hooks} && printf '{_hook(marker)}' > {hooks}/pre-commit && "
                                        f"chmod +x {hooks}/pre-commit")
    assert result.returncode == 0, result.stderr
    assert f"quarantined {hooks}/pre-commit (created by the sandbox" in result.stderr, result.stderr
    _commit(repo)
    assert not marker.exists()
    hook = root / hooks / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(_hook(marker).replace("\\n", "\n"))
    hook.chmod(0o755)
    _commit(repo)
    assert marker.exists()


def test_a_relative_hooks_path_in_the_global_git_config_is_watched(runs: Runs, tmp_path: Path) -> None:
    """`core.hooksPath = git-hooks` in the user's global config names `git-hooks/` in every
    repository that sets none: what a step plants there is quarantined. The control: the same hook
    written on the host runs at the next commit under that global config."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    config = tmp_path / "gitconfig"
    config.write_text("[core]\n\thooksPath = git-hooks\n")
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(config))
    marker = tmp_path / "global-hook-ran"
    result = runs.run(root, "sh", "-c", f"mkdir git-hooks && printf '{_hook(marker)}' > git-hooks/pre-commit && "
                                        "chmod +x git-hooks/pre-commit", env=env)
    assert result.returncode == 0, result.stderr
    assert "quarantined git-hooks/pre-commit (created by the sandbox" in result.stderr, result.stderr
    commit_env = dict(GIT_ENV, GIT_CONFIG_GLOBAL=str(config))

    def commit() -> None:
        (root / "f.txt").write_text(os.urandom(4).hex())
        subprocess.run(["git", "add", "f.txt"], cwd=root, env=commit_env, capture_output=True, check=True)
        subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=root, env=commit_env, capture_output=True, timeout=60)

    commit()
    assert not marker.exists()
    (root / "git-hooks").mkdir()  # control
    (root / "git-hooks" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))
    (root / "git-hooks" / "pre-commit").chmod(0o755)
    commit()
    assert marker.exists()


def test_a_git_directory_named_by_a_git_file_stays_read_only(runs: Runs, tmp_path: Path) -> None:
    """A `.git` *file* (`gitdir: ...`: a bare repository with worktrees, `--separate-git-dir`)
    names a git directory that git runs the hooks and config of: when it lies in the project, it
    is read-only like a `.git` directory, at the top and nested. The control: the same hooks put
    there on the host run at the next commit."""
    from .helpers import project
    from support.trust import trust

    root = project(tmp_path)
    trust(root / "sbox.yaml")
    subprocess.run(["git", "init", "-q", "--bare", ".bare"], cwd=root, env=GIT_ENV, check=True)
    subprocess.run(["git", "config", "--file", ".bare/config", "core.bare", "false"], cwd=root, check=True)
    (root / ".git").write_text("gitdir: ./.bare\n")
    (root / "repos").mkdir()
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={root / 'repos' / 'sub'}", "sub"], cwd=root,
                   env=GIT_ENV, check=True)
    marker = tmp_path / "gitdir-hook-ran"
    plant = " ; ".join(f"printf '{_hook(marker)}' > {d}/hooks/pre-commit ; chmod +x {d}/hooks/pre-commit"
                       for d in (".bare", "repos/sub"))
    result = runs.run(root, "sh", "-c", plant)
    assert result.stderr.count("Read-only file system") == 2, result.stderr
    for repo in (root, root / "sub"):
        _commit(repo)
    assert not marker.exists()
    for d in (root / ".bare", root / "repos" / "sub"):  # control: the hook written on the host runs
        (d / "hooks" / "pre-commit").write_text(_hook(marker).replace("\\n", "\n"))
        (d / "hooks" / "pre-commit").chmod(0o755)
    _commit(root / "sub")
    assert marker.exists()


def test_the_enclosing_repository_s_hooks_path_into_the_project_is_watched(runs: Runs, tmp_path: Path) -> None:
    """A monorepo whose `sbox.yaml` is in `frontend/`: the repository above it sets
    `core.hooksPath = frontend/tools/hooks`. What a step plants there is quarantined; the control
    (written on the host) runs at the monorepo's next commit."""
    from support.trust import trust

    mono = tmp_path / "mono"
    root = mono / "frontend"
    (root / "tools" / "hooks").mkdir(parents=True)
    (root / "sbox.yaml").write_text("version: 1\n")
    trust(root / "sbox.yaml")
    git(mono, "init", "-q")
    git(mono, "config", "core.hooksPath", "frontend/tools/hooks")
    _planted_hook_is_held(runs, root, "tools/hooks", mono, tmp_path / "mono-hook-ran")


def test_a_global_hooks_path_set_through_an_include_is_watched(runs: Runs, tmp_path: Path) -> None:
    """`~/.gitconfig` includes a file that sets `core.hooksPath = .hooks`: what a step plants in
    `.hooks/` is quarantined."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    (tmp_path / "gitconfig.d").mkdir()
    (tmp_path / "gitconfig.d" / "h").write_text("[core]\n\thooksPath = .hooks\n")
    config = tmp_path / "gitconfig"
    config.write_text("[include]\n\tpath = gitconfig.d/h\n")
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(config))
    result = runs.run(root, "sh", "-c", "mkdir .hooks && printf '#!/bin/sh\\n' > .hooks/pre-commit", env=env)
    assert result.returncode == 0, result.stderr
    assert "quarantined .hooks/pre-commit (created by the sandbox" in result.stderr, result.stderr


def _planted_hook_runs(root: Path, rel: str, runs: Runs, tmp_path: Path, repo: Path | None = None,
                       env: dict[str, str] | None = None) -> tuple[str, bool]:
    """A step writes a hook to `rel` (appended, as to a tracked script); (its stderr, whether the
    host's next commit in `repo` ran it)."""
    marker = tmp_path / f"ran-{rel.replace('/', '-')}"
    result = runs.run(root, "sh", "-c", f"mkdir -p $(dirname {rel}) && printf '\\ntouch {marker}\\n' >> {rel} && "
                                        f"chmod +x {rel}", env=env)
    _commit(repo or root)
    return result.stderr, marker.exists()


def test_hooks_linked_from_the_git_directory_into_the_project_are_watched(runs: Runs, tmp_path: Path) -> None:
    """`.git/hooks/pre-commit -> ../../tools/hooks/pre-commit` (a hook kept in the tree), and
    `.git/hooks -> ../githooks`: git runs what the links reach, so a step's change there is
    quarantined and rolled back. The control: the same change made on the host runs."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    (root / "tools" / "hooks").mkdir(parents=True)
    (root / "tools" / "hooks" / "pre-commit").write_text("#!/bin/sh\necho lint ok\n")
    (root / "tools" / "hooks" / "pre-commit").chmod(0o755)
    (root / ".git" / "hooks" / "pre-commit").symlink_to("../../tools/hooks/pre-commit")
    err, ran = _planted_hook_runs(root, "tools/hooks/pre-commit", runs, tmp_path)
    assert "quarantined tools/hooks/pre-commit (changed by the sandbox" in err, err
    assert not ran
    assert (root / "tools" / "hooks" / "pre-commit").read_text() == "#!/bin/sh\necho lint ok\n"
    (tmp_path / "second").mkdir()
    other = husky_project(tmp_path / "second")
    git(other, "config", "--unset", "core.hooksPath")
    (other / "githooks").mkdir()
    subprocess.run(["rm", "-rf", str(other / ".git" / "hooks")], check=True)
    (other / ".git" / "hooks").symlink_to("../githooks")
    err, ran = _planted_hook_runs(other, "githooks/pre-commit", runs, tmp_path)
    assert "quarantined githooks/pre-commit (created by the sandbox" in err, err
    assert not ran
    with open(other / "githooks" / "pre-commit", "w") as f:  # control
        f.write(f"#!/bin/sh\ntouch {tmp_path / 'ran-githooks-pre-commit'}\n")
    (other / "githooks" / "pre-commit").chmod(0o755)
    _commit(other)
    assert (tmp_path / "ran-githooks-pre-commit").exists()


def test_a_git_directory_reached_through_a_link_stays_read_only(runs: Runs, tmp_path: Path) -> None:
    """`.git` says `gitdir: g2`, and `g2 -> gd.git`: the real git directory is read-only."""
    from .helpers import project
    from support.trust import trust

    root = project(tmp_path)
    trust(root / "sbox.yaml")
    subprocess.run(["git", "init", "-q", "--bare", "gd.git"], cwd=root, env=GIT_ENV, check=True)
    subprocess.run(["git", "config", "--file", "gd.git/config", "core.bare", "false"], cwd=root, check=True)
    (root / "g2").symlink_to("gd.git")
    (root / ".git").write_text("gitdir: g2\n")
    result = runs.run(root, "sh", "-c", "printf '#!/bin/sh\\n' > gd.git/hooks/pre-commit")
    assert "Read-only file system" in result.stderr, result.stderr


def test_git_config_as_git_reads_it(runs: Runs, tmp_path: Path) -> None:
    """`[core] hooksPath = scripts/hooks` on one line, with a byte-order mark before it: the hooks
    directory is read-only like any other; a global `[core]hooksPath=hk` continued by a backslash,
    named by GIT_CONFIG_SYSTEM, is watched."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    (root / "scripts" / "hooks").mkdir(parents=True)
    config = root / ".git" / "config"
    config.write_text("\ufeff" + config.read_text() + "[core] hooksPath = scripts/hooks\n")
    result = runs.run(root, "sh", "-c", "printf '#!/bin/sh\\n' > scripts/hooks/pre-commit")
    assert "Read-only file system" in result.stderr, result.stderr
    config.write_text(config.read_text().replace("[core] hooksPath = scripts/hooks\n", ""))
    system = tmp_path / "system-gitconfig"
    system.write_text("[core]hooksPath=h\\\nk\n")
    env = dict(os.environ, GIT_CONFIG_SYSTEM=str(system))
    env.pop("GIT_CONFIG_NOSYSTEM", None)
    result = runs.run(root, "sh", "-c", "mkdir hk && printf '#!/bin/sh\\n' > hk/pre-commit", env=env)
    assert "quarantined hk/pre-commit (created by the sandbox" in result.stderr, result.stderr


def test_the_enclosing_repository_s_hooks_path_through_a_link_or_home_is_watched(runs: Runs, tmp_path: Path) -> None:
    from support.trust import trust

    mono = tmp_path / "mono"
    root = mono / "frontend"
    (root / "hk").mkdir(parents=True)
    (root / "sbox.yaml").write_text("version: 1\n")
    trust(root / "sbox.yaml")
    git(mono, "init", "-q")
    (mono / "hooks").symlink_to("frontend/hk")
    git(mono, "config", "core.hooksPath", "hooks")
    err, ran = _planted_hook_runs(root, "hk/pre-commit", runs, tmp_path, repo=mono)
    assert "quarantined hk/pre-commit (created by the sandbox" in err, err
    assert not ran


def test_watched_paths_reached_through_links_in_the_project_are_watched_where_they_land(runs: Runs,
                                                                                       tmp_path: Path) -> None:
    """git and make follow links: `core.hooksPath = githooks` with `githooks -> tools/hooks`, a
    `Makefile -> build/Makefile.real`, and an include under `conf -> settings`. What a step writes
    where they land (a hook appended to, a new hook, the real Makefile, the included config) is
    refused or quarantined, and the host's next commit, make and status run nothing planted."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    marker = tmp_path / "planted-ran"
    (root / "tools" / "hooks").mkdir(parents=True)
    (root / "tools" / "hooks" / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (root / "tools" / "hooks" / "pre-commit").chmod(0o755)
    (root / "githooks").symlink_to("tools/hooks")
    git(root, "config", "core.hooksPath", "githooks")
    (root / "build").mkdir()
    (root / "build" / "Makefile.real").write_text("all:\n\t@echo host\n")
    (root / "Makefile").symlink_to("build/Makefile.real")
    (root / "settings").mkdir()
    (root / "settings" / "git.inc").write_text("[user]\n\tname = t\n")
    (root / "conf").symlink_to("settings")
    git(root, "config", "include.path", "../conf/git.inc")
    plant = (f"printf 'touch {marker}\\n' >> tools/hooks/pre-commit; "
             f"printf '#!/bin/sh\\ntouch {marker}\\n' > tools/hooks/commit-msg; chmod +x tools/hooks/commit-msg; "
             f"printf 'all:\\n\\t@touch {marker}\\n' > build/Makefile.real; "
             f"printf '[core]\\n\\tfsmonitor = \"touch {marker}; false\"\\n' >> settings/git.inc; true")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined build/Makefile.real (changed by the sandbox; the previous version is back" in result.stderr, \
        result.stderr
    assert "quarantined settings/git.inc (changed by the sandbox; the previous version is back" in result.stderr, \
        result.stderr
    assert not (root / "tools" / "hooks" / "commit-msg").exists(), result.stderr
    assert (root / "tools" / "hooks" / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n", result.stderr
    _commit(root)
    subprocess.run(["git", "status"], cwd=root, env=GIT_ENV, capture_output=True, timeout=60)
    subprocess.run(["make", "-s", "-C", str(root)], capture_output=True, timeout=60)
    assert not marker.exists()
    with open(root / "build" / "Makefile.real", "w") as f:  # control: the same plant, on the host, runs
        f.write(f"all:\n\t@touch {marker}\n")
    subprocess.run(["make", "-s", "-C", str(root)], capture_output=True, timeout=60)
    assert marker.exists()


def test_rust_toolchain_and_cargo_configs_a_step_writes_are_quarantined(runs: Runs, tmp_path: Path) -> None:
    """rustup's proxies (`rustc`, `rustfmt`) run the toolchain a `rust-toolchain.toml`'s `path`
    names, and rust-analyzer runs `cargo check` with `.cargo/config.toml`'s rustc-wrapper: tools
    sbox's shims do not front. What a step writes there is quarantined; the control runs the
    planted toolchain through rustup on the host, where rustup is installed."""
    import shutil

    root = husky_project(tmp_path)
    marker = tmp_path / "toolchain-ran"
    plant = (f"mkdir -p .tc/bin .cargo && printf '#!/bin/sh\\ntouch {marker}\\n' > .tc/bin/rustc && "
             f"chmod +x .tc/bin/rustc && printf '[toolchain]\\npath = \"{root}/.tc\"\\n' > rust-toolchain.toml && "
             "printf '[build]\\nrustc-wrapper = \"./w\"\\n' > .cargo/config.toml")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined rust-toolchain.toml (created by the sandbox" in result.stderr, result.stderr
    assert "quarantined .cargo/config.toml (created by the sandbox" in result.stderr, result.stderr
    assert not (root / "rust-toolchain.toml").exists() and not (root / ".cargo" / "config.toml").exists()
    import pwd

    rustc = shutil.which("rustc") or os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".cargo", "bin", "rustc")
    if os.path.exists(rustc) and os.path.basename(os.path.realpath(rustc)) == "rustup":
        print("control: rustup's rustc proxy runs on the host")
        subprocess.run([rustc, "--version"], cwd=root, capture_output=True, timeout=60)
        assert not marker.exists()
        (root / "rust-toolchain.toml").write_text(f'[toolchain]\npath = "{root}/.tc"\n')  # control, on the host
        subprocess.run([rustc, "--version"], cwd=root, capture_output=True, timeout=60)
        assert marker.exists()


def test_a_link_on_the_way_to_a_watched_path_swapped_or_re_pointed_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    """The directory under a linked core.hooksPath swapped for a link out of the project, a link
    in the middle of a chain (`Makefile -> mk/Makefile`, `mk -> tools/mk`) re-pointed, and the
    directory a `.git/hooks` link leads into swapped for a link: each link is what is moved, and
    the host's next commit and make run nothing from elsewhere."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    marker = tmp_path / "elsewhere-ran"
    evil = tmp_path / "elsewhere"  # what a sandbox wrote in another project, say
    (evil / "hooks").mkdir(parents=True)
    for hook in ("pre-commit", "post-commit"):
        (evil / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (evil / "hooks" / hook).chmod(0o755)
    (evil / "Makefile").write_text(f"all:\n\t@touch {marker}\n")
    (root / "tools" / "hooks").mkdir(parents=True)
    (root / "githooks").symlink_to("tools/hooks")
    git(root, "config", "core.hooksPath", "githooks")
    (root / "tools" / "mk").mkdir()
    (root / "tools" / "mk" / "Makefile").write_text("all:\n\t@echo host\n")
    (root / "mk").symlink_to("tools/mk")
    (root / "Makefile").symlink_to("mk/Makefile")
    plant = f"rm mk && ln -s {evil} mk && mv tools tools.old && ln -s {evil} tools"
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    for moved in ("mk", "tools"):
        assert f"quarantined {moved} (changed by the sandbox; the previous version is back" in result.stderr, \
            result.stderr
    assert os.readlink(root / "mk") == "tools/mk" and not (root / "tools").is_symlink()
    _commit(root)
    subprocess.run(["make", "-s", "-C", str(root)], capture_output=True, timeout=60)
    assert not marker.exists()
    # a hook linked from the git directory into the project, its directory swapped for a link
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "sbox.yaml").write_text((root / "sbox.yaml").read_text())
    trust(other / "sbox.yaml")
    (other / "scripts").mkdir()
    (other / "scripts" / "post-commit").write_text("#!/bin/sh\nexit 0\n")
    (other / "scripts" / "post-commit").chmod(0o755)
    (other / ".git" / "hooks" / "post-commit").symlink_to("../../scripts/post-commit")
    result = runs.run(other, "sh", "-c", f"mv scripts scripts.old && ln -s {evil}/hooks scripts")
    assert result.returncode == 0, result.stderr
    assert "quarantined scripts (changed by the sandbox" in result.stderr, result.stderr
    _commit(other)
    assert not marker.exists()
    (other / "scripts" / "post-commit").unlink()  # control: the hook reached through a link, on the host, runs
    (other / "scripts" / "post-commit").symlink_to(evil / "hooks" / "post-commit")
    _commit(other)
    assert marker.exists()


def test_what_a_makefile_includes_is_watched(runs: Runs, tmp_path: Path) -> None:
    """make reads what a Makefile includes as its own rules (`$(shell …)` runs as it parses): an
    included file edited, an optional one (`-include local.mk`) created, and a file in a wildcard
    include's directory are quarantined; `make` on the host then runs nothing planted."""
    root = husky_project(tmp_path)
    marker = tmp_path / "include-ran"
    (root / "mk").mkdir()
    (root / "mk" / "a.mk").write_text("A := 1\n")
    (root / "conf").mkdir()
    (root / "mk" / "b.mk").write_text("B := 1\n")
    (root / "mk" / "c.mk").write_text("C := 1\n")
    (root / "mk" / "a.mk").write_text("A := 1\ninclude mk/b.mk\n")  # included by an included file
    (root / "Makefile").write_text("include mk/a.mk\n-include local.mk\ninclude $(wildcard conf/*.mk)\n"
                                   "include mk/c.mk# a comment right after the name\nall:\n\t@echo host\n")
    shell = f"$(shell touch {marker})"
    plant = (f"printf 'X := {shell}\\n' >> mk/a.mk && printf 'Y := {shell}\\n' > local.mk && "
             f"printf 'Z := {shell}\\n' > conf/z.mk && printf 'W := {shell}\\n' >> mk/b.mk && "
             f"printf 'V := {shell}\\n' >> mk/c.mk")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    for line in ("mk/a.mk (changed by the sandbox; the previous version is back", "local.mk (created by the sandbox",
                 "conf/z.mk (created by the sandbox", "mk/b.mk (changed by the sandbox", "mk/c.mk (changed by the sandbox"):
        assert f"quarantined {line}" in result.stderr, result.stderr
    subprocess.run(["make", "-s", "-C", str(root)], capture_output=True, timeout=60)
    assert not marker.exists()
    (root / "local.mk").write_text(f"Y := {shell}\n")  # control: the same include, on the host, runs
    subprocess.run(["make", "-s", "-C", str(root)], capture_output=True, timeout=60)
    assert marker.exists()


def test_a_hooks_path_set_for_one_worktree_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 16: `git config --worktree core.hooksPath githooks-local` (with
    extensions.worktreeConfig) keeps the setting in the git directory's `config.worktree`, which
    the guard did not read: a hook a step planted there ran at the host's next commit. The main
    worktree here; a linked one keeps it in `.git/worktrees/NAME/config.worktree`, read the same way."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    git(root, "config", "extensions.worktreeConfig", "true")
    git(root, "config", "--worktree", "core.hooksPath", "githooks-local")
    assert "githooks-local" in (root / ".git" / "config.worktree").read_text()
    _planted_hook_is_held(runs, root, "githooks-local", root, tmp_path / "worktree-hook-ran")


def test_a_program_a_git_setting_runs_from_the_project_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 16: `core.fsmonitor = tools/fsmon` makes the host's `git status` run the project's
    `tools/fsmon`; the guard watched core.hooksPath alone, so the program a step wrote there ran.
    The same for a filter's command, a shell alias (`!scripts/t.sh`) and a script given to an
    interpreter (`python3 tools/csv2txt.py`, red team 17)."""
    _programs_are_held(runs, tmp_path, {"core.fsmonitor": "tools/fsmon", "filter.x.clean": "./bin/clean %f",
                                        "alias.t": "!scripts/t.sh --fast",
                                        "diff.csv.textconv": "python3 tools/csv2txt.py"},  # red team 17
                       ("tools/fsmon", "bin/clean", "scripts/t.sh", "tools/csv2txt.py"))


def test_a_script_an_interpreter_runs_from_the_top_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 18: the script words without a `/` (`core.fsmonitor = sh fsmon`, `diff.csv.textconv
    = python3 csv2txt.py`, run from the top of the worktree), a module (`python3 -m conv`), and
    gpg.ssh.defaultKeyCommand, a key the guard did not read: a step wrote them, and the host's
    `git status`, `git diff` and `git commit -S` ran them."""
    _programs_are_held(runs, tmp_path, {"core.fsmonitor": "sh fsmon", "diff.csv.textconv": "python3 csv2txt.py",
                                        "diff.md.textconv": "python3 -m conv --plain",
                                        "gpg.ssh.defaultKeyCommand": "tools/keycmd.sh"},
                       ("fsmon", "csv2txt.py", "conv.py", "tools/keycmd.sh"))


def test_a_script_behind_a_wrapper_or_an_option_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 19: `nice sh fsmon`, `env sh x`, `python3 -X utf8 x.py`, `python3 -c 'import x'`:
    a word no parse can place is watched where the project holds a file of that name (here the
    project's own scripts, which a step rewrites), and a submodule's `update = !sh ../tools/upd`,
    run in the submodule's directory."""
    _programs_are_held(runs, tmp_path, {"core.fsmonitor": "nice sh fsmon", "diff.a.textconv": "env sh conv2",
                                        "diff.b.textconv": "python3 -X utf8 conv15.py",
                                        "diff.c.textconv": "python3 -c 'import conv18'",
                                        'submodule.lib.update': "!sh ../tools/upd",
                                        # red team 20: code, and a `cd`
                                        "diff.d.textconv": "python3 -c 'from tools.conv import main; main()'",
                                        "diff.e.textconv": "sh -c 'cd tools && exec ./conv3 \"$0\"'",
                                        # red team 21: a variable or substitution, env -C, PYTHONPATH,
                                        # a directory Python runs, Node's lookup, a glob
                                        "diff.f.textconv": 'sh "$PWD/tools/t1.sh"',
                                        "alias.lint": '!sh "$(git rev-parse --show-toplevel)/tools/lint.sh"',
                                        "diff.g.textconv": "env -C tools ./t2",
                                        "diff.h.textconv": "PYTHONPATH=tools python3 -m t5",
                                        "diff.i.textconv": "python3 tools/pkgdir",
                                        "diff.j.textconv": "node -e \"require('./tools/t3')\"",
                                        "diff.k.textconv": "sh tools/t[4]",
                                        "diff.l.textconv": "node tools/nbdiff"},  # red team 22: its `main`
                       ("fsmon", "conv2", "conv15.py", "conv18.py", "tools/upd", "tools/conv.py", "tools/conv3",
                        "tools/t1.sh", "tools/lint.sh", "tools/t2", "tools/t5.py", "tools/pkgdir/__main__.py",
                        "tools/t3.js", "tools/t4", "tools/nbdiff/cli.js"), existing=True,
                       files={"tools/nbdiff/package.json": '{"main": "cli.js"}\n'})


def _programs_are_held(runs: Runs, tmp_path: Path, settings: dict[str, str], planted: tuple[str, ...],
                       existing: bool = False, files: dict[str, str] | None = None) -> None:
    """A step writes `planted` (the first: what `core.fsmonitor` runs; with `existing`, the
    project's own first), which the repository's `settings` run from the project: each is
    quarantined, and the host's `git status` runs nothing; the control writes the first on the
    host, and `git status` runs it."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    for key, value in settings.items():
        git(root, "config", key, value)
    for path, text in [*((p, "exit 0\n") for p in (planted if existing else ())), *(files or {}).items()]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    marker = tmp_path / "fsmonitor-ran"
    plant = " && ".join(f"mkdir -p ./$(dirname {p}) && printf '{_hook(marker)}' > {p} && chmod +x {p}" for p in planted)
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    for path in planted:
        assert f"quarantined {path} ({'changed' if existing else 'created'} by the sandbox" in result.stderr, \
            result.stderr
    status = ["git", "status", "--short"]
    subprocess.run(status, cwd=root, env=GIT_ENV, capture_output=True, timeout=60)
    assert not marker.exists()
    (root / planted[0]).write_text(_hook(marker).replace("\\n", "\n"))  # the control, made on the host
    (root / planted[0]).chmod(0o755)
    subprocess.run(status, cwd=root, env=GIT_ENV, capture_output=True, timeout=60)
    assert marker.exists()


def test_a_filter_from_the_global_git_config_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 22: `nbstripout --install --global` sets `filter.nbstripout.clean = python -m
    nbstripout` in the user's global config; `-m` puts the worktree's top first on sys.path, so a
    step's `nbstripout.py` there ran at the host's `git status`, `git diff`, `git commit` (bwrap 8/8, docker 7/7). The
    programs the global config's settings run are watched as the repository's are."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    config = tmp_path / "gitconfig"
    config.write_text(f'[filter "nbstripout"]\n\tclean = "{sys.executable}" -m nbstripout\n')
    (root / ".gitattributes").write_text("*.ipynb filter=nbstripout\n")
    (root / "nb.ipynb").write_text("{}\n")
    subprocess.run(["git", "add", ".gitattributes", "nb.ipynb"], cwd=root, env=GIT_ENV, check=True, timeout=60)
    subprocess.run(["git", "commit", "-qm", "nb"], cwd=root, env=GIT_ENV, check=True, timeout=60)
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(config))
    marker = tmp_path / "filter-ran"
    plant = ["sh", "-c", f"echo \"import sys; open('{marker}', 'w').write('ran'); sys.stdout.write(sys.stdin.read())\" "
             "> nbstripout.py && echo '{ }' > nb.ipynb"]
    status = ["git", "diff", "--stat"]
    result = runs.run(root, *plant, env=env)
    assert result.returncode == 0, result.stderr
    assert "quarantined nbstripout.py (created by the sandbox" in result.stderr, result.stderr
    subprocess.run(status, cwd=root, env=dict(GIT_ENV, GIT_CONFIG_GLOBAL=str(config)), capture_output=True, timeout=60)
    assert not marker.exists()
    subprocess.run(plant, cwd=root, check=True, timeout=60)  # the control, made on the host
    subprocess.run(status, cwd=root, env=dict(GIT_ENV, GIT_CONFIG_GLOBAL=str(config)), capture_output=True, timeout=60)
    assert marker.exists()


def test_words_of_commands_that_run_no_script_are_not_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 22: `alias.t = !make test`, `!git log --oneline`, `core.pager = less -R`: a step
    building `test` or writing `log` had it quarantined, though no git setting runs it."""
    root = husky_project(tmp_path)
    git(root, "config", "--unset", "core.hooksPath")
    for key, value in (("alias.t", "!make test"), ("alias.l", "!git log --oneline"), ("core.pager", "less -R"),
                       ("alias.b", "!npm run build")):
        git(root, "config", key, value)
    for n in range(2):  # made, then made again over the first
        result = runs.run(root, "sh", "-c", f"echo {n} > test && echo {n} > log && echo {n} > less && echo {n} > build")
        assert result.returncode == 0 and "quarantined" not in result.stderr, result.stderr
        assert (root / "test").read_text() == f"{n}\n"
