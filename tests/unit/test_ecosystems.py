"""The built-in two-phase policies (npm, pip, cargo, go), pure: config in temp files, no sandbox.

Each policy turns argv and what it reads of the caller's config into Phases: the argv of each
step, its network and allowlist (with the registry the user configured), the local paths it
mounts, and which step gets credentials. Commands outside the install family return None.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from sbox_shim import ecosystems
from sbox_shim.build import build_plan
from sbox_shim.config import Config
from sbox_shim.ecosystems import Context, Phase, url_entry
from sbox_shim.ecosystems.npm_driver import SCRIPTS_JS
from sbox_shim.host import Host
from sbox_shim.plan import File, Mount

NPM_ALLOW = ("*.npmjs.org", "*.yarnpkg.com")


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("project", "home", "cache", "elsewhere")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def ctx(where: dict[str, Path], env: dict[str, str] | None = None, real: str | None = None,
        cwd: Path | None = None) -> Context:
    return Context(cwd=str(cwd or where["project"]), project_root=str(where["project"]), home=str(where["home"]),
                   env=env or {}, cache_dir=str(where["cache"]), real_tool=real)


def phases(argv: str, c: Context) -> tuple[Phase, ...] | None:
    return ecosystems.phases(argv.split(), c)


def two(argv: str, c: Context) -> tuple[Phase, Phase]:
    found = phases(argv, c)
    assert found is not None and len(found) == 2, found
    assert [p.label for p in found] == ["download", "scripts"]
    assert found[0].network is True and found[1].network is False and found[1].allow == ()
    return found[0], found[1]


def mounts(phase: Phase) -> dict[str, Mount]:
    return {m.target: m for m in phase.mounts}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the dispatcher ---------------------------------------------------------------------------


def test_every_shimmed_tool_has_a_policy_and_others_pass(where: dict[str, Path]) -> None:
    assert set(ecosystems.tools()) >= {"npm", "npx", "pnpm", "yarn", "pip", "pip3", "cargo", "go"}
    assert phases("make deps", ctx(where)) is None
    assert ecosystems.phases([], ctx(where)) is None
    found = ecosystems.phases(["/usr/local/bin/npm", "install"], ctx(where))  # by basename
    assert found is not None and found[0].argv[0] == "/usr/local/bin/npm"


@pytest.mark.parametrize("url,entry", [
    ("https://registry.example.com/", "registry.example.com"),
    ("http://127.0.0.1:4873/", "127.0.0.1:4873"),
    ("https://npm.example:443/x", "npm.example"),
    ("sparse+http://localhost:8080/index/", "localhost:8080"),
    ("http://[::1]:9000/simple", "[::1]:9000"),
    ("file:///srv/wheels", None),
    ("/srv/wheels", None),
])
def test_url_entry(url: str, entry: str | None) -> None:
    assert url_entry(url) == entry


URL_PIECES = ("http", "https", "HTTPS", "ftp", "://", ":", "/", "//", "@", "[", "]", "::1", "?", "#", "\\", "%2e",
              "\t", " ", ".", "-", "reg", "Reg.Example", "K", "\u212a", "127.0.0.1", "0", "80", "443", "99999",
              "00080", "x", "é", "sparse+")


def test_url_parts_read_registry_urls_as_urllib_does() -> None:
    """The common shape is read without urllib.parse (and the ipaddress it loads): for every URL,
    the same scheme, host and port as urllib.parse, or None alike; many shapes tried, each built
    from pieces that matter to a URL parser."""
    import random

    from sbox_shim.ecosystems import _PLAIN_URL, url_parts, urllib_parts

    rng = random.Random(11)
    urls = [f"{s}://{h}{p}{rest}" for s in ("http", "HTTPS", "ftp") for h in ("reg.example", "Reg.Example.", "a..b", "-", "K")
            for p in ("", ":", ":0", ":8080", ":00080", ":65535", ":65536", ":99999", ":8o")
            for rest in ("", "/", "/x?y#z", "?a@b", "#@evil", "/a b", "\\@evil/", "/%2e/\t")]
    urls += ["".join(rng.choice(URL_PIECES) for _ in range(rng.randint(1, 9))) for _ in range(20000)]
    urls += [f"https://{''.join(rng.choice(URL_PIECES) for _ in range(rng.randint(1, 5)))}/" for _ in range(20000)]
    plain = 0
    for url in urls:
        plain += _PLAIN_URL.fullmatch(url) is not None
        assert url_parts(url) == urllib_parts(url), url
    assert plain > 500  # the fast reading was exercised, not only the fallback


def test_is_ip_is_ipaddresses() -> None:
    import ipaddress

    from sbox_shim.registries import is_ip

    for text in ("1.2.3.4", "01.2.3.4", "1.2.3", "256.1.1.1", "1.2.3.4.5", "", ".", "::1", "fe80::1%eth0", "[::1]",
                 "a:b", "registry.npmjs.org", "1e2.3.4.5", "١.٢.٣.٤", "::ffff:1.2.3.4", "0x7f.0.0.1"):
        try:
            ipaddress.ip_address(text)
            expected = True
        except ValueError:
            expected = False
        assert is_ip(text) is expected, text


def test_is_loopback_is_ipaddresses() -> None:
    import ipaddress

    from sbox_shim.network import _is_loopback

    for text in ("127.0.0.1", "127.255.0.9", "128.0.0.1", "0.0.0.0", "10.1.2.3", "1.2.3.4", "::1", "::ffff:127.0.0.1",
                 "fe80::1", "2001:db8::1", "255.255.255.255", "126.9.9.9"):
        assert _is_loopback(text) is ipaddress.ip_address(text).is_loopback, text
    for bad in ("127.0.0.01", "127.0.0.256", "127.0.0", "١٢٧.0.0.1", "x"):
        with pytest.raises(ValueError):
            _is_loopback(bad)


def test_planning_an_install_loads_no_module_it_does_not_need(where: dict[str, Path]) -> None:
    """typing, hashlib (OpenSSL), urllib.parse, ipaddress and the idna codec cost about 13 ms of
    every plan here together: an `npm install` is planned, and its registry's name resolved by the
    system's resolver, without loading them."""
    import sys

    write(where["project"] / "package.json", '{"name": "a", "version": "0.0.0"}\n')
    write(where["project"] / ".npmrc", "registry=http://localhost:4873/\n")
    code = """if True:
        import sys
        sys.path.insert(0, sys.argv[1])
        from sbox_shim import resolve
        from sbox_shim.build import build_plan
        from sbox_shim.config import Config
        from sbox_shim.host import Host
        project, home, cache, state = sys.argv[2:6]
        asked = []

        def loopback_only(name):  # the system's resolver, for a name /etc/hosts answers
            asked.append(name)
            if name != "localhost":
                raise OSError(-2, "not asked of any server in a test")
            return resolve.system_resolver(name)

        host = Host(uid=1000, gid=1000, user="dev", home=home, cwd=project, env={"PATH": "/usr/bin:/bin"},
                    shim_dirs=(), python="/usr/bin/python3", python_prefix="/usr", package_dir="/opt/sbox/sbox_shim",
                    cache_dir=cache, state_dir=state)
        plan = build_plan(["npm", "install"], Config(project + "/sbox.yaml", project), host, resolver=loopback_only,
                          which=lambda n, p, s: "/usr/bin/" + n)
        assert [s.label for s in plan.steps] == ["download", "scripts"] and "localhost" in asked, (plan, asked)
        print(sorted(m for m in ("typing", "hashlib", "urllib.parse", "ipaddress", "encodings.idna") if m in sys.modules))
    """
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(Path(ecosystems.__file__).parents[2]),
                          *(str(where[d]) for d in ("project", "home", "cache", "elsewhere"))],
                         capture_output=True, text=True, cwd=where["project"])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- npm --------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,download,scripts", [
    ("npm install", "npm install --ignore-scripts", "env node /etc/sbox-npm-scripts.js npm install"),
    ("npm i left-pad", "npm i left-pad --ignore-scripts", "env node /etc/sbox-npm-scripts.js npm i left-pad"),
    ("npm ci", "npm ci --ignore-scripts", "env node /etc/sbox-npm-scripts.js npm ci"),
    ("npm --prefix sub install", "npm --prefix sub install --ignore-scripts", "env node /etc/sbox-npm-scripts.js npm install --prefix sub"),
    ("pnpm add left-pad", "pnpm add left-pad --ignore-scripts", "pnpm rebuild"),
    ("yarn", "yarn --ignore-scripts", "npm rebuild"),
    ("yarn add left-pad", "yarn add left-pad --ignore-scripts", "npm rebuild"),
])
def test_npm_install_family_is_two_phases(where: dict[str, Path], argv: str, download: str, scripts: str) -> None:
    d, s = two(argv, ctx(where))
    assert " ".join(d.argv) == download and " ".join(s.argv) == scripts
    assert d.allow == NPM_ALLOW
    assert s.env["npm_config_offline"] == "true"


@pytest.mark.parametrize("argv", ["npm install --ignore-scripts", "npm ci --ignore-scripts=true"])
def test_npm_install_with_the_users_own_ignore_scripts_has_no_scripts_phase(where: dict[str, Path], argv: str) -> None:
    (only,) = phases(argv, ctx(where)) or ()
    assert only.label == "download" and only.network and "--ignore-scripts" in " ".join(only.argv)
    assert not only.hook  # nothing to scope, nothing to roll back to


def test_npm_scripts_phase_loads_the_users_options_but_registries_credentials_and_programs(
        where: dict[str, Path]) -> None:
    argv = ("npm ci --foreground-scripts --registry http://r.example --//r.example/:_authToken=tok "
            "--loglevel=silly --prefix sub --proxy=http://u:pw@h.example --script-shell=/bin/zsh "
            "--build-from-source https://u:pw@h.example/x.tgz --otp=123456 -- --not-an-option")
    d, s = two(argv, ctx(where))
    assert s.argv == ("env", "node", SCRIPTS_JS, "npm", "ci", "--foreground-scripts", "--loglevel=silly",
                      "--prefix", "sub", "--build-from-source")
    assert s.files[-1].target == SCRIPTS_JS and "@npmcli/run-script" in s.files[-1].content
    assert "tok" in " ".join(d.argv)  # the download phase runs the command as given


def test_npm_rebuild_alone_is_the_offline_phase(where: dict[str, Path]) -> None:
    (only,) = phases("npm rebuild", ctx(where)) or ()
    assert only.label == "scripts" and only.argv == ("npm", "rebuild") and only.network is False


@pytest.mark.parametrize("argv,prepare", [
    ("npm install", "npm run prepare"), ("npm ci", "npm run prepare"), ("npm i --no-audit", "npm run prepare"),
    ("pnpm install", "pnpm run prepare"), ("yarn", "npm run prepare"),
    ("npm install left-pad", None), ("npm update", None), ("pnpm add x", None),
])
def test_npm_bare_install_also_runs_the_projects_prepare_offline(where: dict[str, Path], argv: str,
                                                                 prepare: str | None) -> None:
    write(where["project"] / "package.json", '{"name": "a", "scripts": {"prepare": "husky"}}')
    found = phases(argv, ctx(where)) or ()
    assert [p.label for p in found] == ["download", "scripts"] + (["scripts"] if prepare else [])
    if prepare:
        assert " ".join(found[2].argv) == prepare and found[2].network is False
        assert found[2].files == tuple(f for f in found[1].files if f.target != SCRIPTS_JS)
        assert found[2].secrets == found[1].secrets


def test_npm_without_a_prepare_script_is_two_phases(where: dict[str, Path]) -> None:
    write(where["project"] / "package.json", '{"name": "a", "scripts": {"postinstall": "x"}}')
    two("npm install", ctx(where))
    write(where["project"] / "package.json", "not json")
    two("npm install", ctx(where))


@pytest.mark.parametrize("argv", ["npm run build", "npm test", "npm --version", "npm publish", "npx cowsay hi",
                                  "npm exec foo", "npm ls", "npm"])
def test_npm_other_commands_pass_through(where: dict[str, Path], argv: str) -> None:
    assert phases(argv, ctx(where)) is None


def test_npm_allowlist_takes_every_configured_registry(where: dict[str, Path]) -> None:
    write(where["project"] / ".npmrc", "registry=http://127.0.0.1:4873/\n")
    write(where["home"] / ".npmrc", "@corp:registry=https://npm.corp.example/\n")
    env = {"npm_config_registry": "https://env.example:8443/", "NPM_CONFIG_@other:registry": "https://other.example/"}
    d, _ = two("npm install --registry http://cli.example:81/ x", ctx(where, env))
    assert d.allow == NPM_ALLOW + ("npm.corp.example", "env.example:8443",
                                   "other.example", "cli.example:81")  # the user's config files, env, command line
    assert d.implied == ("127.0.0.1:4873",)  # the project's .npmrc: admitted, never an explicit entry


def test_npm_credentials_reach_the_download_phase_only(where: dict[str, Path]) -> None:
    user_rc = write(where["home"] / ".npmrc", "//npm.corp.example/:_authToken=${NPM_TOKEN}\n")
    project_rc = write(where["project"] / ".npmrc", "registry=https://npm.corp.example/\n")
    env = {"NPM_TOKEN": "t", "npm_config_loglevel": "warn", "npm_config__authToken": "t2"}
    d, s = two("npm install", ctx(where, env))
    assert mounts(d)[str(user_rc)] == Mount(str(user_rc), str(user_rc), readonly=True)
    assert str(user_rc) not in mounts(s)
    assert {"NPM_TOKEN", "NODE_AUTH_TOKEN", "npm_config__authToken", "npm_config_loglevel"} <= set(d.secrets)
    assert s.secrets == ("npm_config_loglevel",)
    assert s.files[0] == File(str(project_rc), "") and s.files[1].target == SCRIPTS_JS  # the .npmrc reads as empty
    assert d.files == ()


def test_npm_custom_user_config_is_carried_into_the_download_phase(where: dict[str, Path]) -> None:
    custom = write(where["elsewhere"] / "npmrc", "registry=https://custom.example/\n")
    d, s = two("npm install", ctx(where, {"npm_config_userconfig": str(custom)}))
    assert "custom.example" in d.allow
    assert str(custom) in mounts(d) and "npm_config_userconfig" in d.secrets
    assert str(custom) not in mounts(s) and "npm_config_userconfig" not in s.secrets


def test_npm_cache_is_sbox_s_while_downloading_and_an_empty_one_for_scripts(where: dict[str, Path]) -> None:
    ca = write(where["elsewhere"] / "ca.pem", "pem")
    write(where["project"] / ".npmrc", f"cafile={ca}\n")
    d, s = two("npm install", ctx(where))
    cache = str(where["cache"] / "npm")
    assert d.env["npm_config_cache"] == cache == s.env["npm_config_cache"]
    assert mounts(d)[cache] == Mount(cache, cache, readonly=False, kind="cache")
    # The shared cache holds registry URLs with their credentials (logs, index): never shown to scripts.
    assert mounts(s)[cache] == Mount("", cache, readonly=False, kind="tmpfs")
    assert mounts(d)[str(ca)].readonly and mounts(s)[str(ca)].readonly


def test_npm_logs_are_kept_per_phase_and_per_project(where: dict[str, Path]) -> None:
    """A phase writes its logs where they last after the run: never where another project's
    install reads them or finds a file it planted (a red-team finding: one `scripts` directory
    was every project's)."""
    other = where["project"].parent / "other"
    other.mkdir()
    logs = []
    for root in (where["project"], other):
        c = Context(cwd=str(root), project_root=str(root), home=str(where["home"]), env={},
                    cache_dir=str(where["cache"]), real_tool=None)
        d, s = two("npm install", c)
        logs += [d.env["npm_config_logs_dir"], s.env["npm_config_logs_dir"]]
        assert mounts(s)[s.env["npm_config_logs_dir"]].kind == "cache"
    assert len(set(logs)) == 4
    assert all(path.startswith(str(where["cache"] / "npm-logs") + "/") for path in logs)


# --- pip --------------------------------------------------------------------------------------


def wheelhouse(where: dict[str, Path]) -> str:
    """Where each run's own wheelhouse is made (scratch.py: below it, named after the run)."""
    return str(where["cache"] / "pip" / "runs")


def vctx(where: dict[str, Path], env: dict[str, str] | None = None, real: str | None = None) -> Context:
    """A context whose shell has the project's venv activated (pip refuses to install outside one)."""
    venv, _ = _venv(where)
    return ctx(where, {"VIRTUAL_ENV": str(venv), **(env or {})}, real=real)


def test_pip_install_downloads_to_a_wheelhouse_then_installs_offline(where: dict[str, Path]) -> None:
    d, s = two("pip install -U requests -r req.txt --compile", vctx(where))
    wh = wheelhouse(where)
    python = str(where["home"] / ".pyenv" / "versions" / "python-3.11" / "bin" / "python3.11")
    # sbox's own pip on the venv's base interpreter, through its fetch step: no shell wrapper.
    assert d.argv == (python, "-I", "-S", "/.sbox/pip", "download", "--dest", wh, "requests", "-r", "req.txt")
    assert mounts(d)["/.sbox/pip"].source.endswith("sbox_shim/ecosystems/pip_fetch.py")
    assert d.env["SBOX_PIP_BUILD_ARGS"] == "[]" and os.path.isdir(os.path.join(d.env["SBOX_PIP_HOME"], "pip"))
    assert s.argv == ("pip", "install", "--no-index", "--find-links", wh,
                      "-U", "requests", "-r", "req.txt", "--compile")
    assert d.allow == ("*.pypi.org", "files.pythonhosted.org")
    assert s.env["PIP_NO_INDEX"] == "1"
    assert mounts(d)[wh] == Mount(wh, wh, readonly=False, kind="run") and mounts(s)[wh] == Mount(wh, wh, kind="run")
    http = str(where["cache"] / "pip" / hashlib.sha256(str(where["project"]).encode()).hexdigest()[:16] / "http")
    assert d.env["PIP_CACHE_DIR"] == http and mounts(d)[http] == Mount(http, http, readonly=False, kind="cache")
    assert mounts(s)[http] == Mount("", http, readonly=False, kind="tmpfs")  # this project's, download phase only


def test_pip_build_requirements_are_fetched_with_the_index_and_binary_options(where: dict[str, Path]) -> None:
    d, _ = two("pip install -i http://127.0.0.1:1/simple --no-binary :all: --only-binary=cython --no-deps "
               "--pre -t x requests", vctx(where))
    import json

    assert json.loads(d.env["SBOX_PIP_BUILD_ARGS"]) == [
        "-i", "http://127.0.0.1:1/simple", "--no-binary", ":all:", "--only-binary=cython", "--pre"]


@pytest.mark.parametrize("argv", ["pip install x", "pip install --user x", "pip3 install -r req.txt",
                                  "pip install --target /elsewhere x", "pip install --prefix . x"])
def test_pip_install_outside_a_venv_is_refused_in_one_line(where: dict[str, Path], argv: str) -> None:
    from sbox_shim.errors import UsageError

    with pytest.raises(UsageError, match="pip install outside a virtual environment would install into the sandbox's throwaway HOME"):
        phases(argv, ctx(where, real="/usr/bin/pip"))


def test_pip_outside_a_venv_may_install_into_the_project_download_and_wheel(where: dict[str, Path]) -> None:
    _, s = two("pip install --target vendor x", ctx(where, real="/usr/bin/pip"))
    assert s.writable == ("vendor/",)
    _, s = two("pip install --dry-run x", ctx(where, real="/usr/bin/pip"))
    assert s.writable == ()
    d, s = two("pip wheel -w dist x", ctx(where, real="/usr/bin/pip"))
    assert d.argv[:2] == ("/usr/bin/pip", "download") or d.argv[:2] == ("pip", "download")
    assert s.writable == ("dist/",)


@pytest.mark.parametrize("argv", ["pip list", "pip freeze", "pip show x", "pip uninstall -y x", "pip --version",
                                  "pip3 config list"])
def test_pip_other_commands_pass_through(where: dict[str, Path], argv: str) -> None:
    assert phases(argv, ctx(where)) is None


def test_pip_download_alone_is_one_allowlisted_phase(where: dict[str, Path]) -> None:
    (only,) = phases("pip3 download -d out x", ctx(where)) or ()
    assert only.label == "download" and only.network and only.argv == ("pip3", "download", "-d", "out", "x")


def test_pip_wheel_keeps_its_wheel_dir_offline_only(where: dict[str, Path]) -> None:
    d, s = two("pip wheel -w dist x", vctx(where))
    assert d.argv[-1] == "x" and "-w" not in d.argv[3:] and d.argv[3:5] == ("/.sbox/pip", "download")
    assert s.argv[:2] == ("pip", "wheel") and s.argv[-3:] == ("-w", "dist", "x")


def test_pip_allowlist_takes_env_config_cli_and_requirements(where: dict[str, Path]) -> None:
    write(where["home"] / ".config" / "pip" / "pip.conf",
          "[global]\nindex-url = https://user.example/simple\n")
    write(where["project"] / "req.txt", "--extra-index-url http://127.0.0.1:3141/simple\nrequests\n")
    env = {"PIP_INDEX_URL": "http://127.0.0.1:8080/simple/", "PIP_EXTRA_INDEX_URL": "https://a.example/s https://b.example/s"}
    d, _ = two("pip install -r req.txt --index-url https://cli.example/simple x", vctx(where, env))
    assert d.allow[:2] == ("*.pypi.org", "files.pythonhosted.org")
    assert set(d.allow[2:]) == {"user.example", "127.0.0.1:8080", "a.example", "b.example", "cli.example"}
    assert d.implied == ("127.0.0.1:3141",)  # named by a requirements file: never an explicit entry


def test_pip_config_file_devnull_hides_the_user_config_as_pip_does(where: dict[str, Path]) -> None:
    write(where["home"] / ".config" / "pip" / "pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    d, _ = two("pip install x", vctx(where, {"PIP_CONFIG_FILE": os.devnull}))
    assert "user.example" not in d.allow
    assert d.allow == ("*.pypi.org", "files.pythonhosted.org")


def test_pip_user_config_is_mounted_for_the_download_phase_only(where: dict[str, Path]) -> None:
    conf = write(where["home"] / ".config" / "pip" / "pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    d, s = two("pip install x", vctx(where))
    assert mounts(d)[str(conf)].readonly and str(conf) not in mounts(s)


def test_pip_local_paths_are_mounted_read_only(where: dict[str, Path]) -> None:
    links = where["elsewhere"] / "wheels"
    links.mkdir()
    index = where["elsewhere"] / "simple"
    index.mkdir()
    env = {"PIP_FIND_LINKS": str(links), "PIP_INDEX_URL": f"file://{index}"}
    d, s = two("pip install x", vctx(where, env))
    for phase in (d, s):
        assert mounts(phase)[str(links)] == Mount(str(links), str(links))
        assert mounts(phase)[str(index)] == Mount(str(index), str(index))
    assert d.allow == ("*.pypi.org", "files.pythonhosted.org")  # file:// is no network entry


def test_pip_index_urls_and_config_file_reach_the_download_phase_only(where: dict[str, Path]) -> None:
    env = {"PIP_INDEX_URL": "https://u:p@idx.example/simple", "PIP_EXTRA_INDEX_URL": "https://x.example/s",
           "PIP_CONFIG_FILE": os.devnull, "PIP_PRE": "1", "PIP_FIND_LINKS": "/nonexistent"}
    d, s = two("pip install x", vctx(where, env))
    assert set(d.secrets) == set(env)
    assert set(s.secrets) == {"PIP_PRE", "PIP_FIND_LINKS"}


def _venv(where: dict[str, Path]) -> tuple[Path, Path]:
    base = where["home"] / ".pyenv" / "versions" / "python-3.11"
    write(base / "bin" / "python3.11", "").chmod(0o755)  # a Python installation: pyvenv.cfg is checked, not trusted
    write(base / "lib" / "python3.11" / "os.py", "")
    venv = where["project"] / ".venv"
    write(venv / "pyvenv.cfg", f"home = {base}/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n")
    write(venv / "bin" / "pip", "#!/bin/sh\n")
    return venv, base


def test_pip_in_a_venv_mounts_the_base_interpreter_and_writes_the_venv_when_installing(where: dict[str, Path]) -> None:
    venv, base = _venv(where)
    d, s = two(".venv/bin/pip install x", ctx(where, real=".venv/bin/pip"))
    for phase in (d, s):
        assert mounts(phase)[str(base)] == Mount(str(base), str(base), readonly=True)
    assert mounts(d)[str(venv)].readonly is True
    assert mounts(s)[str(venv)] == Mount(str(venv), str(venv), readonly=False)


def test_pip_venv_found_through_virtual_env_too(where: dict[str, Path]) -> None:
    venv, base = _venv(where)
    write(venv / "pip.conf", "[global]\nindex-url = http://127.0.0.1:9/simple\n")
    _, s = two("pip install x", ctx(where, {"VIRTUAL_ENV": str(venv)}, real="/usr/bin/pip"))
    assert str(base) in mounts(s) and mounts(s)[str(venv)].readonly is False
    d, _ = two("pip install x", ctx(where, {"VIRTUAL_ENV": str(venv)}, real="/usr/bin/pip"))
    assert "127.0.0.1:9" in d.implied  # the venv's own pip.conf (pip's "site" config): never explicit


def test_pip_without_a_venv_mounts_nothing_extra(where: dict[str, Path]) -> None:
    d, s = two("pip wheel x", ctx(where, real="/usr/bin/pip"))
    assert [m.target for m in d.mounts if m.kind not in ("cache", "run", "tmpfs")] == []
    assert [m.target for m in s.mounts if m.kind not in ("cache", "run", "tmpfs")] == []


def test_pip_venv_with_a_system_base_needs_no_mount(where: dict[str, Path]) -> None:
    venv = where["project"] / ".venv"
    write(venv / "pyvenv.cfg", "home = /usr/bin\n")
    _, s = two(".venv/bin/pip install x", ctx(where, real=str(venv / "bin" / "pip")))
    # the venv, writable, with its pyvenv.cfg read-only: no base interpreter to mount
    assert [(m.target, m.readonly) for m in s.mounts if m.kind not in ("cache", "run", "tmpfs")] == [
        (str(venv), False), (str(venv / "pyvenv.cfg"), True)]


# --- cargo ------------------------------------------------------------------------------------


def cargo_home(where: dict[str, Path]) -> str:
    return str(where["cache"] / "cargo")


@pytest.mark.parametrize("argv,fetch,offline", [
    ("cargo build", "cargo fetch", "cargo build --offline"),
    ("cargo build --release", "cargo fetch", "cargo build --release --offline"),
    ("cargo test --manifest-path a/Cargo.toml", "cargo fetch --manifest-path a/Cargo.toml",
     "cargo test --manifest-path a/Cargo.toml --offline"),
    ("cargo +nightly check --frozen", "cargo +nightly fetch --locked", "cargo +nightly check --frozen"),
    ("cargo run -- --port 1", "cargo fetch", "cargo run --offline -- --port 1"),
    ("cargo --color always build --target x86_64-unknown-linux-gnu",
     "cargo fetch --target x86_64-unknown-linux-gnu",
     "cargo --color always build --target x86_64-unknown-linux-gnu --offline"),
    ("cargo clippy", "cargo fetch", "cargo clippy --offline"),
])
def test_cargo_build_family_fetches_then_builds_offline(where: dict[str, Path], argv: str, fetch: str,
                                                         offline: str) -> None:
    d, s = two(argv, ctx(where))
    assert " ".join(d.argv) == fetch and " ".join(s.argv) == offline
    assert d.allow == ("*.crates.io", "static.crates.io")
    assert s.env["CARGO_NET_OFFLINE"] == "true"
    assert d.env["CARGO_HOME"] == s.env["CARGO_HOME"] == cargo_home(where)


@pytest.mark.parametrize("argv", ["cargo fetch", "cargo update -p serde", "cargo generate-lockfile", "cargo vendor",
                                  "cargo tree", "cargo metadata --format-version 1"])
def test_cargo_commands_that_compile_nothing_are_one_allowlisted_step(where: dict[str, Path], argv: str) -> None:
    (only,) = phases(argv, ctx(where)) or ()
    assert only.label == "download" and only.network and " ".join(only.argv) == argv


@pytest.mark.parametrize("argv", ["cargo fmt", "cargo --version", "cargo new x", "cargo install ripgrep",
                                  "cargo login", "cargo publish", "cargo"])
def test_cargo_other_commands_pass_through(where: dict[str, Path], argv: str) -> None:
    assert phases(argv, ctx(where)) is None


def test_cargo_allowlist_takes_source_replacement_registries_and_env(where: dict[str, Path]) -> None:
    user_home = where["elsewhere"] / "cargo-home"
    write(user_home / "config.toml",
          '[source.crates-io]\nreplace-with = "mirror"\n\n[source.mirror]\n'
          'registry = "sparse+http://127.0.0.1:7878/index/"\n\n'
          '[registries.corp]\nindex = "https://git.corp.example/index.git"\n')
    write(where["project"] / ".cargo" / "config.toml", '[registries.proj]\nindex = "sparse+https://proj.example/i/"\n')
    env = {"CARGO_HOME": str(user_home), "CARGO_REGISTRIES_EXTRA_INDEX": "sparse+https://extra.example:8443/"}
    d, _ = two("cargo build", ctx(where, env))
    assert d.allow == ("*.crates.io", "static.crates.io", "127.0.0.1:7878", "git.corp.example",
                       "extra.example:8443")
    assert d.implied == ("proj.example",)  # the project's own config: never an explicit entry


def test_cargo_project_config_is_found_from_a_subdirectory(where: dict[str, Path]) -> None:
    write(where["project"] / ".cargo" / "config.toml", '[registries.p]\nindex = "sparse+https://p.example/"\n')
    sub = where["project"] / "crates" / "a"
    sub.mkdir(parents=True)
    d, _ = two("cargo build", ctx(where, cwd=sub))
    assert "p.example" in d.implied


def test_cargo_config_in_both_phases_credentials_and_token_in_fetch_only(where: dict[str, Path]) -> None:
    user_home = where["elsewhere"] / "cargo-home"
    config = write(user_home / "config.toml", "[net]\nretry = 2\n")
    creds = write(user_home / "credentials.toml", '[registry]\ntoken = "t"\n')
    d, s = two("cargo build", ctx(where, {"CARGO_HOME": str(user_home), "CARGO_REGISTRY_TOKEN": "t"}))
    home = cargo_home(where)
    for phase in (d, s):
        assert mounts(phase)[f"{home}/config.toml"] == Mount(str(config), f"{home}/config.toml")
    assert mounts(d)[f"{home}/credentials.toml"] == Mount(str(creds), f"{home}/credentials.toml")
    assert f"{home}/credentials.toml" not in mounts(s)
    assert "CARGO_REGISTRY_TOKEN" in d.secrets and "CARGO_REGISTRY_TOKEN" not in s.secrets


def test_cargo_home_is_read_only_while_build_scripts_run(where: dict[str, Path]) -> None:
    d, s = two("cargo build", ctx(where))
    home = cargo_home(where)
    assert mounts(d)[home] == Mount(home, home, readonly=False, kind="cache")
    assert mounts(s)[home] == Mount(home, home, readonly=True, kind="cache")


def test_cargo_local_registry_and_rustup_are_mounted_read_only(where: dict[str, Path]) -> None:
    user_home = where["elsewhere"] / "cargo-home"
    local = where["elsewhere"] / "local-registry"
    local.mkdir()
    rustup = where["elsewhere"] / "rustup"
    rustup.mkdir()
    write(user_home / "config.toml", f'[source.crates-io]\nreplace-with = "l"\n\n[source.l]\nlocal-registry = "{local}"\n')
    d, s = two("cargo build", ctx(where, {"CARGO_HOME": str(user_home), "RUSTUP_HOME": str(rustup)}))
    for phase in (d, s):
        assert mounts(phase)[str(local)] == Mount(str(local), str(local))
        assert mounts(phase)[str(rustup)] == Mount(str(rustup), str(rustup))
        assert phase.env["RUSTUP_HOME"] == str(rustup)


# --- go ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", ["go build ./...", "go test -run X ./pkg", "go vet", "go run .", "go generate ./...",
                                  "go list -m all", "go mod vendor", "go mod verify", "go -C sub build"])
def test_go_build_family_downloads_then_runs_offline(where: dict[str, Path], argv: str) -> None:
    d, s = two(argv, ctx(where))
    assert d.argv == ("go", "mod", "download")
    assert " ".join(s.argv) == argv
    assert d.env["GOPROXY"] == "https://proxy.golang.org,direct" and s.env["GOPROXY"] == "off"
    assert s.env["GOFLAGS"] == "-mod=mod"
    assert d.allow == ("proxy.golang.org", "sum.golang.org")


@pytest.mark.parametrize("argv", ["go get example.com/x@v1.2.3", "go mod tidy", "go mod download",
                                  "go install example.com/cmd/x@latest"])
def test_go_commands_that_run_no_module_code_are_one_allowlisted_step(where: dict[str, Path], argv: str) -> None:
    (only,) = phases(argv, ctx(where)) or ()
    assert only.label == "download" and only.network and " ".join(only.argv) == argv
    assert only.env["GOPROXY"] == "https://proxy.golang.org,direct"


@pytest.mark.parametrize("argv", ["go version", "go env GOPATH", "go fmt ./...", "go mod init x", "go mod edit -go=1.21",
                                  "go doc fmt", "go"])
def test_go_other_commands_pass_through(where: dict[str, Path], argv: str) -> None:
    assert phases(argv, ctx(where)) is None


def test_go_allowlist_takes_goproxy_and_mounts_file_proxies(where: dict[str, Path]) -> None:
    files = where["elsewhere"] / "goproxy"
    files.mkdir()
    env = {"GOPROXY": f"http://127.0.0.1:3000,https://goproxy.corp.example|file://{files},direct",
           "GOSUMDB": "off", "GOFLAGS": "-mod=mod -modcacherw", "GONOSUMDB": "corp.example", "GOPATH": "/x"}
    d, s = two("go build", ctx(where, env))
    assert d.allow == ("proxy.golang.org", "sum.golang.org", "127.0.0.1:3000", "goproxy.corp.example")
    assert d.env["GOPROXY"] == env["GOPROXY"]
    for phase in (d, s):
        assert mounts(phase)[str(files)] == Mount(str(files), str(files))
        assert phase.env["GOSUMDB"] == "off" and phase.env["GONOSUMDB"] == "corp.example"
        assert phase.env["GOPATH"] != "/x"  # sbox's own
    assert s.env["GOFLAGS"] == "-mod=mod -modcacherw"


def test_go_with_goproxy_off_downloads_with_the_network_off(where: dict[str, Path]) -> None:
    """GOPROXY=off: go fetches nothing, so no name of the allowlist is resolved (red team 18 saw
    the plan look up proxy.golang.org on the host)."""
    for argv in ("go build", "go mod tidy"):
        d = phases(argv, ctx(where, {"GOPROXY": "off"}))[0]  # type: ignore[index]
        assert (d.label, d.network, d.allow) == ("download", False, ()), argv
    assert two("go build", ctx(where, {"GOPROXY": "off|https://proxy.example"}))[0].network


def test_go_module_cache_is_read_only_offline_and_the_build_cache_is_per_project(where: dict[str, Path]) -> None:
    d, s = two("go test ./...", ctx(where))
    mod = str(where["cache"] / "go" / "mod")
    assert mounts(d)[mod].readonly is False and mounts(s)[mod].readonly is True
    running = d.env["GOCACHE"]
    assert running.startswith(str(where["cache"] / "go" / "running") + "/")
    assert mounts(s)[running].readonly is False
    # what `go build` links from: a cache no command that runs module code is given (red team 15)
    for words in ("go build", "go install ./cmd", "go vet ./...", "go list -export ./..."):
        built = two(words, ctx(where))
        building = built[1].env["GOCACHE"]
        assert building.startswith(str(where["cache"] / "go" / "building") + "/"), words
        assert all(running not in mounts(p) for p in built), words
    for words in ("go run .", "go generate ./...", "go test ./..."):
        assert all(building not in mounts(p) for p in two(words, ctx(where))), words
    other = ctx(where).replace(project_root=str(where["elsewhere"]))
    assert ecosystems.phases(["go", "build"], other)[0].env["GOCACHE"] != building  # type: ignore[index]


def test_go_vendored_project_keeps_its_mod_flag(where: dict[str, Path]) -> None:
    write(where["project"] / "vendor" / "modules.txt", "# example.com/x v1.0.0\n")
    _, s = two("go build", ctx(where))
    assert s.env["GOFLAGS"] == ""


def test_go_install_writes_into_the_callers_gobin(where: dict[str, Path]) -> None:
    gobin = str(where["elsewhere"] / "bin")
    d, s = two("go install ./cmd/x", ctx(where, {"GOBIN": gobin}))
    assert s.env["GOBIN"] == gobin and mounts(s)[gobin] == Mount(gobin, gobin, readonly=False, kind="cache")
    assert gobin not in mounts(d)
    (only,) = phases("go install example.com/x@v1.0.0", ctx(where, {"GOPATH": "/gp1:/gp2"})) or ()
    assert only.env["GOBIN"] == "/gp1/bin" and mounts(only)["/gp1/bin"].readonly is False
    (only,) = phases("go install example.com/x@v1.0.0", ctx(where)) or ()
    assert only.env["GOBIN"] == str(where["home"] / "go" / "bin")


# --- through build_plan: what reaches each step -------------------------------------------------


def _host(where: dict[str, Path], env: dict[str, str]) -> Host:
    return Host(uid=1000, gid=1000, user="dev", home=str(where["home"]), cwd=str(where["project"]),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}, shim_dirs=(),
                python="/usr/bin/python3", python_prefix="/usr", package_dir="/opt/sbox/sbox_shim",
                cache_dir=str(where["cache"]), state_dir=str(where["elsewhere"]))


def _no_dns(name: str) -> tuple[str, ...]:
    raise OSError(-2, "Name or service not known")


def test_plan_npm_token_reaches_the_download_step_only(where: dict[str, Path]) -> None:
    write(where["project"] / ".npmrc", "registry=http://127.0.0.1:4873/\n")
    cfg = Config(str(where["project"] / "sbox.yaml"), str(where["project"]))
    host = _host(where, {"NPM_TOKEN": "tok", "AWS_SECRET_ACCESS_KEY": "aws"})
    plan = build_plan(["npm", "install"], cfg, host, resolver=_no_dns, which=lambda n, p, s: f"/usr/bin/{n}")
    download, scripts = plan.steps
    assert download.profile == "npm:download" and scripts.profile == "npm:scripts"
    assert download.environ["NPM_TOKEN"] == "tok" and "NPM_TOKEN" not in scripts.environ
    assert "AWS_SECRET_ACCESS_KEY" not in download.environ
    assert download.network.policy == "proxy" and ("127.0.0.1", 4873) in download.network.forwards
    assert scripts.network.policy == "off"


def test_plan_npm_client_key_and_otp_reach_the_download_step_only(where: dict[str, Path]) -> None:
    """npm's client-certificate key and one-time password are credentials (red team): download only."""
    cfg = Config(str(where["project"] / "sbox.yaml"), str(where["project"]))
    host = _host(where, {"npm_config_key": "-----BEGIN PRIVATE KEY-----", "npm_config_otp": "123456",
                         "npm_config_nodedir": "/usr/include/node"})
    plan = build_plan(["npm", "install"], cfg, host, resolver=_no_dns, which=lambda n, p, s: f"/usr/bin/{n}")
    download, scripts = plan.steps
    assert download.environ["npm_config_key"] and download.environ["npm_config_otp"] == "123456"
    assert "npm_config_key" not in scripts.environ and "npm_config_otp" not in scripts.environ
    assert scripts.environ["npm_config_nodedir"] == "/usr/include/node"  # a plain setting still passes


def test_plan_pip_index_url_reaches_the_download_step_and_the_venv_is_writable_offline(where: dict[str, Path]) -> None:
    venv, base = _venv(where)
    cfg = Config(str(where["project"] / "sbox.yaml"), str(where["project"]))
    host = _host(where, {"PIP_INDEX_URL": "http://127.0.0.1:8080/simple/", "PIP_CONFIG_FILE": os.devnull})
    plan = build_plan([".venv/bin/pip", "install", "x"], cfg, host, resolver=_no_dns,
                      which=lambda n, p, s: n)
    download, scripts = plan.steps
    assert download.environ["PIP_INDEX_URL"] == "http://127.0.0.1:8080/simple/"
    assert download.environ["PIP_CONFIG_FILE"] == os.devnull
    assert "PIP_INDEX_URL" not in scripts.environ
    d, s = ({m.target: m for m in step.mounts} for step in plan.steps)
    assert d[str(venv)].readonly is True and s[str(venv)].readonly is False  # the policy wins over the tool prefix
    assert d[str(base)].readonly and s[str(base)].readonly


def test_plan_json_does_not_print_the_credentials_a_step_receives(where: dict[str, Path]) -> None:
    import json

    from sbox_shim.report import plan_json

    cfg = Config(str(where["project"] / "sbox.yaml"), str(where["project"]))
    host = _host(where, {"NPM_TOKEN": "tok-123", "PIP_INDEX_URL": "https://me:pw-456@idx.example/simple"})
    for argv in (["npm", "install"], ["pip", "download", "x"]):
        plan = build_plan(argv, cfg, host, resolver=_no_dns, which=lambda n, p, s: f"/usr/bin/{n}")
        text = plan_json(plan, "bwrap")
        assert "tok-123" not in text and "pw-456" not in text
    env = json.loads(text)["steps"][0]["env"]
    assert env["PIP_INDEX_URL"] == "https://<redacted>@idx.example/simple"


def test_module_table_matches_each_modules_tools() -> None:
    import importlib

    from sbox_shim.ecosystems import MODULES

    for tool, name in MODULES.items():
        assert tool in importlib.import_module(f"sbox_shim.ecosystems.{name}").TOOLS
    for name in set(MODULES.values()):
        assert set(importlib.import_module(f"sbox_shim.ecosystems.{name}").TOOLS) <= set(MODULES)


def test_npm_plain_settings_reach_the_scripts_phase_and_credentials_do_not(where: dict[str, Path]) -> None:
    """node-gyp needs the user's `nodedir`/`python` offline; the token, the registry and any
    program setting stay out of the scripts phase."""
    write(where["home"] / ".npmrc", "nodedir=/usr\npython=/usr/bin/python3\n//r.example/:_authToken=npm_CANARY\n"
          "registry=https://u:pw@r.example/\nscript-shell=/tmp/x.sh\n_auth=abc\nemail=me@example.com\n")
    d, s = two("npm install", ctx(where))
    assert s.env["npm_config_nodedir"] == "/usr" and s.env["npm_config_python"] == "/usr/bin/python3"
    joined = repr(s.env)
    for leaked in ("npm_CANARY", "u:pw", "script_shell", "abc"):
        assert leaked not in joined, leaked


def test_the_programs_a_yarn_config_names_are_inputs(tmp_path: Path) -> None:
    """Red team 30: the release a `.yarnrc`'s `yarn-path` or a `.yarnrc.yml`'s `yarnPath` names,
    and berry's plugins, run in yarn's download phase: each one in the project is trusted as its
    digest (a release is megabytes); one outside the project, or missing, is not asked for."""
    from sbox_shim import trust
    from sbox_shim.ecosystems.npm import yarn_programs

    (tmp_path / ".yarnrc").write_text('yarn-path ".yarn/releases/yarn-1.22.22.cjs"\n')
    (tmp_path / ".yarnrc.yml").write_text(
        "yarnPath: .yarn/releases/yarn-4.5.0.cjs\nplugins:\n  - path: .yarn/plugins/p.cjs\n    spec: x\n"
        "  - '/opt/yarn/plugin.js'\nnpmRegistryServer: 'https://registry.example/x.js'\n")
    assert yarn_programs(str(tmp_path / ".yarnrc")) == [str(tmp_path / ".yarn/releases/yarn-1.22.22.cjs")]
    assert {str(tmp_path / ".yarn/releases/yarn-4.5.0.cjs"), str(tmp_path / ".yarn/plugins/p.cjs"),
            "/opt/yarn/plugin.js"} <= set(yarn_programs(str(tmp_path / ".yarnrc.yml")))
    release = tmp_path / ".yarn/releases/yarn-4.5.0.cjs"
    release.parent.mkdir(parents=True)
    release.write_bytes(b"x" * (3 << 20))
    where = {"project": tmp_path, "home": tmp_path / "home", "cache": tmp_path / "cache"}
    found = ecosystems.inputs(("yarn", "install"), ctx(where))
    assert [(p, part) for p, _, part in found if part == "program"] == [(str(release), "program")]
    item = trust.Input(str(release), "yarn release", "program")
    state = tmp_path / "state"
    assert trust.verdict(item, str(state)).state == "new"
    trust.record(item, str(state))
    assert trust.verdict(item, str(state)).state == "trusted"
    release.write_bytes(b"x" * (3 << 20) + b";evil()")
    changed = trust.verdict(item, str(state))
    assert changed.state == "changed" and "sha256" in changed.detail and len(changed.detail) < 200
    # red team 31: a wrapper `yarnPath` requires the release: yarn's program directories count whole
    (tmp_path / ".yarnrc.yml").write_text("yarnPath: scripts/run-yarn.js\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts/run-yarn.js").write_text("require('../.yarn/releases/yarn-4.5.0.cjs');\n")
    (tmp_path / ".yarn/plugins/@yarnpkg").mkdir(parents=True)
    (tmp_path / ".yarn/plugins/@yarnpkg/p.cjs").write_text("")
    assert yarn_programs(str(tmp_path / ".yarnrc.yml")) == [
        str(tmp_path / "scripts/run-yarn.js"), str(release), str(tmp_path / ".yarn/plugins/@yarnpkg/p.cjs")]
    # red team 32: the YAML forms yarn reads the same, and pnpm's pnpmfile settings
    for form in ("yarnPath: tools/y.cjs  # vendored", '"yarnPath": "tools/y.cjs"', "{yarnPath: tools/y.cjs}",
                 "yarnPath: !!str tools/y.cjs", "yarnPath: '${PWD}/tools/y.cjs'"):
        (tmp_path / ".yarnrc.yml").write_text(form + "\n")
        assert str(tmp_path / "tools/y.cjs") in yarn_programs(str(tmp_path / ".yarnrc.yml")), form
    (tmp_path / "pnpm-workspace.yaml").write_text('packages: ["."]\npnpmfile: tools/hooks.cjs\n')
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools/hooks.cjs").write_text("")
    found = ecosystems.inputs(("pnpm", "install"), ctx(where))
    assert (str(tmp_path / "pnpm-workspace.yaml"), "pnpm project config", "all") in found
    assert str(tmp_path / "tools/hooks.cjs") in [p for p, _, part in found if part == "program"]
