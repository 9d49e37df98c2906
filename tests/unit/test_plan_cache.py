"""The plan cache's pure parts: its key, the facts it re-checks, what it stores and refuses.

Running records in real sandboxes is tests/e2e/test_plan_cache.py.
"""
from __future__ import annotations

import marshal
import os
import time
import types
from pathlib import Path

import pytest

from sbox_shim import compiled, kept, launcher, layout, recorder
from sbox_shim.backends import bwraprun
from sbox_shim.build import build_plan
from sbox_shim.config import Config, Limits, Profile
from sbox_shim.host import Host
from sbox_shim.plan import Mount

BWRAP = types.SimpleNamespace(NAME="bwrap")
DOCKER = types.SimpleNamespace(NAME="docker")
ARGV = ["run", "--", "true"]


def _host(tmp_path: Path, **env: str) -> Host:
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "NPM_TOKEN": "s3cret-canary",
            "SBOX_STATE_DIR": str(tmp_path / "state")}
    base.update(env)
    (tmp_path / "project").mkdir(exist_ok=True)
    return Host(uid=os.getuid(), gid=os.getgid(), user="dev", home=str(tmp_path / "home"), cwd=str(tmp_path / "project"),
                env=base, shim_dirs=(), python="/usr/bin/python3", python_prefix="/usr",
                package_dir=compiled.PACKAGE, cache_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "state"))


def _plan(tmp_path: Path, profile: Profile | None = None, argv: tuple[str, ...] = ("true",),  # type: ignore[no-untyped-def]
          run_dir: str = "<run-dir>"):
    profiles = {"default": profile} if profile else {}
    config = Config(str(tmp_path / "project" / "sbox.yaml"), str(tmp_path / "project"), "bwrap", profiles)
    return build_plan(list(argv), config, _host(tmp_path), which=lambda name, path, shims: f"/usr/bin/{name}",
                      run_dir=run_dir)


# ---------------------------------------------------------------- the key


def test_key_covers_argv_cwd_and_environment() -> None:
    env = {"PATH": "/usr/bin", "HOME": "/h"}
    k = compiled.key(ARGV, env, "/p")
    assert compiled.key(ARGV, env, "/p") == k and len(k) == 64
    assert compiled.key(["run", "--", "false"], env, "/p") != k
    assert compiled.key(ARGV, env, "/q") != k
    assert compiled.key(ARGV, {**env, "HOME": "/other"}, "/p") != k
    assert compiled.key(ARGV, {**env, "NEW": "1"}, "/p") != k
    # argv is not joined ambiguously: ("a b") differs from ("a", "b")
    assert compiled.key(["run", "a b"], env, "/p") != compiled.key(["run", "a", "b"], env, "/p")


def test_key_ignores_shell_bookkeeping_only() -> None:
    env = {"PATH": "/usr/bin"}
    k = compiled.key(ARGV, env, "/p")
    assert compiled.key(ARGV, {**env, "_": "/usr/bin/strace", "OLDPWD": "/x"}, "/p") == k


# ---------------------------------------------------------------- facts


def test_facts_change_with_what_they_watch(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("a")
    before = compiled.fact("stat", str(f))
    f.write_text("bb")
    assert compiled.fact("stat", str(f)) != before
    assert compiled.fact("stat", str(tmp_path / "missing")) is None
    assert compiled.fact("exists", str(f)) is True and compiled.fact("exists", str(tmp_path / "missing")) is None
    link = tmp_path / "l"
    link.symlink_to("f")
    assert compiled.fact("link", str(link)) == "f" and compiled.fact("link", str(f)) is None
    assert compiled.fact("type", str(f)) != compiled.fact("type", str(tmp_path))
    assert compiled.fact("lstat", str(link)) != compiled.fact("stat", str(link))


def test_code_fact_moves_when_a_source_file_of_sbox_changes(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    for sub in compiled.SUBPACKAGES:
        (package / sub).mkdir(parents=True, exist_ok=True)
        (package / sub / "m.py").write_text("x = 1\n")
    for sub in ("backends", "trust", "guard"):
        before = compiled.fact("code", str(package))
        (package / sub / "m.py").write_text(f"x = 22  # {sub}\n")
        assert compiled.fact("code", str(package)) != before, sub


def test_every_subpackage_of_sbox_is_watched() -> None:
    """A source file in a subpackage the code fact does not list would not invalidate records."""
    package = Path(compiled.PACKAGE)
    subs = {str(p.parent.relative_to(package)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert {"" if s == "." else s for s in subs} <= set(compiled.SUBPACKAGES)


# ---------------------------------------------------------------- filling a record in


def test_fill_resolves_environment_and_fd_references() -> None:
    ref = compiled.REF
    template = ["--setenv", "TOKEN", f"{ref}env{ref}TOKEN", "--file", f"{ref}fd{ref}1", "/etc/hosts"]
    assert compiled._fill(template, {"TOKEN": "t"}, [10, 11]) == ["--setenv", "TOKEN", "t", "--file", "11", "/etc/hosts"]
    assert compiled._fill(template, {}, [10, 11]) is None


# ---------------------------------------------------------------- what may be cached


def test_a_plain_sandboxed_command_is_cacheable(tmp_path: Path) -> None:
    assert recorder.cacheable(_plan(tmp_path), BWRAP, _host(tmp_path)) is None


def test_an_unsandboxed_step_is_not_cached(tmp_path: Path) -> None:
    plan = _plan(tmp_path, Profile("default", mode="host"))
    assert "sandboxes only" in str(recorder.cacheable(plan, None, _host(tmp_path)))


@pytest.mark.parametrize("profile", [
    Profile("default", network=True, network_allow=("registry.npmjs.org",)),
    Profile("default", limits=Limits(timeout=5.0)),
    Profile("default", limits=Limits(memory=64 << 20)),
    Profile("default", limits=Limits(pids=50)),  # one the user set: a cgroup where one can be made
    Profile("default", image="debian"),
])
def test_what_compiled_cannot_run_alone_is_kept_for_the_runner(tmp_path: Path, profile: Profile) -> None:
    plan = _plan(tmp_path, profile)
    assert recorder.cacheable(plan, BWRAP, _host(tmp_path)) is None
    assert not recorder.alone(plan, _host(tmp_path))
    assert recorder.alone(_plan(tmp_path), _host(tmp_path))


def test_docker_is_kept_when_named_and_ecosystem_phases_go_to_the_runner(tmp_path: Path) -> None:
    assert "only when named" in str(recorder.cacheable(_plan(tmp_path), DOCKER, _host(tmp_path)))  # auto
    assert recorder.cacheable(_plan(tmp_path).replace(backend="docker"), DOCKER, _host(tmp_path)) is None
    two_phase = _plan(tmp_path, argv=("npm", "install"))
    assert len(two_phase.steps) == 2
    assert recorder.cacheable(two_phase, BWRAP, _host(tmp_path)) is None
    assert not recorder.alone(two_phase, _host(tmp_path))
    assert recorder.store(ARGV, two_phase, BWRAP, _host(tmp_path), None, "") is None  # no probes: not kept


def test_a_whole_plan_is_kept_as_data_and_restored_for_a_new_run(tmp_path: Path) -> None:
    from sbox_shim import replay

    plan = _plan(tmp_path, argv=("npm", "install"), run_dir="/tmp/sbox-run-1-aa")
    env = {"NPM_TOKEN": "s3cret-canary", **_host(tmp_path).env}
    plan = plan.replace(steps=tuple(s.replace(env=(*s.env, ("NPM_TOKEN", "s3cret-canary")))
                               for s in plan.steps))
    data = replay.encode(replay.referenced(plan, env))
    assert "s3cret-canary" not in repr(data)
    restored = replay.restore(data, "/tmp/sbox-run-1-aa", "/tmp/sbox-run-2-bb", env)
    assert restored is not None and restored.steps[0].environ["NPM_TOKEN"] == "s3cret-canary"
    assert "/tmp/sbox-run-1-aa" not in repr(restored) and "/tmp/sbox-run-2-bb" in repr(restored)
    assert replay.restore(data, "/tmp/sbox-run-1-aa", "/tmp/sbox-run-1-aa", env) == plan
    assert replay.restore(data, "/tmp/sbox-run-1-aa", "/x", {k: v for k, v in env.items() if k != "NPM_TOKEN"}) is None
    with pytest.raises(KeyError):
        replay.decode(["@", "Popen", {}])


def test_a_plan_cache_inside_a_writable_mount_is_not_used(tmp_path: Path) -> None:
    host = _host(tmp_path, SBOX_STATE_DIR=str(tmp_path / "project" / ".state"))
    config = Config(str(tmp_path / "project" / "sbox.yaml"), str(tmp_path / "project"), "bwrap", {})
    plan = build_plan(["true"], config, host, which=lambda name, path, shims: f"/usr/bin/{name}")
    assert "writable" in str(recorder.cacheable(plan, BWRAP, host))


def test_a_record_holds_no_environment_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sbox_shim.backends.bwrap.options_of", lambda path, state=None: frozenset({"--disable-userns"}))
    host = _host(tmp_path)
    plan = _plan(tmp_path, Profile("default", env=("NPM_TOKEN",)))
    assert plan.steps[0].environ["NPM_TOKEN"] == "s3cret-canary"
    path = recorder.store(ARGV, plan, BWRAP, host, None, "sbox: true")  # type: ignore[arg-type]
    assert path and Path(path).parent == tmp_path / "state" / "plans"
    data = Path(path).read_bytes()
    assert b"s3cret-canary" not in data
    record = marshal.loads(data)
    i = record["options"].index("NPM_TOKEN")
    assert record["options"][i + 1] == f"{compiled.REF}env{compiled.REF}NPM_TOKEN"
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(Path(path).parent).st_mode & 0o777 == 0o700


def test_cache_off_writes_nothing(tmp_path: Path) -> None:
    host = _host(tmp_path, SBOX_PLAN_CACHE="0")
    assert recorder.store(ARGV, _plan(tmp_path), BWRAP, host, None, "") is None  # type: ignore[arg-type]
    assert not (tmp_path / "state" / "plans").exists()


def test_records_are_read_only_when_private(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir(mode=0o700)
    record = plans / "x.plan"
    record.write_bytes(marshal.dumps({"format": compiled.FORMAT, "facts": []}))
    record.chmod(0o600)
    assert compiled._read(str(record)) is not None
    record.chmod(0o620)
    assert compiled._read(str(record)) is None
    record.chmod(0o600)
    plans.chmod(0o777)
    assert compiled._read(str(record)) is None
    plans.chmod(0o700)
    record.write_bytes(b"\x00garbage")
    assert compiled._read(str(record)) is None


def test_old_records_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept, "KEEP", 3)
    for i in range(5):
        kept.write_bytes(str(tmp_path / "plans" / f"{i}.plan"), b"x")
        os.utime(tmp_path / "plans" / f"{i}.plan", ns=(i * 10**9, i * 10**9))
    kept.prune(str(tmp_path / "plans"))
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["2.plan", "3.plan", "4.plan"]


# ---------------------------------------------------------------- sbox's own directories


def test_own_directories_inside_a_writable_mount_become_read_only(tmp_path: Path) -> None:
    state = tmp_path / "project" / ".state"
    state.mkdir(parents=True)
    mounts = [Mount(str(tmp_path / "project"), str(tmp_path / "project"), readonly=False),
              Mount("", "/home/u", readonly=False, kind="tmpfs")]
    own = layout.own_mounts(mounts, [str(state), str(tmp_path / "elsewhere"), "/home/u/.local/state/sbox"])
    assert own == [Mount(str(state), str(state), readonly=True, kind="cache")]


def test_own_directories_are_found_through_links_and_protected_before_they_exist(tmp_path: Path) -> None:
    """A state dir named through a link into the project (Fedora Atomic's /home -> /var/home), or
    one not made yet, must not be left for the sandbox to write or create."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "alias").symlink_to(project)
    mounts = [Mount(str(project), str(project), readonly=False)]
    own = layout.own_mounts(mounts, [str(tmp_path / "alias" / ".state"), str(tmp_path / "alias" / ".config" / "sbox")])
    assert own == [Mount(str(project / ".state"), str(project / ".state"), readonly=True, kind="cache"),
                   Mount(str(project / ".config" / "sbox"), str(project / ".config" / "sbox"), readonly=True,
                         kind="cache")]


def test_small_etc_files_are_copied_and_directories_bound() -> None:
    mounts = {m.target: m for m in layout.toolchain_mounts(
        exists=lambda p: p in ("/usr", "/etc/ssl/certs", "/etc/services"),
        readlink=lambda p: None,
        is_file=lambda p: p == "/etc/services")}
    assert mounts["/etc/services"].kind == "copy" and mounts["/etc/ssl/certs"].kind == "bind"
    assert mounts["/usr"].kind == "bind"


# ---------------------------------------------------------------- bwrap's status and the launcher


@pytest.mark.parametrize("line, pid, code", [
    (b'{ "child-pid": 4242, "cgroup-namespace": 4026531835 }', 4242, None),
    (b'{ "exit-code": 3 }', None, 3),
    (b'{"exit-code":0}', None, 0),
    (b'not json', None, None),
])
def test_status_lines(line: bytes, pid: int | None, code: int | None) -> None:
    r, w = os.pipe()
    os.write(w, line + b"\n")
    os.close(w)
    status = bwraprun.Status(r)
    status.finish()
    assert (status.child_pid, status.exit_code) == (pid, code)


def test_launcher_starts_python_isolated_and_names_its_packages(tmp_path: Path) -> None:
    path = tmp_path / "sbox"
    launcher.write(str(path), python="/venv/bin/python", paths=["/venv/lib/site-packages"])
    text = path.read_text()
    assert text.startswith("#!/venv/bin/python -IS\n") and "sys.path.insert(0, '/venv/lib/site-packages')" in text
    assert os.access(path, os.X_OK)
    launcher.write(str(path), python="/venv/bin/python", paths=["/v2"])  # its own launcher: replaced
    assert "/v2" in path.read_text()


def test_launcher_never_replaces_someone_elses_file(tmp_path: Path) -> None:
    path = tmp_path / "sbox"
    path.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(SystemExit, match="not sbox's"):
        launcher.write(str(path))
    assert path.read_text() == "#!/bin/sh\necho mine\n"


# ---------------------------------------------------------------- parsed config files


def test_a_parsed_config_is_kept_by_content_and_read_only_when_private(tmp_path: Path) -> None:
    from sbox_shim import config

    path = tmp_path / "sbox.yaml"
    path.write_text("version: 1\nprofiles:\n  default:\n    network: off\n")
    parsed = tmp_path / "state" / "parsed"
    first = config.read_document(str(path), str(parsed))
    [copy] = list(parsed.iterdir())
    assert (first.data, first.lines[("profiles", "default", "network")]) == (
        {"version": 1, "profiles": {"default": {"network": False}}}, 4)
    kept.write_private(str(copy), ({"version": 1, "backend": "docker"}, {(): 1}))
    assert config.read_document(str(path), str(parsed)).data["backend"] == "docker"  # served from the copy
    copy.chmod(0o666)
    assert config.read_document(str(path), str(parsed)).data == first.data  # someone else's: parsed again
    path.write_text("version: 1\nbackend: bwrap\n")
    assert config.read_document(str(path), str(parsed)).data == {"version": 1, "backend": "bwrap"}


def test_errors_from_a_kept_config_keep_their_lines(tmp_path: Path) -> None:
    from sbox_shim import config
    from sbox_shim.errors import ConfigError

    path = tmp_path / "sbox.yaml"
    path.write_text("version: 1\nprofiles:\n  default:\n    netwrk: off\n")
    for _ in range(2):  # parsed, then kept
        with pytest.raises(ConfigError, match=r"sbox.yaml:4: profiles.default.netwrk: unknown key"):
            config.parse(config.read_document(str(path), str(tmp_path / "parsed")), str(tmp_path))
    assert len(list((tmp_path / "parsed").iterdir())) == 1


def test_the_warm_path_runs_exactly_the_cold_paths_bwrap_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filled in with the same environment, a record's options are the cold path's, fd for fd."""
    from sbox_shim.backends import bwrap, seccomp
    from sbox_shim.backends.bwrapargs import bwrap_options

    monkeypatch.setattr("sbox_shim.backends.bwrap.options_of", lambda path, state=None: frozenset({"--disable-userns"}))
    host = _host(tmp_path)
    plan = _plan(tmp_path, Profile("default", env=("NPM_TOKEN",), network=True))
    path = recorder.store(ARGV, plan, BWRAP, host, None, "")  # type: ignore[arg-type]
    assert path is not None
    record = compiled._read(path)
    assert record is not None
    step = plan.steps[0]
    fds = list(range(100, 100 + len(bwrap.data_files(step))))
    targets = [target for target, _, _ in bwrap.data_files(step)]
    assert [t for t, _, _ in record["files"]] == targets
    pins = list(range(200, 200 + len(step.pinned())))
    assert pins and record["pins"] == [step.project, [s for s, _ in step.pinned()], [t for _, t in step.pinned()]]
    cold = bwrap_options(step, list(zip(targets, fds)), disable_userns=True, seccomp=99, masked=bwrap.masked_proc(),
                         pinned={target: fd for (_, target), fd in zip(step.pinned(), pins)})
    # the filter's fd comes after the files', then the pinned binds'
    assert compiled._fill(record["options"], host.env, [*fds, 99, *pins]) == cold
    at = cold.index("--bind-fd")  # the project root is bound by fd, not by path
    assert cold[at:at + 3] == ["--bind-fd", "200", step.project]
    assert record["seccomp"] == seccomp.kept_filter(host.state_dir) and "--seccomp" in cold
    assert record["argv"] == list(step.argv) and record["host_dns"] is True  # network on: the host's DNS


def test_bwraps_options_are_kept_per_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from sbox_shim.backends import bwrap

    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho '--args FD  --disable-userns  --json-status-fd FD'\n")
    fake.chmod(0o755)
    bwrap.forget_options()
    state = str(tmp_path / "state")
    assert bwrap.options_of(str(fake), state) == {"--args", "--disable-userns", "--json-status-fd"}
    assert len(list((tmp_path / "state" / "bwrap").iterdir())) == 1
    bwrap.forget_options()

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("bwrap --help ran again")

    monkeypatch.setattr(subprocess, "run", no_process)
    assert "--disable-userns" in bwrap.options_of(str(fake), state)  # from the kept copy
    bwrap.forget_options()
    fake.write_text("#!/bin/sh\necho '--args FD'\n")  # another binary at that path: asked again
    monkeypatch.undo()
    assert bwrap.options_of(str(fake), state) == {"--args"}
    bwrap.forget_options()


def test_a_big_file_read_while_planning_is_known_by_identity_and_any_write_shows(tmp_path: Path) -> None:
    """A tool's binary whose first bytes planning read (node: 100 MB) is not digested on every warm
    run; rewriting it, even with its size and times put back, changes the fact (its ctime)."""
    big = tmp_path / "node"
    big.write_bytes(b"\x7fELF" + b"\0" * compiled.DIGESTED)
    small = tmp_path / ".npmrc"
    small.write_text("fund=false\n")
    seen = compiled.fact("content", str(big))
    assert isinstance(seen, tuple) and seen[0] == "big"
    assert isinstance(compiled.fact("content", str(small)), str)  # small: the digest, as before
    st = big.stat()
    time.sleep(0.01)
    with open(big, "r+b") as f:  # same size, one byte changed, times restored
        f.seek(1)
        f.write(b"F")
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert big.stat().st_size == st.st_size and big.stat().st_mtime_ns == st.st_mtime_ns
    assert compiled.fact("content", str(big)) != seen


@pytest.mark.parametrize("uid, nproc", [(1000, 4096), (0, None)])
def test_the_default_pids_brake_is_kept_for_the_warm_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           uid: int, nproc: int | None) -> None:
    """A user's plans with the default `limits.pids` run on the warm path, which sets the same
    RLIMIT_NPROC the cold path does (none for root, whom the kernel exempts)."""
    monkeypatch.setattr("os.getuid", lambda: uid)
    host = _host(tmp_path)
    plan = _plan(tmp_path)
    assert plan.steps[0].limits.pids == 4096 and recorder.alone(plan, host)
    path = recorder.store(ARGV, plan, BWRAP, host, None, "")  # type: ignore[arg-type]
    assert path is not None
    record = compiled._read(path)
    assert record is not None and record["nproc"] == nproc
