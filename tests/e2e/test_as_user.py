"""sbox run by an ordinary user on bwrap, as most developers run it (CI runs as root, so this
suite starts sbox as `nobody`): an allowlisted step's proxy listens in the sandbox's own network
namespace through a child of sbox that enters bwrap's user namespace (egress/userns.py), with no
bridge inside and the same refusals; and a repeated command keeps the default `limits.pids`
(RLIMIT_NPROC) on the plan cache's warm path. Listeners this test owns, on loopback."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from support.listener import CanaryListener

from conftest import require_backend
from tests.conformance.helpers import PY
from tests.conformance.test_egress_netns import PROCESSES
from tests.conformance.test_network import VIA_PROXY, _verdicts

USER = 65534  # nobody
LIMIT = "import resource; print(resource.getrlimit(resource.RLIMIT_NPROC))"


class AsUser:
    """`sbox` as USER: a copy of sbox and its modules that USER may read, run by an interpreter
    USER may run, with a HOME of USER's own (sbox's state and cache under it)."""

    def __init__(self, base: Path, python: str, refuse_userns: bool | str = False) -> None:
        self.base, self.home = base, base / "home"
        site = base / "site"
        site.mkdir()
        import platformdirs
        import pyseccomp
        import yaml

        import sbox_shim

        for module in (sbox_shim, yaml, platformdirs):
            shutil.copytree(os.path.dirname(str(module.__file__)), site / module.__name__,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(str(pyseccomp.__file__), site)
        self.refuse_now = base / "refuse-now"  # with refuse_userns="later": refused once this exists
        if refuse_userns:  # a kernel or security module that will not let a child enter bwrap's user namespace
            with open(site / "sbox_shim" / "egress" / "userns.py", "a") as f:
                f.write("\n\n_allowed = _made_by_child\n\n\n"
                        "def _made_by_child(*args: object) -> list:  # noqa\n"
                        f"    if {refuse_userns == 'later'} and not __import__('posix').access({str(self.refuse_now)!r}, 0):\n"
                        "        return _allowed(*args)  # noqa\n"
                        "    raise PermissionError(1, 'Operation not permitted (this test)')\n")
        self.sbox = base / "sbox"
        self.sbox.write_text(f"#!{python} -IS\nimport sys\nsys.path[:0] = [{str(site)!r}]\n"
                             "from sbox_shim.entry import main\nmain()\n")
        self.home.mkdir()
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or path == self.sbox else 0o644)
        os.chown(self.home, USER, USER)

    def project(self, config: str) -> Path:
        root = Path(tempfile.mkdtemp(dir=self.home))
        (root / "sbox.yaml").write_text(config)
        for path in (root, root / "sbox.yaml"):
            os.chown(path, USER, USER)
        assert self.run(root, "trust", "sbox.yaml").returncode == 0
        return root

    def run(self, cwd: Path, *argv: str, **more: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8", **more}
        return subprocess.run([str(self.sbox), *argv], cwd=cwd, env=env, user=USER, group=USER, extra_groups=[],
                              capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def _python_for(user: int) -> str | None:
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            if subprocess.run([python, "-I", "-S", "-c", "pass"], user=user, group=user, extra_groups=[],
                              capture_output=True, timeout=30).returncode == 0:
                return python
        except OSError:
            continue
    return None


def _as_user(refuse_userns: bool | str = False) -> Iterator[AsUser]:
    require_backend("bwrap")
    if os.geteuid() != 0:
        pytest.skip("starting sbox as another user takes root (run as an ordinary user, every test is this one)")
    python = _python_for(USER)
    if python is None:
        pytest.skip(f"no Python interpreter here that uid {USER} may run")
    base = Path(tempfile.mkdtemp(prefix="sbox-as-user-", dir="/tmp"))
    try:
        yield AsUser(base, python, refuse_userns)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def as_user() -> Iterator[AsUser]:
    yield from _as_user()


@pytest.fixture
def as_user_refused() -> Iterator[AsUser]:
    yield from _as_user(refuse_userns=True)


@pytest.fixture
def as_user_refused_later() -> Iterator[AsUser]:
    yield from _as_user(refuse_userns="later")


def _config(allowed: CanaryListener) -> str:
    return (f"version: 1\nprofiles:\n  default:\n    network: on\n    network_allow: [\"registry.sbox.test:{allowed.port}\"]\n"
            "hosts:\n  registry.sbox.test: [127.0.0.1]\n  evil.sbox.test: [127.0.0.1]\n")


def test_an_ordinary_user_s_allowlisted_step_runs_no_bridge_and_still_refuses(as_user: AsUser) -> None:
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = as_user.project(_config(allowed))
        result = as_user.run(root, "run", "--backend", "bwrap", "--", PY, "-c", PROCESSES)
        seen = _verdicts(result)
        assert not any("/.sbox/bridge.py --socket" in line for line in seen["processes"]), seen
        assert seen["bridge"] is False, seen
        result = as_user.run(root, "run", "--backend", "bwrap", "--", PY, "-c", VIA_PROXY,
                             f"registry.sbox.test:{allowed.port}", f"evil.sbox.test:{evil.port}")
        verdicts = _verdicts(result)
        assert " 200 " in str(verdicts[f"registry.sbox.test:{allowed.port}"]) + " ", (verdicts, result.stderr)
        assert allowed.wait_for(1, b"canary-via-proxy")
        assert " 403 " in str(verdicts[f"evil.sbox.test:{evil.port}"]) + " ", verdicts
        assert "blocked 1 connection attempt(s)" in result.stderr, result.stderr
        assert evil.hits == 0
        assert not os.path.exists(as_user.home / ".local" / "state" / "sbox" / "egress" / "userns-refused")
        # the control: the same listener, reached from the host, does hear a connection
        import socket

        with socket.create_connection(("127.0.0.1", evil.port), timeout=5) as s:
            s.sendall(b"control")
        assert evil.wait_for(1, b"control")


def test_an_ordinary_user_s_repeated_command_keeps_the_default_pids_brake_on_the_warm_path(as_user: AsUser) -> None:
    root = as_user.project("version: 1\nprofiles:\n  default:\n    network: off\n")
    for _ in range(2):  # the cold run records the plan, the second runs from the record
        result = as_user.run(root, "run", "--backend", "bwrap", "--", PY, "-c", LIMIT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "(4096, 4096)", result.stdout
    records = [str(p) for p in as_user.home.rglob("*.plan")]
    assert records, "nothing was recorded for the warm path"
    found = [r for r in map(_as_root_read, records) if isinstance(r, dict)]
    assert any(r.get("nproc") == 4096 and r.get("options") for r in found), found


def _as_root_read(path: str) -> object:
    """A record USER's sbox kept (read_private insists on the reader's own uid: read it as root)."""
    import marshal

    return marshal.loads(Path(path).read_bytes())


def _allowed_and_refused(result: subprocess.CompletedProcess[str], allowed: CanaryListener,
                         evil: CanaryListener) -> None:
    """The proxy let the CONNECT to the allowed listener through and refused the other."""
    verdicts = _verdicts(result)
    assert " 200 " in str(verdicts[f"registry.sbox.test:{allowed.port}"]) + " ", (verdicts, result.stderr)
    assert " 403 " in str(verdicts[f"evil.sbox.test:{evil.port}"]) + " ", verdicts


def test_where_a_child_cannot_enter_bwrap_s_user_namespace_the_bridge_runs(as_user_refused: AsUser) -> None:
    """The step's sandbox is killed before its command ran, sbox says so once and runs the step
    with the bridge inside; every later step starts with the bridge. Refusals hold either way."""
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = as_user_refused.project(_config(allowed))
        argv = ("run", "--backend", "bwrap", "--", PY, "-c", VIA_PROXY, f"registry.sbox.test:{allowed.port}",
                f"evil.sbox.test:{evil.port}")
        first = as_user_refused.run(root, *argv)
        assert "bridge inside the sandbox on this machine from now on" in first.stderr, first.stderr
        second = as_user_refused.run(root, *argv)
        assert "from now on" not in second.stderr and "nothing ran" not in second.stderr, second.stderr
        for result in (first, second):
            _allowed_and_refused(result, allowed, evil)
        assert allowed.wait_for(2, b"canary-via-proxy")
        assert evil.hits == 0
        seen = _verdicts(as_user_refused.run(root, "run", "--backend", "bwrap", "--", PY, "-c", PROCESSES))
        assert seen["bridge"] is True, seen


def test_a_refusal_met_on_the_warm_path_runs_the_step_once_with_the_bridge(as_user_refused_later: AsUser) -> None:
    """The step was kept for the warm path while the child could enter bwrap's user namespace;
    then a kernel or security module refuses it. The warm run's sandbox is killed before its
    command ran, sbox says so once, and the cold path runs the step with the bridge: the command
    runs once, and refusals hold; the next run starts with the bridge."""
    user = as_user_refused_later
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = user.project(_config(allowed))
        argv = ("run", "--backend", "bwrap", "--", PY, "-c", VIA_PROXY, f"registry.sbox.test:{allowed.port}",
                f"evil.sbox.test:{evil.port}")
        kept = [user.run(root, *argv) for _ in range(2)]  # recorded, then run from the record
        records = [_as_root_read(str(p)) for p in user.home.rglob("*.plan")]
        assert any(isinstance(r, dict) and r.get("egress") and r.get("options") for r in records), \
            "the allowlisted step was not kept for the warm path"
        user.refuse_now.write_text("")
        refused = user.run(root, *argv)
        assert "bridge inside the sandbox on this machine from now on" in refused.stderr, refused.stderr
        assert refused.stdout.count(f"registry.sbox.test:{allowed.port}") == 1, refused.stdout  # ran once
        after = user.run(root, *argv)
        assert "from now on" not in after.stderr and "nothing ran" not in after.stderr, after.stderr
        for result in (*kept, refused, after):
            _allowed_and_refused(result, allowed, evil)
        assert allowed.wait_for(4, b"canary-via-proxy")
        assert evil.hits == 0
        seen = _verdicts(user.run(root, "run", "--backend", "bwrap", "--", PY, "-c", PROCESSES))
        assert seen["bridge"] is True, seen


def test_an_ordinary_user_s_repeated_allowlisted_step_is_warm_and_still_refuses(as_user: AsUser) -> None:
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = as_user.project(_config(allowed))
        argv = ("run", "--backend", "bwrap", "--", PY, "-c", VIA_PROXY, f"registry.sbox.test:{allowed.port}",
                f"evil.sbox.test:{evil.port}")
        for _ in range(2):  # the cold run records the step, the second runs from the record
            result = as_user.run(root, *argv)
            _allowed_and_refused(result, allowed, evil)
            assert "blocked 1 connection attempt(s)" in result.stderr, result.stderr
        assert allowed.wait_for(2, b"canary-via-proxy")
        assert evil.hits == 0
        records = [_as_root_read(str(p)) for p in as_user.home.rglob("*.plan")]
        assert any(isinstance(r, dict) and r.get("egress") and r.get("options") for r in records), \
            "the allowlisted step was not kept for the warm path"


def test_an_ordinary_user_s_npm_install_downloads_then_runs_scripts_offline(as_user: AsUser) -> None:
    """The two-phase npm install as an ordinary user, from a loopback registry: the download
    reaches the registry through the proxy's listener in the sandbox, the package's postinstall
    runs with the network off (its connection to a listener of the test's own fails)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    from support import packages as pkg
    from support.registries import NpmRegistry

    with CanaryListener() as canary:
        script = ("const fs = require('fs'), net = require('net');"
                  "fs.writeFileSync('ran.txt', 'ran');"
                  f"const s = net.connect({canary.port}, '127.0.0.1', () => {{ fs.writeFileSync('reached.txt', 'x'); s.end(); }});"
                  "s.on('error', (e) => fs.writeFileSync('refused.txt', e.code || 'error'));")
        tgz = pkg.npm_package("sbox-user-probe", "1.0.0", {"probe.js": script}, scripts={"postinstall": "node probe.js"})
        with NpmRegistry([tgz]) as registry:
            root = as_user.project("version: 1\n")
            (root / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true, '
                                               '"dependencies": {"sbox-user-probe": "1.0.0"}}\n')
            os.chown(root / "package.json", USER, USER)
            result = as_user.run(root, "run", "--backend", "bwrap", "--", "npm", "install", "--no-audit", "--no-fund",
                                 npm_config_registry=f"{registry.url}/")
            assert result.returncode == 0, result.stdout + result.stderr
            installed = root / "node_modules" / "sbox-user-probe"
            assert (installed / "ran.txt").exists(), result.stderr  # the script ran ...
            assert (installed / "refused.txt").exists() and not (installed / "reached.txt").exists()  # ... offline
            assert canary.hits == 0
            assert (root / "package-lock.json").exists()
        control = as_user.base / "control"  # the same script outside sbox does reach the listener
        control.mkdir()
        (control / "probe.js").write_text(script)
        subprocess.run(["node", "probe.js"], cwd=control, capture_output=True, timeout=60)
        assert (control / "reached.txt").exists() and canary.wait_for(1)


def _git_as_user(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, user=USER, group=USER, extra_groups=[],
                          capture_output=True, text=True, timeout=60)


def test_an_ordinary_user_s_step_cannot_hide_a_plant_in_a_directory_it_made_unreadable(as_user: AsUser) -> None:
    """As the owner, the sandbox can take its own read right away (`chmod 0311`): the walk would
    not see a nested `.git` planted inside, and the next step would take it for the host's. sbox
    gives the owner the right back and looks; and a watched Makefile in a project root the step
    made unreadable, or a `.git` it left unwritable, is still moved (each was refused before)."""
    root = as_user.project("version: 1\nprofiles:\n  default:\n    network: off\n")
    (root / "packages").mkdir()
    (root / "Makefile").write_text("all:\n\t@echo host\n")
    for path in (root / "packages", root / "Makefile"):
        os.chown(path, USER, USER)
    marker = as_user.home / "fsmonitor-ran"
    assert as_user.run(root, "run", "--", "true").returncode == 0  # the walk knows the tree
    plant = (f"git init -q packages/web && git -C packages/web config core.fsmonitor 'touch {marker}; false' && "
             "chmod 0311 packages")
    result = as_user.run(root, "run", "--", "sh", "-c", plant)
    assert result.returncode == 0, result.stderr
    assert "quarantined packages/web/.git (created by the sandbox, .git)" in result.stderr, result.stderr
    _git_as_user(root / "packages" / "web", "status")
    assert not marker.exists()
    result = as_user.run(root, "run", "--", "sh", "-c",
                         f"printf 'all:\\n\\t@touch {marker}\\n' > Makefile && git init -q sub && "
                         f"git -C sub config core.fsmonitor 'touch {marker}; false' && chmod 0555 sub/.git && chmod 0311 .")
    assert result.returncode == 0, result.stderr
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in result.stderr, result.stderr
    assert "quarantined sub/.git (created by the sandbox, .git)" in result.stderr, result.stderr
    os.chmod(root, 0o755)
    assert (root / "Makefile").read_text() == "all:\n\t@echo host\n"
    # `chmod 0` takes the search right too: not even an lstat reaches what is inside
    result = as_user.run(root, "run", "--", "sh", "-c", f"printf 'all:\\n\\t@touch {marker}\\n' > Makefile && chmod 0 .")
    assert result.returncode == 0, result.stderr
    assert "quarantined Makefile (changed by the sandbox; the previous version is back" in result.stderr, result.stderr
    os.chmod(root, 0o755)
    assert (root / "Makefile").read_text() == "all:\n\t@echo host\n"
    _git_as_user(root / "sub", "status")
    assert not marker.exists()
    control = as_user.home / "control"  # the same nested repository, made on the host, runs its fsmonitor
    control.mkdir()
    os.chown(control, USER, USER)
    _git_as_user(control, "init", "-q")
    _git_as_user(control, "config", "core.fsmonitor", f"touch {marker}; false")
    _git_as_user(control, "status")
    assert marker.exists()
