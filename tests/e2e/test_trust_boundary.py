"""Issue 9, the trust boundary: opt-in files, protected links, a config in HOME and files that
project files name. Each attack is planted for real by a sandboxed `sbox run` (as an install
script would), then the NEXT sbox command is checked on the host: exit 2, one line per file
with the remedy, nothing run, no canary read. Each has its legit twin: the same file written
by the user and trusted with `sbox trust` works as before.
"""
from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest
from support.boundary import Canary, Sbox, config, refused

HOST_MODE = "version: 1\nprofiles: {default: {mode: host}}\n"


@pytest.fixture
def sbox(sbox_bin: str) -> Sbox:
    return Sbox(sbox_bin)


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    """A secret outside every project: a host-mode run could read it, a sandbox cannot."""
    return Canary.plant(tmp_path / "secrets" / "token.txt")


# ---------------------------------------------------------------- 1. new or nested opt-in files


def test_nested_opt_in_planted_by_a_sandbox_is_refused(tmp_path: Path, backend: str, sbox: Sbox,
                                                       canary: Canary) -> None:
    root = tmp_path / "proj"
    config(root, backend)
    web = root / "packages" / "web"
    web.mkdir(parents=True)
    planted = sbox.run(root, "sh", "-c", f"printf '{HOST_MODE}' > packages/web/.sbox.yaml")
    assert planted.returncode == 0, planted.stderr
    # a nested project's config is the host's to make: the guard quarantines it at once ...
    line = [ln for ln in planted.stderr.splitlines() if "quarantined packages/web/.sbox.yaml (created" in ln]
    assert line and not (web / ".sbox.yaml").exists(), planted.stderr
    # ... and put back by the user (restored from the quarantine), it is refused until trusted
    assert sbox(root, *line[0].split("restore: ", 1)[1].split()[1:]).returncode == 0
    assert "mode: host" in (web / ".sbox.yaml").read_text()

    result = sbox.run(web, "sh", "-c", f"cat {canary.path} > leak")
    refused(result, web / ".sbox.yaml")
    assert not (web / "leak").exists()
    canary.assert_unread(result.stdout, result.stderr, trees=[root])


def test_nested_opt_in_written_and_trusted_by_the_user_runs_on_the_host(tmp_path: Path, backend: str,
                                                                        sbox: Sbox, canary: Canary) -> None:
    root = tmp_path / "proj"
    config(root, backend)
    web = root / "packages" / "web"
    web.mkdir(parents=True)
    (web / ".sbox.yaml").write_text(HOST_MODE)
    sbox.trust(web, ".sbox.yaml")
    result = sbox.run(web, "sh", "-c", f"cat {canary.path} > leak")
    assert result.returncode == 0, result.stderr
    assert (web / "leak").read_text().strip() == canary.token  # it ran on the host, as configured


def test_second_opt_in_beside_the_trusted_one_is_a_config_error(tmp_path: Path, backend: str, sbox: Sbox,
                                                                canary: Canary) -> None:
    root = tmp_path / "proj"
    config(root, backend, name=".sbox.yaml")
    sbox.plant(root, f"printf '{HOST_MODE}' > sbox.yaml")
    # Planted by a sandbox, it does not even survive the run: the persistence guard moves it out.
    assert not (root / "sbox.yaml").exists()
    (root / "sbox.yaml").write_text(HOST_MODE)  # as if it had (a host process wrote it, say)

    result = sbox.run(root, "sh", "-c", f"touch ran; cat {canary.path} > leak")
    refused(result, root / "sbox.yaml", words="both opt this directory in")
    assert not (root / "ran").exists() and not (root / "leak").exists()
    canary.assert_unread(result.stdout, result.stderr, trees=[root])


# ---------------------------------------------------------------- 2. links under protected names


def _link_target(kind: str, tmp_path: Path, fake_home: Path) -> tuple[Path, Canary]:
    if kind == "outside":  # "../home": a directory beside the project holding a secret
        return tmp_path / "outside", Canary.plant(tmp_path / "outside" / "secret.txt")
    return fake_home / ".ssh", Canary.plant(fake_home / ".ssh" / "id_ed25519")


@pytest.mark.parametrize("planted_by", ["sandbox", "host"])
@pytest.mark.parametrize("kind", ["outside", "home-ssh"])
def test_protected_name_planted_as_a_link_is_refused(tmp_path: Path, fake_home: Path, backend: str, sbox: Sbox,
                                                     kind: str, planted_by: str) -> None:
    root = tmp_path / "proj"
    config(root, backend)
    target, secret = _link_target(kind, tmp_path, fake_home)
    relative = os.path.relpath(target, root)
    if planted_by == "sandbox":
        sbox.plant(root, f"ln -s {relative} .claude")
        # The persistence guard moves a protected name the sandbox created out of the project at
        # once; put it back as a host process could, to show the mount refusal on its own.
        assert not os.path.lexists(root / ".claude")
    os.symlink(relative, root / ".claude")
    assert os.readlink(root / ".claude") == relative

    result = sbox.run(root, "sh", "-c", f"cat .claude/{secret.path.name}; ls -la .claude/")
    refused(result, root / ".claude", words="symbolic link")
    secret.assert_unread(result.stdout, result.stderr, trees=[root])


def test_protected_name_as_a_real_directory_still_works(tmp_path: Path, backend: str, sbox: Sbox) -> None:
    """The twin: a user's own .claude directory is mounted read-only, as before."""
    root = tmp_path / "proj"
    config(root, backend)
    (root / ".claude").mkdir()
    (root / ".claude" / "settings.json").write_text("{}\n")
    result = sbox.run(root, "sh", "-c", "cat .claude/settings.json; touch .claude/x 2>/dev/null || echo RO")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["{}", "RO"]


# ---------------------------------------------------------------- 6. a config in HOME


def test_config_in_home_is_refused_trusted_or_not(fake_home: Path, backend: str, sbox: Sbox) -> None:
    secret = Canary.plant(fake_home / ".ssh" / "id_ed25519")
    cwd = fake_home / "proj"
    cwd.mkdir()
    home_config = fake_home / "sbox.yaml"
    home_config.write_text(f"version: 1\nbackend: {backend}\n")
    command = ("sh", "-c", f"cat {secret.path}; touch {fake_home}/ran")

    result = sbox.run(cwd, *command)
    refused(result, home_config)
    secret.assert_unread(result.stdout, result.stderr)

    sbox.trust(fake_home, home_config)
    result = sbox.run(cwd, *command)
    refused(result, home_config, words="HOME")
    secret.assert_unread(result.stdout, result.stderr)
    assert not (fake_home / "ran").exists()


# ---------------------------------------------------------------- 8. files named by project files


def _limited() -> None:
    """Bound sbox's memory so that an unbounded read fails fast instead of eating the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("named", ["fifo", "/dev/zero"])
def test_requirements_that_are_not_regular_files_are_refused_quickly(tmp_path: Path, sbox: Sbox,
                                                                     named: str) -> None:
    """A project's requirements file names a FIFO or /dev/zero (`-r`): sbox reads neither, hangs on
    neither and does not exhaust its memory. A FIFO in the project is itself an input sbox cannot
    read: refused in one line. Named by a trusted project file, /dev/zero is simply not read."""
    root = tmp_path / "proj"
    config(root, "bwrap")
    requirements = root / "requirements.txt"
    if named == "fifo":
        os.mkfifo(requirements)
        command = ["run", "--", "pip", "install", "--target", "vendor", "-r", str(requirements)]
    else:
        requirements.write_text("-r /dev/zero\n")
        sbox.trust(root, requirements)
        command = ["plan", "--", "pip", "install", "--target", "vendor", "-r", str(requirements)]  # no venv
    try:
        result = subprocess.run([sbox.bin, *command], cwd=root, env=sbox.env, capture_output=True, text=True,
                                timeout=60, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sbox hung on `pip install -r {named}`")
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr
    if named == "fifo":
        refused(result, requirements, words="not a regular file")
    else:
        assert result.returncode == 0, result.stderr
