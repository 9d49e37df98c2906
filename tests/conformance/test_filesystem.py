"""What the sandbox may write: the project (when writable) and throwaway space, nothing else."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import PY, WRITE, Runs, marker, profile, project, verdicts as _verdicts

PROTECTED_DIRS = (".git", ".github", ".vscode", ".idea", ".claude")

def test_read_only_project_cannot_be_written(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=False))
    (root / "package.json").write_text("{}\n")
    targets = [str(root / "new-file"), str(root / "package.json"), str(root / "sub" / "file")]
    result = runs.run(root, PY, "-c", WRITE, *targets)
    assert result.returncode == 0, result.stderr
    assert set(_verdicts(result.stdout).values()) == {"DENIED"}, result.stdout
    assert not (root / "new-file").exists() and not (root / "sub").exists()
    assert (root / "package.json").read_text() == "{}\n"


def test_writable_project_is_written_as_the_invoking_user(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=True))
    target = root / "node_modules" / "left-pad" / "index.js"
    result = runs.run(root, PY, "-c", WRITE, str(target))
    assert _verdicts(result.stdout) == {str(target): "WROTE"}, result.stdout + result.stderr
    assert target.read_text() == "written from the sandbox\n"
    assert (target.stat().st_uid, target.stat().st_gid) == (os.getuid(), os.getgid())


def test_protected_paths_stay_read_only_in_a_writable_project(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=True))
    config_before = (root / "sbox.yaml").read_text()
    for name in PROTECTED_DIRS:
        (root / name).mkdir()
        (root / name / "existing").write_text("original\n")
    targets = [str(root / "sbox.yaml")]
    for name in PROTECTED_DIRS:
        targets += [str(root / name / "existing"), str(root / name / "planted")]
    targets.append(str(root / ".git" / "hooks" / "post-checkout"))
    result = runs.run(root, PY, "-c", WRITE, *targets)
    verdicts = _verdicts(result.stdout)
    assert verdicts == {t: "DENIED" for t in targets}, result.stdout + result.stderr
    assert (root / "sbox.yaml").read_text() == config_before
    for name in PROTECTED_DIRS:
        assert sorted(p.name for p in (root / name).iterdir()) == ["existing"]
        assert (root / name / "existing").read_text() == "original\n"


def test_protected_directories_cannot_be_replaced(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=True))
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    script = ("import os, shutil\n"
              "for op in (lambda: os.rename('.git', 'moved'), lambda: shutil.rmtree('.git'),"
              " lambda: os.rename('sbox.yaml', 'x.yaml'), lambda: os.unlink('sbox.yaml')):\n"
              "    try: op(); print('DID')\n"
              "    except OSError as e: print('DENIED', e.strerror)\n")
    result = runs.run(root, PY, "-c", script)
    assert "DID" not in result.stdout, result.stdout
    assert (root / ".git" / "config").read_text() == "[core]\n"
    assert (root / "sbox.yaml").exists()


@pytest.mark.parametrize("writable", [True, False])
def test_nothing_outside_the_project_reaches_the_host(runs: Runs, tmp_path: Path, writable: bool) -> None:
    root = project(tmp_path, profile(writable=writable))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "existing").write_text("host data\n")
    tag = marker()
    targets = [str(outside / "planted"), str(outside / "existing"), f"/{tag}", f"/usr/{tag}",
               f"/etc/{tag}", str(root.parent / f"{tag}-sibling")]
    result = runs.run(root, PY, "-c", WRITE + "print(open(%r).read())" % str(outside / "existing"), *targets)
    verdicts = _verdicts(result.stdout)
    for target in (f"/{tag}", f"/usr/{tag}", f"/etc/{tag}"):
        assert verdicts[target] == "DENIED", result.stdout
    assert "host data" not in result.stdout  # not mounted: the host's file is not even readable
    assert sorted(p.name for p in outside.iterdir()) == ["existing"]
    assert (outside / "existing").read_text() == "host data\n"
    for target in targets[2:]:
        assert not os.path.exists(target), target


def test_home_is_empty_writable_and_thrown_away(runs: Runs, tmp_path: Path, fake_home: Path) -> None:
    (fake_home / ".npmrc").write_text("//registry.npmjs.org/:_authToken=npm_CANARYHOMETOKEN\n")
    (fake_home / ".ssh").mkdir()
    (fake_home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY----- CANARYKEY\n")
    root = project(tmp_path)
    script = (
        "import os\n"
        "home = os.environ['HOME']\n"
        "print('HOME', home)\n"
        "print('LISTING', sorted(os.listdir(home)))\n"
        "for p in ('.npmrc', '.ssh/id_rsa'):\n"
        "    try: print('READ', open(os.path.join(home, p)).read())\n"
        "    except OSError as e: print('UNREADABLE', p, e.strerror)\n"
        "open(os.path.join(home, 'scratch'), 'w').write('x')\n"
        "print('LISTING-AFTER', sorted(os.listdir(home)))\n"
    )
    result = runs.run(root, PY, "-c", script)
    assert result.returncode == 0, result.stderr
    assert f"HOME {fake_home}" in result.stdout
    assert "LISTING []" in result.stdout
    assert "LISTING-AFTER ['scratch']" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr
    assert not (fake_home / "scratch").exists()
    assert sorted(p.name for p in fake_home.iterdir()) == [".npmrc", ".ssh"]


def test_scratch_space_is_writable_and_private(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(writable=False))
    tag = marker()
    result = runs.run(root, "sh", "-c", f"echo x > /tmp/{tag} && echo x > /var/tmp/{tag} && echo x > /dev/shm/{tag}"
                                       " && ls /tmp /var/tmp /dev/shm")
    assert result.returncode == 0, result.stderr
    assert not any(os.path.exists(f"{d}/{tag}") for d in ("/tmp", "/var/tmp", "/dev/shm"))


def test_host_secrets_locations_are_absent(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    paths = ["/run", "/var/run/docker.sock", "/run/docker.sock", "/root/.ssh", "/etc/shadow"]
    script = "import os, sys\nfor p in sys.argv[1:]: print(p, os.path.exists(p) and bool(os.listdir(p) if os.path.isdir(p) else True))"
    result = runs.run(root, PY, "-c", script, *paths)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert line.endswith("False"), result.stdout
