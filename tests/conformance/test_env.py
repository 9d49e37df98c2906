"""The caller's environment does not leak in: secrets stay out, tokens reach only where allowed."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .helpers import PY, Runs, processes_with, profile, project

CANARIES = {
    "SBOX_CANARY_TOKEN": "canary-env-7f3a9c",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-0b1d2e",
    "GITHUB_TOKEN": "ghp_canary4c5d6e",
    "NPM_TOKEN": "npm_canary8f9a0b",
    "SSH_AUTH_SOCK": "/tmp/canary-agent.sock",
}

# Inside: every place a value could surface: our environment, every process's, every cmdline.
SEARCH = r"""
import os, sys
needles = sys.stdin.read().split()  # not argv: every cmdline is searched
found = [k for k, v in os.environ.items() if any(n in k + "=" + v for n in needles)]
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for what in ("environ", "cmdline"):
        try:
            data = open("/proc/%s/%s" % (pid, what), "rb").read().decode(errors="replace")
        except OSError:
            continue
        found += ["%s/%s" % (pid, what) for n in needles if n in data]
print("FOUND", sorted(set(found)))
"""


def test_caller_secrets_are_not_visible(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    env = {**os.environ, **CANARIES}
    result = runs.run(root, PY, "-c", SEARCH, env=env, input="\n".join(CANARIES.values()))
    assert result.returncode == 0, result.stderr
    assert "FOUND []" in result.stdout, result.stdout
    env_dump = runs.run(root, "env", env=env).stdout
    for name, value in CANARIES.items():
        assert name not in env_dump and value not in env_dump


def test_environment_is_the_allowlist(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    env = {**os.environ, "LANG": "C.UTF-8", "SOME_RANDOM_SETTING": "x", "LD_PRELOAD": "/tmp/evil.so"}
    result = runs.run(root, "env", env=env)
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines() if "=" in line}
    assert "LANG" in names and "PATH" in names and "HOME" in names
    assert "SOME_RANDOM_SETTING" not in names and "LD_PRELOAD" not in names
    assert "SBOX_ACTIVE=1" in result.stdout


def test_a_token_the_profile_passes_reaches_the_command_but_not_the_host_process_list(
        runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(env=["MY_REGISTRY_TOKEN"]))
    token = "canary-passed-token-" + os.urandom(6).hex()
    env = {**os.environ, "MY_REGISTRY_TOKEN": token}
    proc = runs.start(root, "sh", "-c", 'echo "seen:${MY_REGISTRY_TOKEN}"; read _', env=env, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == f"seen:{token}"
        # while the command runs, no host process shows the token on its command line
        assert processes_with(token) == []
    finally:
        out, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, err


def test_sandbox_identity(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    script = ("import os, socket; print(os.getuid(), os.getgid(), socket.gethostname() != %r)"
              % socket_hostname())
    result = runs.run(root, PY, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.getuid()), str(os.getgid()), "True"]


def test_no_capabilities_and_no_new_privileges(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path)
    result = runs.run(root, "grep", "-E", "^(CapEff|CapPrm|CapBnd|NoNewPrivs)", "/proc/self/status")
    fields = dict(line.split(":\t") for line in result.stdout.strip().splitlines())
    assert fields["CapEff"] == fields["CapPrm"] == "0000000000000000", result.stdout
    assert fields["NoNewPrivs"] == "1", result.stdout


def socket_hostname() -> str:
    import socket

    return socket.gethostname()

