"""A red team's finding against `sbox quarantine`: a step changes the Makefile (a legitimate host
edit made while it ran, say) and creates a nested `tools/vendor/.git` whose config runs
`core.fsmonitor` at the next `git status` there. `list` must show both, with what each is, and
`restore ID Makefile` must bring back the Makefile alone; `restore ID` with no PATH must not bring
back the `.git` unseen. The quarantine is made by the real guard on a real tree; list and restore
run through the installed `sbox`."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sbox_shim import guard
from sbox_shim.guard import quarantine
from sbox_shim.plan import Mount

GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
NESTED = "tools/vendor/.git"


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=dict(os.environ, **GIT_ENV), capture_output=True,
                          text=True, timeout=60)


def _quarantined(tmp_path: Path, state: Path | None = None) -> tuple[Path, Path, Path, str]:
    """The project, the state directory, the fsmonitor's marker, and the quarantine's id."""
    root, marker = tmp_path / "project", tmp_path / "fsmonitor-ran"
    state = state or tmp_path / "state"
    root.mkdir()
    (root / "Makefile").write_text("all:\n\techo old\n")
    mounts = [Mount(str(root), str(root), readonly=False)]
    snapshot = guard.before(str(root), mounts)
    # What happened during the step: the Makefile edited, a nested repository planted.
    (root / "Makefile").write_text("all:\n\techo edited on the host\n")
    (root / "tools" / "vendor").mkdir(parents=True)
    assert _git(root / "tools" / "vendor", "init", "-q").returncode == 0
    with open(root / NESTED / "config", "a") as f:
        f.write(f'[core]\n\tfsmonitor = "touch {marker}"\n')
    changes = guard.after(snapshot, mounts)
    assert {c.path for c in changes} == {"Makefile", NESTED}, changes
    moved = quarantine.quarantine(changes, snapshot, str(state), ["sh"])
    assert moved is not None
    assert (root / "Makefile").read_text() == "all:\n\techo old\n"  # the previous version put back
    assert not (root / NESTED).exists()
    return root, state, marker, moved[0]


def _sbox(sbox_bin: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sbox_bin, "quarantine", *args], env=dict(os.environ, SBOX_STATE_DIR=str(state)),
                          capture_output=True, text=True, timeout=60)


def _manifest(state: Path, ident: str) -> dict[str, object]:
    return json.loads((state / "quarantine" / ident / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_list_shows_every_entry_with_what_it_is(tmp_path: Path, sbox_bin: str) -> None:
    root, state, _, ident = _quarantined(tmp_path)
    listed = _sbox(sbox_bin, state, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(ident) and str(root) in lines[0]
    (makefile,) = [line for line in lines if line.startswith("  Makefile  ")]
    (nested,) = [line for line in lines if line.startswith(f"  {NESTED}  ")]
    assert "changed file, host-executed" in makefile and "!!" not in makefile
    assert "created dir, .git" in nested and "!! restored only when named" in nested


def test_restore_force_with_the_state_on_another_filesystem(tmp_path: Path, sbox_bin: str) -> None:
    """`--force` moves the file in the way into the quarantine: across filesystems too (red team 6,
    Low: it failed with "Invalid cross-device link" every time)."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        import pytest

        pytest.skip("no second filesystem (/dev/shm) here for sbox's state")
    state = Path(tempfile.mkdtemp(prefix="sbox-restore-state-", dir=shm))
    try:
        root, state, _, ident = _quarantined(tmp_path, state)
        done = _sbox(sbox_bin, state, "restore", ident, "Makefile", "--force")
        assert done.returncode == 0, done.stderr
        assert (root / "Makefile").read_text() == "all:\n\techo edited on the host\n"
        assert (state / "quarantine" / ident / "displaced" / "Makefile").read_text() == "all:\n\techo old\n"
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_restore_of_a_named_path_restores_that_path_alone(tmp_path: Path, sbox_bin: str) -> None:
    root, state, marker, ident = _quarantined(tmp_path)
    done = _sbox(sbox_bin, state, "restore", ident, "Makefile", "--force")
    assert done.returncode == 0, done.stderr
    assert (root / "Makefile").read_text() == "all:\n\techo edited on the host\n"
    assert (state / "quarantine" / ident / "displaced" / "Makefile").read_text() == "all:\n\techo old\n"
    assert not os.path.lexists(root / NESTED)
    # The host's next `git status` in the nested directory runs no fsmonitor ...
    _git(root / "tools" / "vendor", "status")
    assert not marker.exists()
    # ... the bookkeeping says what came back, and the quarantine is not "restored" yet.
    manifest = _manifest(state, ident)
    back = {e["path"]: e.get("restored", False) for e in manifest["entries"]}  # type: ignore[attr-defined]
    assert back == {"Makefile": True, NESTED: False} and not manifest.get("restored")
    listed = _sbox(sbox_bin, state, "list").stdout
    assert f"{ident} (partly restored)" in listed and "changed file, host-executed, restored]" in listed
    # The control: the same `.git` restored (by naming it) does run the fsmonitor.
    nested = _sbox(sbox_bin, state, "restore", ident, NESTED)
    assert nested.returncode == 0, nested.stderr
    _git(root / "tools" / "vendor", "status")
    assert marker.exists()
    assert _manifest(state, ident).get("restored") is True
    assert f"{ident} (restored)" in _sbox(sbox_bin, state, "list").stdout


def test_restore_without_paths_does_not_bring_back_a_nested_git_unnamed(tmp_path: Path, sbox_bin: str) -> None:
    root, state, marker, ident = _quarantined(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    refused = _sbox(sbox_bin, state, "restore", ident, "--force")
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1 and NESTED in refused.stderr, refused.stderr
    assert f"sbox quarantine restore {ident} Makefile --force" in refused.stderr  # the rest, without it
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing changed
    _git(root / "tools" / "vendor", "status")
    assert not marker.exists()


def test_a_path_not_in_the_quarantine_or_inside_a_moved_directory_is_refused(tmp_path: Path,
                                                                            sbox_bin: str) -> None:
    root, state, _, ident = _quarantined(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for path, says in [("README", f"sbox: README is not in quarantine {ident}"),
                       (f"{NESTED}/config", f"lies inside {NESTED}, quarantined whole; restore it by naming "
                                            f"{NESTED}: sbox quarantine restore {ident} {NESTED}")]:
        refused = _sbox(sbox_bin, state, "restore", ident, "Makefile", path, "--force")
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (root / "Makefile").read_text() == "all:\n\techo old\n"


def test_a_git_inside_a_moved_directory_marks_the_directory(tmp_path: Path, sbox_bin: str) -> None:
    """A created `.husky` (moved whole) holding `sub/.git`: `list` shows `.husky` and what it holds;
    `restore ID` refuses and names it; only `restore ID .husky` brings it back."""
    root, state = tmp_path / "project", tmp_path / "state"
    root.mkdir()
    mounts = [Mount(str(root), str(root), readonly=False)]
    snapshot = guard.before(str(root), mounts)
    (root / ".husky" / "sub").mkdir(parents=True)
    (root / ".husky" / "pre-commit").write_text("npm test\n")
    assert _git(root / ".husky" / "sub", "init", "-q").returncode == 0
    moved = quarantine.quarantine(guard.after(snapshot, mounts), snapshot, str(state), ["sh"])
    assert moved is not None and not (root / ".husky").exists()
    ident = moved[0]
    listed = _sbox(sbox_bin, state, "list").stdout.splitlines()
    (husky,) = [line for line in listed if line.startswith("  .husky  ")]
    assert "[created dir, host-executed]  !! restored only when named; holds .husky/sub/.git (.git)" in husky
    assert not [line for line in listed if line.startswith("  .husky/")]  # inside it: not repeated
    refused = _sbox(sbox_bin, state, "restore", ident)
    assert refused.returncode == 1 and ".husky/sub/.git" in refused.stderr and not (root / ".husky").exists()
    done = _sbox(sbox_bin, state, "restore", ident, ".husky")
    assert done.returncode == 0, done.stderr
    assert (root / ".husky" / "sub" / ".git" / "HEAD").exists()
    assert _manifest(state, ident).get("restored") is True
