"""Issue 9, credentials in URLs: a registry or find-links URL carrying `user:password@` reaches
the phase that fetches, never a phase that runs package code offline. The package code there
dumps its environment and every file it can read under HOME and /tmp; the secret is in none.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from support import packages as pkg
from support.boundary import Sbox, config
from support.registries import NpmRegistry, PypiIndex

# Node: what an install script can see, written as node_modules/dump-<profile>-<pid>.json (the
# scripts phase writes node_modules only).
NODE_DUMP = r"""const fs = require("fs"), path = require("path");
const files = {};
function walk(d, depth) {
  let names = [];
  try { names = fs.readdirSync(d); } catch (e) { return; }
  for (const n of names) {
    const p = path.join(d, n);
    try {
      const st = fs.lstatSync(p);
      if (st.isDirectory() && depth < 8) walk(p, depth + 1);
      else if (st.isFile() && st.size < 1e6) files[p] = fs.readFileSync(p, "latin1");
    } catch (e) {}
  }
}
walk(process.env.HOME || "/nonexistent", 0); walk("/tmp", 0);
const out = path.join(process.env.INIT_CWD, "node_modules", "dump-" + process.env.SBOX_PROFILE + "-" + process.pid + ".json");
fs.writeFileSync(out, JSON.stringify({env: process.env, files}));
"""

# Python: the same, from a setup.py (run by pip download and again by the offline install), written
# into the venv (the only writable place of the offline install).
PY_DUMP = r"""import json, os
files = {}
for top in (os.environ.get("HOME", "/nonexistent"), "/tmp"):
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            try:
                if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) < 1e6:
                    files[p] = open(p, encoding="latin-1").read()
            except OSError:
                pass
out = os.path.join(ROOT, ".venv", "dump-%s-%d.json" % (os.environ.get("SBOX_PROFILE"), os.getpid()))
try:  # the download phase cannot write the venv: only the offline install's dump is kept
    open(out, "w").write(json.dumps({"env": dict(os.environ), "files": files}))
except OSError:
    pass
"""


def _dumps(root: Path, profile: str) -> list[str]:
    found = [p for where in ("", "node_modules/", ".venv/") for p in root.glob(f"{where}dump-{profile}-*.json")]
    return [p.read_text() for p in found]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "npm_config_"))}


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_registry_credentials_never_reach_the_scripts_phase(tmp_path: Path, backend: str,
                                                               sbox_bin: str) -> None:
    secret = "SBOXURLSECRET" + secrets.token_hex(8)
    root = tmp_path / "proj"
    config(root, backend)
    dump = pkg.npm_package("sbox-dump", "1.0.0", {"dump.js": NODE_DUMP}, scripts={"postinstall": "node dump.js"})
    with NpmRegistry([dump]) as registry:
        (root / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0", "private": True,
                                                       "dependencies": {"sbox-dump": "1.0.0"}}))
        env = dict(_clean_env(), npm_config_update_notifier="false", npm_config_audit="false",
                   npm_config_registry=f"http://u:{secret}@127.0.0.1:{registry.port}/")
        result = Sbox(sbox_bin, env).run(root, "npm", "install")
        assert result.returncode == 0, result.stderr[-3000:]
        assert (root / "node_modules" / "sbox-dump" / "dump.js").is_file()
        assert "/sbox-dump" in registry.requests
    dumps = _dumps(root, "npm:scripts")
    assert len(dumps) == 1, list(root.iterdir())
    assert secret not in dumps[0]
    assert "SBOX_PROFILE" in dumps[0]  # the dump is real: it saw its environment


def test_pip_find_links_credentials_never_reach_the_offline_install(tmp_path: Path, backend: str,
                                                                   sbox_bin: str) -> None:
    secret = "SBOXURLSECRET" + secrets.token_hex(8)
    root = tmp_path / "proj"
    config(root, backend)
    venv = root / ".venv"
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], check=True, timeout=300)
    probe = pkg.sdist("sbox-dump", "1.0", f"ROOT = {str(root)!r}\n" + PY_DUMP, {"sbox_dump.py": ""},
                      backend="intree")
    with PypiIndex([probe]) as index:
        env = dict(_clean_env(), PIP_INDEX_URL=index.index_url, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0",
                   PIP_FIND_LINKS=f"http://u:{secret}@127.0.0.1:9/x", VIRTUAL_ENV=str(venv),
                   PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
        result = Sbox(sbox_bin, env).run(root, "pip", "install", "sbox-dump")
        assert result.returncode == 0, result.stderr[-3000:]
    dumps = _dumps(root, "pip:scripts")
    assert dumps, list(root.iterdir())
    for text in dumps:
        assert secret not in text
        assert "SBOX_PROFILE" in text
    # A plain command in the default profile (network off) does not get it either.
    result = Sbox(sbox_bin, env).run(root, "env")
    assert result.returncode == 0 and "SBOX_PROFILE=default" in result.stdout, result.stderr
    assert secret not in result.stdout + result.stderr


def test_code_planted_in_the_venv_never_runs_where_the_index_credentials_are(tmp_path: Path, backend: str,
                                                                            sbox_bin: str) -> None:
    """A sandboxed step writes a `.pth` into the venv (it may write the venv while installing):
    the next install's download phase, which has the network and the index URL with its password,
    must not run it. It runs sbox's own pip on the venv's base interpreter instead."""
    secret = "SBOXURLSECRET" + secrets.token_hex(8)
    root = tmp_path / "proj"
    config(root, backend)
    venv = root / ".venv"
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], check=True, timeout=300)
    site = next(venv.glob("lib/python3*/site-packages"))
    probe = pkg.sdist("sbox-dump", "1.0", f"ROOT = {str(root)!r}\n" + PY_DUMP, {"sbox_dump.py": ""},
                      backend="intree")
    with PypiIndex([probe]) as index:
        url = index.index_url.replace("http://", f"http://u:{secret}@")
        env = dict(_clean_env(), PIP_INDEX_URL=url, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0",
                   VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
        planted = ("import os, sys; sys.stderr.write('PTH-RAN ' + os.environ.get('SBOX_PROFILE', '?') + ' ' + "
                   "os.environ.get('PIP_INDEX_URL', '') + chr(10))\n")
        plant = Sbox(sbox_bin, env).run(root, "sh", "-c", f"printf '%s' {shlex.quote(planted)} > {site}/zz.pth")
        assert plant.returncode == 0, plant.stderr
        assert (site / "zz.pth").is_file()
        result = Sbox(sbox_bin, env).run(root, "pip", "install", "sbox-dump")
        assert result.returncode == 0, result.stderr[-3000:]
    ran = [ln for ln in result.stderr.splitlines() if ln.startswith("PTH-RAN")]
    assert ran and all(ln.startswith("PTH-RAN pip:scripts") for ln in ran), ran  # offline only: the live check
    assert secret not in result.stdout + result.stderr
