"""A failing offline phase says why it may have failed (the names it tried to reach, and how to
let it; or that it looked up none, and no remedy that turns the network on), and npm's log
pointer leads to a file that exists after the run (issue 11, items 11 and 12; both backends)."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from support import packages as pkg
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


def test_a_failing_install_script_gets_the_offline_hint_and_a_log_that_exists(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    failing = pkg.npm_package("sbox-needs-net", "1.0.0", {"index.js": ""},
                              scripts={"postinstall": "node -e \"console.error('fetching a binary'); process.exit(3)\""})
    project = tmp_path / "project"
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project / "sbox.yaml")
    with NpmRegistry([failing]) as registry:
        (project / "package.json").write_text(json.dumps(
            {"name": "app", "version": "0.0.0", "private": True, "dependencies": {"sbox-needs-net": "1.0.0"}}))
        env = dict(os.environ, npm_config_registry=f"{registry.url}/", npm_config_update_notifier="false",
                   SBOX_QUIET="0")
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    assert result.returncode != 0
    assert "sbox: step 2 [scripts] exited 3; stopping" in result.stderr, result.stderr[-2000:]
    if backend == "bwrap" or os.geteuid() == 0:  # sbox hears the phase's lookups (egress/lookups.py): none
        assert "sbox: the scripts phase looked up no host name before it failed" in result.stderr, result.stderr
        assert "install scripts and builds run with the network off" not in result.stderr, result.stderr
    else:  # a root daemon's container, sbox an ordinary user: unheard, so the remedy is given
        assert "run with the network off" in result.stderr and "a profile npm:scripts with env:" in result.stderr
    logs = re.findall(r"A complete log of this run can be found in: (\S+)", result.stderr)
    assert logs, result.stderr[-2000:]
    assert all(Path(p).is_file() for p in logs), logs  # the pointer leads somewhere after the run


WANTS = "prebuilt.sbox-lookups.test"  # a name no resolver knows; nothing leaves the sandbox anyway


def _downloading(project: Path, backend: str) -> dict[str, str]:
    """A project that depends on _package(); sbox's environment."""
    project.mkdir()
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    (project / "package.json").write_text(json.dumps(
        {"name": "app", "version": "0.0.0", "private": True, "dependencies": {"sbox-downloads": "1.0.0"}}))
    return dict(os.environ, npm_config_update_notifier="false", SBOX_QUIET="0")


def _package() -> bytes:
    script = (f"require('dns').lookup('{WANTS}', (e) => {{ console.error('lookup: ' + (e && e.code)); "
              f"process.exit(3) }})")
    return pkg.npm_package("sbox-downloads", "1.0.0", {"index.js": "", "install.js": script},
                           scripts={"postinstall": "node install.js"})


def _told(result: subprocess.CompletedProcess[str]) -> int:
    """The script's lookup was refused at once, the failure names WANTS, and the record keeps it:
    the uid that wrote the record."""
    assert result.returncode != 0
    assert "lookup: EAI_AGAIN" in result.stderr, result.stderr[-2000:]  # refused, as a failed lookup
    line = [l for l in result.stderr.splitlines() if "tried to reach" in l]
    assert line and f"the scripts phase tried to reach {WANTS} " in line[0], result.stderr[-2000:]
    assert ("install scripts and builds run with the network off" in result.stderr
            and "a profile npm:scripts with env: [PUPPETEER_SKIP_DOWNLOAD]" in result.stderr), result.stderr
    record = Path(line[0].rsplit("; record: ", 1)[1])
    assert json.loads(record.read_text())["looked_up"] == [WANTS]
    writer = record.stat().st_uid
    record.unlink()
    return writer


@pytest.mark.parametrize("backend_name,locked", [("bwrap", False), ("docker", False), ("docker", True)])
def test_a_failing_install_script_is_told_which_names_it_tried_to_reach(
        tmp_path: Path, sbox_bin: str, backend_name: str, locked: bool) -> None:
    """As root, sbox hears the offline phase's lookups (egress/lookups.py), on bwrap and in a
    docker container alike: the failure names the host the script wanted, and the record beside
    the denials keeps it. On docker, with a lockfile naming install scripts, the scripts phase's
    container is started ahead while the download runs; without one, it is made in its turn."""
    from conftest import require_backend

    require_backend(backend_name)
    if os.geteuid() != 0:
        pytest.skip("as root only: test_an_ordinary_user_on_bwrap_is_told_too covers an ordinary user")
    project = tmp_path / "project"
    env = _downloading(project, backend_name)
    trust(project / "sbox.yaml")
    tgz = _package()
    with NpmRegistry([tgz]) as registry:
        env["npm_config_registry"] = f"{registry.url}/"
        if locked:
            (project / "package-lock.json").write_text(json.dumps(_lockfile(registry.url, tgz)))
        result = run_sbox(sbox_bin, ["run", "--", "npm", "install"], project, env=env)
    _told(result)


def _lockfile(registry: str, tgz: bytes) -> dict[str, object]:
    """package-lock.json for _downloading's project: sbox-downloads has install scripts."""
    import base64
    import hashlib

    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    return {"name": "app", "version": "0.0.0", "lockfileVersion": 3, "requires": True, "packages": {
        "": {"name": "app", "version": "0.0.0", "dependencies": {"sbox-downloads": "1.0.0"}},
        "node_modules/sbox-downloads": {
            "version": "1.0.0", "resolved": f"{registry}/sbox-downloads/-/sbox-downloads-1.0.0.tgz",
            "integrity": integrity, "hasInstallScript": True, "license": "MIT"}}}


@pytest.mark.parametrize("backend_name", ["bwrap", "docker"])
def test_a_rebuild_alone_is_told_too(tmp_path: Path, sbox_bin: str, backend_name: str) -> None:
    """`npm rebuild` is one offline step, the run's first: on docker no container was started
    ahead for it, and one is made now behind the gate so that sbox listens before it runs."""
    from conftest import require_backend

    require_backend(backend_name)
    if os.geteuid() != 0:
        pytest.skip("as root only: test_an_ordinary_user_on_bwrap_is_told_too covers an ordinary user")
    project = tmp_path / "project"
    env = _downloading(project, backend_name)
    installed = project / "node_modules" / "sbox-downloads"
    installed.mkdir(parents=True)
    (installed / "package.json").write_text(json.dumps(
        {"name": "sbox-downloads", "version": "1.0.0", "scripts": {"postinstall": "node install.js"}}))
    with tarfile.open(fileobj=io.BytesIO(_package())) as tar:
        member = tar.extractfile("package/install.js")
        assert member is not None
        (installed / "install.js").write_bytes(member.read())
    trust(project / "sbox.yaml")
    result = run_sbox(sbox_bin, ["run", "--", "npm", "rebuild"], project, env=env)
    assert f"npm rebuild -> sandbox ({backend_name}), profile npm:scripts, network off" in result.stderr, \
        result.stderr[-2000:]
    _told(result)


@pytest.mark.parametrize("lockfile", [False, True])
def test_an_ordinary_user_on_bwrap_is_told_too(sbox_bin: str, lockfile: bool) -> None:
    """sbox as an ordinary user (root becomes nobody with setpriv) hears the lookups of bwrap's
    sandbox too: a child of sbox enters the user namespace bwrap made, then its network namespace
    (egress/userns.py). With the lockfile naming the package's script, the scripts phase starts
    while the download runs (backends/bwrapahead.py), and is heard all the same."""
    from conftest import require_backend

    require_backend("bwrap")
    with _Ordinary(sbox_bin) as user:
        project = Path(user.home).parent / "project"
        env = _downloading(project, "bwrap")
        env.update(HOME=user.home, USER="nobody", LOGNAME="nobody")
        for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
                     "SBOX_STATE_DIR", "SBOX_CACHE_DIR", "SBOX_USER_CONFIG"):
            env.pop(name, None)
        user.own(project)
        assert user.run(["trust", "sbox.yaml"], project, env).returncode == 0
        tgz = _package()
        with NpmRegistry([tgz]) as registry:
            env["npm_config_registry"] = f"{registry.url}/"
            if lockfile:
                (project / "package-lock.json").write_text(json.dumps(_lockfile(registry.url, tgz)))
                user.own(project)
            result = user.run(["run", "--", "npm", "ci" if lockfile else "install"], project, env)
        assert _told(result) == user.uid != 0  # sbox ran as an ordinary user


class _Ordinary:
    """sbox run as an ordinary user: this one, or nobody when the tests run as root (setpriv),
    through the interpreter running the tests when nobody may run it, else the system's python3
    of the same version, with sbox's package and its dependencies on the path."""

    def __init__(self, sbox_bin: str) -> None:
        self.sbox_bin = sbox_bin
        self.root = tempfile.mkdtemp(prefix="sbox-ordinary-")
        self.home = os.path.join(self.root, "home")
        self.prefix: list[str] = []
        self.uid = os.getuid()

    def __enter__(self) -> _Ordinary:
        try:
            return self._enter()
        except BaseException:  # a skip too: the directory goes
            self.__exit__()
            raise

    def _enter(self) -> _Ordinary:
        os.mkdir(self.home)
        if os.geteuid() != 0:
            return self
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is not installed: cannot run sbox as an ordinary user")
        os.chmod(self.root, 0o755)
        import pwd

        self.uid = pwd.getpwnam("nobody").pw_uid
        self.own(Path(self.home))
        python = _python_for_nobody()
        if python is None:
            pytest.skip("no Python of this version that nobody may run (the tests' own lies under a private home)")
        import sbox_shim

        package = os.path.dirname(os.path.dirname(os.path.abspath(sbox_shim.__file__)))
        site = [p for p in sys.path if p.endswith("site-packages")]
        if not all(_others_may_enter(path) for path in (package, *site)):
            # nobody may not read them where they are (a clone under /root): copies nobody may read
            copies = os.path.join(self.root, "lib")
            shutil.copytree(os.path.join(package, "sbox_shim"), os.path.join(copies, "sbox", "sbox_shim"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            for i, path in enumerate(site):
                shutil.copytree(path, os.path.join(copies, f"site{i}"), symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            package, site = os.path.join(copies, "sbox"), [os.path.join(copies, f"site{i}") for i in range(len(site))]
        script = os.path.join(self.root, "sbox")
        with open(script, "w") as f:
            f.write(f"#!{python} -I\nimport sys\nsys.path[:0] = {[package, *site]!r}\n"
                    "from sbox_shim.entry import main\nmain()\n")
        os.chmod(script, 0o755)
        self.sbox_bin = script
        self.prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        version = self.run(["--version"], Path(self.root), dict(os.environ, HOME=self.home))
        assert version.returncode == 0, f"sbox cannot run as nobody: {version.stderr[-1000:]}"
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def own(self, path: Path) -> None:
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            for at in [path, *path.rglob("*")]:
                os.lchown(at, nobody.pw_uid, nobody.pw_gid)

    def run(self, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, self.sbox_bin, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)


def _python_for_nobody() -> str | None:
    """An interpreter of this version that nobody may run: this one if its directories let
    others in, else the system's."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        if os.path.isfile(python) and _others_may_enter(os.path.dirname(python)) and os.stat(python).st_mode & 0o001:
            return python
    return None


def _others_may_enter(directory: str) -> bool:
    """Each directory down to this one lets others in (the test is root: os.access says yes)."""
    return all(os.stat(d).st_mode & 0o001 for d in [*_parents(directory), directory])


def _parents(path: str) -> list[str]:
    parents = []
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        parents.append(path)
    return parents
