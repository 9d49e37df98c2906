"""The plan cache (sbox's warm path), run and attacked for real on bubblewrap.

A repeated `sbox run` is served from a record in `$SBOX_STATE_DIR/plans` by
`sbox_shim.compiled.run_cached`, without importing `sbox_shim.cli`. Every check below that is
about the warm path runs on a run *proven* warm: sbox is started as
`<its interpreter> -X importtime <sbox> run ...`, and a run is warm exactly when no import-time
line names `sbox_shim.cli` (the cold path imports it; the warm path never does). The key hashes
sys.executable, so every run of a test goes through that same interpreter, env and cwd.

The import-time lines are removed from stderr before any assertion on the command's own output.
All traffic goes to loopback listeners the test starts itself.
"""
from __future__ import annotations

import fcntl
import marshal
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest
from conftest import require_backend
from support.listener import CanaryListener
from support.trust import trust

from conformance.helpers import PY, WRITE, finish, marker, profile, project, read_line, verdicts

from sbox_shim import compiled, launcher

pytestmark = pytest.mark.bwrap

IMPORT_TIME = "import time:"
COLD_ONLY_MODULE = "sbox_shim.cli"  # the cold path's parser: the warm path must never import it
BWRAP = "backend: bwrap\n"

# Inside: connect to HOST PORT and send a payload; print the verdict.
CONNECT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"SBOX-LEAK from the warm path")
    s.close()
    print("CONNECTED")
except OSError as e:
    print("FAILED", e)
"""


# ---------------------------------------------------------------- helpers


@dataclass
class Run:
    """One `sbox run`, its stderr split into the command's own lines and Python's import times."""

    returncode: int
    stdout: str
    stderr: str  # without the import-time lines
    imports: list[str]

    @classmethod
    def of(cls, returncode: int, stdout: str, stderr: str) -> "Run":
        lines = stderr.splitlines(keepends=True)
        imports = [line for line in lines if line.startswith(IMPORT_TIME)]
        own = "".join(line for line in lines if not line.startswith(IMPORT_TIME))
        # -X importtime really was on (else "warm" would be vacuously true): the entry point shows.
        assert any("sbox_shim.entry" in line for line in imports), stderr
        return cls(returncode, stdout, own, imports)

    @property
    def warm(self) -> bool:
        return not any(COLD_ONLY_MODULE in line for line in self.imports)

    def __str__(self) -> str:
        path = "warm" if self.warm else "cold"
        return f"exit {self.returncode} ({path})\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def interpreter(sbox_bin: str) -> str:
    """The interpreter on the `sbox` command's shebang line: the one a user's `sbox` runs in."""
    with open(sbox_bin, encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("#!"), f"{sbox_bin} has no shebang: {first!r}"
    return first[2:].strip().split()[0]


class Sbox:
    """The real `sbox run`, under -X importtime, in one project with one environment."""

    def __init__(self, sbox_bin: str, root: Path, env: Mapping[str, str]) -> None:
        self.prefix = [interpreter(sbox_bin), "-X", "importtime", sbox_bin]
        self.root = root
        self.env = dict(env)
        self.state = Path(self.env["SBOX_STATE_DIR"])

    @property
    def plans(self) -> Path:
        return self.state / "plans"

    def records(self, env: Mapping[str, str] | None = None) -> list[Path]:
        """The records in the plans directory of this env's SBOX_STATE_DIR (default: the fixture's)."""
        plans = Path(env["SBOX_STATE_DIR"]) / "plans" if env else self.plans
        return sorted(plans.glob("*.plan")) if plans.is_dir() else []

    def argv(self, command: Sequence[str], options: Sequence[str] = ()) -> list[str]:
        return [*self.prefix, "run", *options, "--", *command]

    def start(self, *command: str, options: Sequence[str] = (), env: Mapping[str, str] | None = None,
              pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(command, options), cwd=self.root, env=dict(env or self.env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, pass_fds=pass_fds)

    def finish(self, proc: subprocess.Popen[str], timeout: float = 120) -> Run:
        out, err = finish(proc, timeout)
        return Run.of(proc.returncode, out, err)

    def run(self, *command: str, options: Sequence[str] = (), env: Mapping[str, str] | None = None,
            pass_fds: Sequence[int] = ()) -> Run:
        return self.finish(self.start(*command, options=options, env=env, pass_fds=pass_fds))

    def run_twice(self, *command: str, env: Mapping[str, str] | None = None,
                  pass_fds: Sequence[int] = ()) -> tuple[Run, Run]:
        """Prime a record with a cold run, then run the same again: it must be warm."""
        first = self.run(*command, env=env, pass_fds=pass_fds)
        assert not first.warm, f"the first run should have been cold:\n{first}"
        assert self.records(env), f"the cold run wrote no record:\n{first}"
        second = self.run(*command, env=env, pass_fds=pass_fds)
        assert second.warm, f"the second, identical run should have been warm:\n{second}"
        return first, second

    def warm(self, *command: str, env: Mapping[str, str] | None = None) -> Run:
        """The warm run of `command` (after its priming cold run)."""
        return self.run_twice(*command, env=env)[1]


def caller_env() -> dict[str, str]:
    """os.environ as the autouse fake_home fixture left it, minus pytest's per-phase variable."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def sbox(request: pytest.FixtureRequest, sbox_bin: str, tmp_path: Path) -> Sbox:
    """A bwrap project (writable, network off) and an existing private state dir.

    The state dir is made beforehand, as any earlier sbox command would have: in a fresh one the
    first record is stale at once (see test_the_first_record_in_a_fresh_state_dir_is_usable)."""
    if request.node.get_closest_marker("docker") is None:
        require_backend("bwrap")
    env = caller_env()
    os.makedirs(env["SBOX_STATE_DIR"], mode=0o700, exist_ok=True)
    return Sbox(sbox_bin, project(tmp_path, profile() + BWRAP), env)


def set_config(sbox: Sbox, config: str) -> None:
    (sbox.root / "sbox.yaml").write_text(config)
    trust(sbox.root / "sbox.yaml")


# ---------------------------------------------------------------- the record and the warm run


def test_a_record_is_written_and_the_identical_run_is_warm_with_the_same_result(sbox: Sbox) -> None:
    """The cold run writes one private record; the warm run gives the same output and exit code."""
    assert sbox.records() == []
    cold, warm = sbox.run_twice("sh", "-c", "echo hi; echo to-err >&2; exit 7")
    for run in (cold, warm):
        assert (run.returncode, run.stdout, run.stderr) == (7, "hi\n", "to-err\n"), str(run)
    [record] = sbox.records()
    assert record.stat().st_mode & 0o777 == 0o600
    assert sbox.plans.stat().st_mode & 0o777 == 0o700


def test_a_warm_run_with_the_guard_loads_neither_os_nor_more_codecs(sbox: Sbox, tmp_path: Path) -> None:
    """Through the launcher install.sh writes (`-I -S`: no `site`), the warm path in a writable
    project (the persistence guard before and after the step, the mount check, the sandbox's end)
    loads no `os` (its environ costs milliseconds) and no codec beyond the interpreter's own."""
    command = ("sh", "-c", "echo hi")
    sbox.run_twice(*command)
    fast = str(tmp_path / "sbox")
    launcher.write(fast, python=sbox.prefix[0], paths=[str(Path(compiled.__file__).parents[1])])
    proc = subprocess.run([sbox.prefix[0], "-I", "-S", "-X", "importtime", fast, "run", "--", *command],
                          cwd=sbox.root, env=sbox.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    run = Run.of(proc.returncode, proc.stdout, proc.stderr)
    assert run.warm and (run.returncode, run.stdout) == (0, "hi\n"), str(run)
    loaded = [line.rsplit("|", 1)[-1].strip() for line in run.imports]
    assert "sbox_shim.guard" in loaded and "sbox_shim.backends.mountcheck" in loaded, loaded
    assert "os" not in loaded and "encodings.ascii" not in loaded, loaded


def test_the_first_record_in_a_fresh_state_dir_is_usable(sbox_bin: str, tmp_path: Path) -> None:
    """With no state dir yet, the first cold run records a plan the second run can use."""
    require_backend("bwrap")
    env = caller_env()
    assert not os.path.exists(os.path.join(env["SBOX_STATE_DIR"], "plans"))
    box = Sbox(sbox_bin, project(tmp_path, profile() + BWRAP), env)
    first = box.run("true")
    assert not first.warm and box.records(), str(first)
    second = box.run("true")
    assert second.returncode == 0 and second.warm, str(second)


# ---------------------------------------------------------------- isolation, on warm runs


def test_warm_run_does_not_see_the_callers_secrets(sbox: Sbox) -> None:
    """Tokens in the caller's environment are not in the warm sandbox's environment."""
    canaries = {"SBOX_TEST_CANARY_TOKEN": marker(), "NPM_TOKEN": "npm_" + marker(),
                "AWS_SECRET_ACCESS_KEY": marker()}
    env = {**sbox.env, **canaries}
    warm = sbox.warm("env", env=env)
    assert warm.returncode == 0 and "SBOX_ACTIVE=1" in warm.stdout, str(warm)  # it did run, in sbox
    for name, value in canaries.items():
        assert name not in warm.stdout and value not in warm.stdout + warm.stderr, str(warm)


def test_warm_run_cannot_read_a_file_in_home(sbox: Sbox) -> None:
    """HOME inside is a throwaway: the host HOME's ~/.npmrc is not there on the warm run."""
    home = Path(sbox.env["HOME"])
    secret = "npm_" + marker()
    (home / ".npmrc").write_text(f"//registry.npmjs.org/:_authToken={secret}\n")
    warm = sbox.warm("sh", "-c", 'cat "$HOME/.npmrc" && echo READ || echo UNREADABLE')
    assert "UNREADABLE" in warm.stdout and "READ\n" not in warm.stdout, str(warm)
    assert secret not in warm.stdout + warm.stderr
    assert (home / ".npmrc").read_text().endswith(f"{secret}\n")  # still there, on the host


def test_warm_run_cannot_reach_a_loopback_listener(sbox: Sbox) -> None:
    """network off on the warm run: a connect to the host's loopback listener fails; it sees nothing."""
    with CanaryListener("127.0.0.1") as listener:
        warm = sbox.warm(PY, "-c", CONNECT, listener.host, str(listener.port))
        assert warm.stdout.startswith("FAILED"), str(warm)
        assert not listener.wait_for(1, timeout=0.5)
        assert (listener.hits, listener.received) == (0, b"")


def test_warm_run_cannot_write_outside_the_project(sbox: Sbox, tmp_path: Path) -> None:
    """Only the project is writable on the warm run: the host's / and /usr refuse, and what lands
    in the sandbox's throwaway /tmp and HOME never reaches the host."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tag = marker()
    denied = [f"/{tag}", f"/usr/{tag}", f"/etc/{tag}"]
    throwaway = [str(outside / "planted"), str(Path(sbox.env["HOME"]) / ".bashrc")]
    inside = sbox.root / "inside-file"
    warm = sbox.warm(PY, "-c", WRITE, *denied, *throwaway, str(inside))
    found = verdicts(warm.stdout)
    assert [found[t] for t in denied] == ["DENIED"] * len(denied), str(warm)
    assert found[str(inside)] == "WROTE", str(warm)
    assert set(found) == {*denied, *throwaway, str(inside)}, str(warm)
    for target in denied + throwaway:
        assert not os.path.exists(target), target
    assert list(outside.iterdir()) == []
    assert inside.read_text() == "written from the sandbox\n" * 2  # cold and warm run both wrote here


def test_warm_run_cannot_write_the_projects_sbox_yaml(sbox: Sbox) -> None:
    """The project's config stays read-only on the warm run, in a writable project."""
    config = (sbox.root / "sbox.yaml").read_text()
    warm = sbox.warm(PY, "-c", WRITE, str(sbox.root / "sbox.yaml"))
    assert verdicts(warm.stdout) == {str(sbox.root / "sbox.yaml"): "DENIED"}, str(warm)
    assert (sbox.root / "sbox.yaml").read_text() == config


# ---------------------------------------------------------------- no secret on disk


def test_a_passed_token_reaches_the_warm_run_but_never_the_disk(sbox: Sbox) -> None:
    """A token the profile passes is stored as a reference: used inside, written nowhere."""
    set_config(sbox, profile(env=["NPM_TOKEN"]) + BWRAP)
    token = "npm_" + marker()
    warm = sbox.warm("sh", "-c", 'echo "token=$NPM_TOKEN"', env={**sbox.env, "NPM_TOKEN": token})
    assert warm.stdout == f"token={token}\n", str(warm)
    assert sbox.records()
    disk = [*sbox.state.rglob("*"), *Path(sbox.env["SBOX_CACHE_DIR"]).rglob("*")]
    found = [p for p in disk if p.is_file() and token.encode() in p.read_bytes()]
    assert found == [], f"the token is on disk in {found}"


def test_a_passed_variable_is_read_at_run_time_not_from_the_record(sbox: Sbox) -> None:
    """OLDPWD is left out of the key, so a warm run with a new value uses the same record: it
    must see the new value (proof that values are references, not copies)."""
    set_config(sbox, profile(env=["OLDPWD"]) + BWRAP)
    command = ("sh", "-c", 'echo "was=$OLDPWD"')
    sbox.run_twice(*command, env={**sbox.env, "OLDPWD": "/first"})
    later = sbox.run(*command, env={**sbox.env, "OLDPWD": "/second"})
    assert later.warm and later.stdout == "was=/second\n", str(later)


# ---------------------------------------------------------------- invalidation


def test_editing_sbox_yaml_invalidates_the_record(sbox: Sbox) -> None:
    """writable: false after the record: the next run is cold and cannot write the project."""
    target = str(sbox.root / "new-file")
    warm = sbox.warm(PY, "-c", WRITE, target)
    assert verdicts(warm.stdout) == {target: "WROTE"}, str(warm)
    set_config(sbox, profile(writable=False) + BWRAP)
    after = sbox.run(PY, "-c", WRITE, target)
    assert not after.warm, str(after)
    assert verdicts(after.stdout) == {target: "DENIED"}, str(after)
    assert (sbox.root / "new-file").read_text() == "written from the sandbox\n" * 2


def test_a_stale_records_sandbox_never_runs_its_command(sbox: Sbox) -> None:
    """bwrap is started from the record while its facts are checked: once one has changed, that
    sandbox is killed before its command, which runs once (cold), and no process of it is left."""
    token = f"held-{os.getpid()}-{id(sbox)}"
    command = ("sh", "-c", f"echo {token} >> ran", token)
    sbox.run_twice(*command)
    assert (sbox.root / "ran").read_text() == f"{token}\n" * 2
    set_config(sbox, (sbox.root / "sbox.yaml").read_text() + "# edited\n")  # the same profile, a new file
    after = sbox.run(*command)
    assert not after.warm and after.returncode == 0, str(after)
    assert (sbox.root / "ran").read_text() == f"{token}\n" * 3
    assert _running(token) == [], "a process of the stale record's sandbox is still there"


def _running(token: str) -> list[int]:
    """Processes (bwrap's included) whose command line names `token`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_git_dir_created_after_the_record_is_protected(sbox: Sbox) -> None:
    """.git made after the record: the next run is cold and .git is read-only in it."""
    script = 'echo planted > .git/hooks/pre-commit && echo WROTE || echo DENIED'
    warm = sbox.warm("sh", "-c", script)
    assert "DENIED" in warm.stdout, str(warm)  # no .git yet: nothing to write into
    (sbox.root / ".git" / "hooks").mkdir(parents=True)
    after = sbox.run("sh", "-c", script)
    assert not after.warm, str(after)
    assert "DENIED" in after.stdout and "Read-only file system" in after.stderr, str(after)
    assert list((sbox.root / ".git" / "hooks").iterdir()) == []


def test_a_nested_git_created_after_the_record_is_protected(sbox: Sbox) -> None:
    """A submodule's .git file deep in the tree, made after the record: the next run is cold and
    that file is read-only in it."""
    script = '[ -e lib/sub/.git ] || { echo ABSENT; exit; }; echo "gitdir: /tmp/evil" > lib/sub/.git && echo WROTE || echo DENIED'
    (sbox.root / "lib" / "sub").mkdir(parents=True)
    warm = sbox.warm("sh", "-c", script)
    assert "ABSENT" in warm.stdout, str(warm)
    (sbox.root / "lib" / "sub" / ".git").write_text("gitdir: ../../.git/modules/sub\n")
    after = sbox.run("sh", "-c", script)
    assert not after.warm, str(after)
    assert "DENIED" in after.stdout, str(after)
    assert (sbox.root / "lib" / "sub" / ".git").read_text() == "gitdir: ../../.git/modules/sub\n"


def test_a_socket_created_after_the_record_is_masked(sbox: Sbox) -> None:
    """A unix socket a host daemon opens in the project after the record: the next run is cold and
    cannot connect to it; outside sbox the same connect works."""
    import socket

    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1]); print('CONNECTED')\nexcept OSError as e:\n    print('FAILED', e)\n")
    path = str(sbox.root / "db.sock")
    sbox.warm(PY, "-c", code, path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    server.settimeout(0.5)
    try:
        after = sbox.run(PY, "-c", code, path)
        assert not after.warm, str(after)
        assert after.stdout.startswith("FAILED"), str(after)
        with pytest.raises(OSError):
            server.accept()  # nothing reached the listener
        control = subprocess.run([PY, "-c", code, path], capture_output=True, text=True, timeout=30)
        assert control.stdout.startswith("CONNECTED"), control.stderr
    finally:
        server.close()


def test_a_changed_passed_variable_is_seen(sbox: Sbox) -> None:
    """A variable the profile passes changes: the run is cold (a new key) and sees the new value."""
    set_config(sbox, profile(env=["MY_SETTING"]) + BWRAP)
    command = ("sh", "-c", 'echo "setting=$MY_SETTING"')
    _, warm = sbox.run_twice(*command, env={**sbox.env, "MY_SETTING": "one"})
    assert warm.stdout == "setting=one\n", str(warm)
    after = sbox.run(*command, env={**sbox.env, "MY_SETTING": "two"})
    assert not after.warm and after.stdout == "setting=two\n", str(after)


def _tool(directory: Path, says: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mytool").write_text(f"#!/bin/sh\necho {says}\n")
    (directory / "mytool").chmod(0o755)


def test_a_tool_earlier_on_path_takes_over(sbox: Sbox, tmp_path: Path) -> None:
    """PATH unchanged as a string; its first directory gains `mytool`: that one runs next."""
    first, second = tmp_path / "first" / "bin", tmp_path / "second" / "bin"
    first.mkdir(parents=True)
    _tool(second, "second-tool")
    env = {**sbox.env, "PATH": f"{first}:{second}:{sbox.env['PATH']}"}
    warm = sbox.warm("mytool", env=env)
    assert (warm.returncode, warm.stdout) == (0, "second-tool\n"), str(warm)
    _tool(first, "first-tool")
    after = sbox.run("mytool", env=env)
    assert not after.warm, str(after)
    assert (after.returncode, after.stdout) == (0, "first-tool\n"), str(after)


def test_a_removed_tool_is_command_not_found(sbox: Sbox, tmp_path: Path) -> None:
    """The tool the record ran is deleted: 127 and "command not found", not a stale sandbox."""
    bindir = tmp_path / "tools" / "bin"
    _tool(bindir, "the-tool")
    env = {**sbox.env, "PATH": f"{bindir}:{sbox.env['PATH']}"}
    warm = sbox.warm("mytool", env=env)
    assert (warm.returncode, warm.stdout) == (0, "the-tool\n"), str(warm)
    (bindir / "mytool").unlink()
    after = sbox.run("mytool", env=env)
    assert not after.warm, str(after)
    assert after.returncode == 127 and "mytool: command not found" in after.stderr, str(after)
    assert after.stdout == ""


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize("tamper", ["record-0666", "directory-0777", "garbage", "truncated"])
def test_a_tampered_record_is_not_used(sbox: Sbox, tamper: str) -> None:
    """A record others could have written, or that is not a record, is ignored: the cold path
    runs and the command still succeeds."""
    command = ("sh", "-c", "echo ran; exit 5")
    sbox.run_twice(*command)
    [record] = sbox.records()
    if tamper == "record-0666":
        record.chmod(0o666)
    elif tamper == "directory-0777":
        sbox.plans.chmod(0o777)
    elif tamper == "garbage":
        record.write_bytes(b"\x00not a marshal record\xff" * 10)
    else:
        record.write_bytes(record.read_bytes()[:200])
    after = sbox.run(*command)
    assert not after.warm, str(after)
    assert (after.returncode, after.stdout) == (5, "ran\n"), str(after)


def test_a_well_formed_record_of_the_wrong_shape_falls_back_to_the_cold_path(sbox: Sbox) -> None:
    """A private record that unmarshals to a dict of the right format but missing fields (an
    interrupted upgrade, a bug) must not crash sbox: the cold path runs the command."""
    command = ("sh", "-c", "echo ran")
    sbox.run_twice(*command)
    [record] = sbox.records()
    record.write_bytes(marshal.dumps({"format": marshal.loads(record.read_bytes())["format"]}))
    after = sbox.run(*command)
    assert (after.returncode, after.stdout, after.warm) == (0, "ran\n", False), str(after)


# ---------------------------------------------------------------- turned off, and not cacheable


def test_plan_cache_off_writes_nothing(sbox: Sbox) -> None:
    """SBOX_PLAN_CACHE=0: both runs cold, no plans directory at all."""
    env = {**sbox.env, "SBOX_PLAN_CACHE": "0"}
    for _ in range(2):
        run = sbox.run("sh", "-c", "echo ran", env=env)
        assert (run.returncode, run.stdout, run.warm) == (0, "ran\n", False), str(run)
    assert not sbox.plans.exists()


@pytest.mark.docker
def test_docker_runs_are_replayed(sbox: Sbox, docker_backend: str) -> None:
    """--backend docker: the plan is kept whole and replayed through the runner on docker
    (replay.py); the container itself is made anew on each run."""
    runs = [sbox.run("sh", "-c", "echo ran", options=["--backend", "docker"]) for _ in range(2)]
    assert [(r.returncode, r.stdout, r.warm) for r in runs] == [(0, "ran\n", False), (0, "ran\n", True)], str(runs)
    assert len(sbox.records()) == 1


def _allowlist(port: int, address: str = "127.0.0.1") -> str:
    return (profile(network="on", network_allow=[f"registry.sbox.test:{port}"]) + BWRAP
            + f"hosts:\n  registry.sbox.test: [{address}]\n")


def test_mode_host_is_not_cached(sbox: Sbox) -> None:
    """mode: host runs unsandboxed: the warm path runs bwrap sandboxes only, so no record."""
    set_config(sbox, profile(mode="host") + BWRAP)
    for _ in range(2):
        run = sbox.run("sh", "-c", "echo ran")
        assert (run.returncode, run.stdout, run.warm) == (0, "ran\n", False), str(run)
    assert sbox.records() == []


@pytest.mark.parametrize("kind", ["allowlist", "timeout"])
def test_plans_for_the_runner_are_replayed_through_it(sbox: Sbox, kind: str) -> None:
    """An allowlist (the egress proxy) or a timeout needs the runner: the plan is kept whole
    (replay.py) and the repeat, warm, runs it through the runner with the same result. (An
    allowlist of loopback registries alone runs without the runner as root: egress/warm.py,
    tests/conformance/test_egress_netns.py.) The command sends nothing anywhere."""
    with CanaryListener("127.0.0.1") as allowed:
        set_config(sbox, {
            "allowlist": _allowlist(allowed.port, "198.51.100.7"),  # TEST-NET-2, never reached
            "timeout": "version: 1\nbackend: bwrap\nprofiles:\n  default:\n    limits:\n      timeout: 60\n",
        }[kind])
        cold, warm = sbox.run_twice("sh", "-c", "echo ran")
        for run in (cold, warm):
            assert (run.returncode, run.stdout) == (0, "ran\n"), str(run)
    (record,) = sbox.records()
    assert "plan" in marshal.loads(record.read_bytes())


def test_a_timeout_holds_on_the_warm_path(sbox: Sbox) -> None:
    set_config(sbox, "version: 1\nbackend: bwrap\nprofiles:\n  default:\n    limits:\n      timeout: 1\n")
    cold, warm = sbox.run_twice("sh", "-c", "sleep 30")
    assert cold.returncode == warm.returncode == 124, f"{cold}\n{warm}"
    assert "timed out after 1s" in warm.stderr, warm


# ---------------------------------------------------------------- sbox's own files


def test_a_state_dir_inside_the_project_is_refused(sbox: Sbox) -> None:
    """SBOX_STATE_DIR inside the (writable) project: a sandbox could plant records, kept parses or
    trust there (or rename the directory's parent and put its own in place), so sbox refuses to
    run, saying why, and nothing runs, cold or warm."""
    state = sbox.root / ".sbox-state"
    (state / "plans").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    env = {**sbox.env, "SBOX_STATE_DIR": str(state)}
    targets = [str(state / "plans" / ("0" * 64 + ".plan")), str(state / "planted"), str(sbox.root / "allowed")]
    for _ in range(2):
        run = sbox.run(PY, "-c", WRITE, *targets, env=env)
        assert run.returncode == 2 and "lies inside the project" in run.stderr, str(run)
        assert verdicts(run.stdout) == {}, str(run)  # nothing ran
    assert not (sbox.root / "allowed").exists() and not (state / "planted").exists()
    assert list((state / "plans").iterdir()) == []


def test_a_user_config_reached_through_a_symlink_is_refused(sbox: Sbox, tmp_path: Path) -> None:
    """The user-level config names the project through a link: a sandboxed command could create
    it (`mode: host` for every project of this user), so sbox refuses to run at all."""
    alias = tmp_path / "alias"
    alias.symlink_to(sbox.root)
    env = {**sbox.env, "SBOX_USER_CONFIG": str(alias / ".config" / "sbox" / "config.yaml")}
    target = str(sbox.root / ".config" / "sbox" / "config.yaml")
    run = sbox.run(PY, "-c", WRITE, target, str(sbox.root / "allowed"), env=env)
    assert run.returncode == 2 and "lies inside the project" in run.stderr, str(run)
    assert verdicts(run.stdout) == {} and not os.path.exists(target)


@pytest.mark.parametrize("which", ["user config", "state directory"])
def test_own_dirs_reached_through_a_link_into_another_project_are_refused(sbox: Sbox, tmp_path: Path,
                                                                          which: str) -> None:
    """sbox's config or state is a link into another opted-in project (dotfiles kept in a repository
    that uses sbox): a sandbox there may have written `mode: host` or trust records. sbox refuses,
    cold and warm, and nothing runs; the control shows the same config honoured where no sandbox
    writes."""
    other = tmp_path / "dotfiles"
    (other / ".cfg" / "sbox").mkdir(parents=True)
    (other / "sbox.yaml").write_text("version: 1\n")
    (other / ".cfg" / "sbox" / "config.yaml").write_text("profiles:\n  default:\n    mode: host\n")
    link = tmp_path / "link"
    link.symlink_to(other / ".cfg")
    target = str(tmp_path / "on-the-host")
    env = ({**sbox.env, "SBOX_USER_CONFIG": str(link / "sbox" / "config.yaml")} if which == "user config"
           else {**sbox.env, "SBOX_STATE_DIR": str(link / "state")})
    for _ in range(2):
        run = sbox.run(PY, "-c", WRITE, target, env=env)
        assert run.returncode == 2 and "lies inside the project" in run.stderr and "resolved" in run.stderr, str(run)
        assert verdicts(run.stdout) == {} and not os.path.exists(target), str(run)
    if which == "state directory":
        refused = subprocess.run([*sbox.prefix, "trust", str(sbox.root / "sbox.yaml")], cwd=sbox.root, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and not (other / ".cfg" / "state").exists(), refused.stderr
        return
    # Control: the same config where no sandbox writes makes the command run on the host.
    plain = tmp_path / "plain" / "config.yaml"
    plain.parent.mkdir()
    plain.write_text((other / ".cfg" / "sbox" / "config.yaml").read_text())
    trust(plain, env={**sbox.env, "SBOX_USER_CONFIG": str(plain)})
    run = sbox.run(PY, "-c", WRITE, target, env={**sbox.env, "SBOX_USER_CONFIG": str(plain)})
    assert verdicts(run.stdout) == {target: "WROTE"}, str(run)


# Inside: plant a record in PLANS (making the directory if need be), then rewrite every record of
# `echo innocent` there to bind the host's / at /tmp/hostroot and write MARKER there. Prints
# PLANTED or DENIED, then REWROTE or DENIED per record.
REWRITE = r"""
import marshal, os, sys
plans, marker = sys.argv[1:]
try:
    os.makedirs(plans, exist_ok=True)
    with open(os.path.join(plans, "planted.plan"), "wb") as f:
        f.write(b"planted")
    print("PLANTED")
except OSError as e:
    print("DENIED planting:", e.strerror)
for name in sorted(os.listdir(plans)) if os.path.isdir(plans) else []:
    if name == "planted.plan":
        continue
    path = os.path.join(plans, name)
    record = marshal.loads(open(path, "rb").read())
    if record["argv"] != ["echo", "innocent"]:
        continue
    at = record["options"].index("--chdir")
    record["options"][at:at] = ["--bind", "/", "/tmp/hostroot"]
    record["argv"] = ["sh", "-c", "echo ESCAPED > /tmp/hostroot" + marker + "; echo innocent"]
    try:
        with open(path + ".new", "wb") as f:
            f.write(marshal.dumps(record))
        os.chmod(path + ".new", 0o600)
        os.replace(path + ".new", path)
        print("REWROTE", name)
    except OSError as e:
        print("DENIED", name, e.strerror)
"""


def test_a_state_dir_reached_through_a_symlink_is_refused(sbox: Sbox, tmp_path: Path) -> None:
    """SBOX_STATE_DIR names the project through a symlink (as HOME does where /home is a link,
    e.g. /home -> /var/home): sbox refuses before any record exists, so no hostile run can find
    one to rewrite so that the next binds the host's / writable."""
    alias = tmp_path / "alias"
    alias.symlink_to(sbox.root)
    real_state = sbox.root / ".sbox-state"
    real_state.mkdir(mode=0o700)
    env = {**sbox.env, "SBOX_STATE_DIR": str(alias / ".sbox-state")}
    for _ in range(2):
        run = sbox.run("echo", "innocent", env=env)
        assert run.returncode == 2 and run.stdout == "" and "lies inside the project" in run.stderr, str(run)
    escaped = tmp_path / "escaped-on-host"
    hostile = sbox.run(PY, "-c", REWRITE, str(real_state / "plans"), str(escaped), env=env)
    assert hostile.returncode == 2 and hostile.stdout == "", str(hostile)
    assert not escaped.exists() and not (real_state / "plans").exists()


# ---------------------------------------------------------------- process behaviour on the warm path


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose ends sit at high fd numbers, well clear of what a command opens itself."""
    r, w = os.pipe()
    high = (fcntl.fcntl(r, fcntl.F_DUPFD, 60), fcntl.fcntl(w, fcntl.F_DUPFD, 60))
    os.close(r)
    os.close(w)
    yield high
    for fd in high:
        os.close(fd)


def test_inherited_fds_do_not_reach_the_command(sbox: Sbox, pipe: tuple[int, int]) -> None:
    """fds sbox inherits go no further, cold or warm: the command has stdio and its own fd only."""
    for run in sbox.run_twice("ls", "/proc/self/fd", pass_fds=pipe):
        assert run.returncode == 0, str(run)
        fds = {int(n) for n in run.stdout.split()}
        assert {0, 1, 2} <= fds and len(fds - {0, 1, 2}) <= 1, str(run)  # + ls's directory fd
        assert not fds & set(pipe), str(run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_warm_run_killed_by_a_signal_is_128_plus_n(sbox: Sbox, sig: signal.Signals) -> None:
    """The command dies of a signal on the warm run: sbox exits 128+N, as a shell would."""
    for run in sbox.run_twice("sh", "-c", f"kill -{sig.name[3:]} $$"):
        assert run.returncode == 128 + sig, str(run)


def test_sigterm_to_a_warm_sbox_reaches_the_command(sbox: Sbox) -> None:
    """SIGTERM to the sbox process is relayed to the command on the warm run, which traps it."""
    script = 'trap "echo got-term; exit 3" TERM; echo ready; while :; do sleep 0.1; done'
    runs = []
    for _ in range(2):
        proc = sbox.start("sh", "-c", script)
        try:
            assert read_line(proc) == "ready"
            proc.send_signal(signal.SIGTERM)
            runs.append(sbox.finish(proc, timeout=30))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cold, warm = runs
    assert not cold.warm and warm.warm, f"{cold}\n{warm}"
    for run in runs:
        assert (run.returncode, run.stdout) == (3, "got-term\n"), str(run)
