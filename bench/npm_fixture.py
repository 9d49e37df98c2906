"""A real npm dependency tree, fetched once, served from a loopback registry with no uplink.

`fetch(name, dependencies, cache_root)` resolves the app with the real npm and the machine's
default configuration (a temporary HOME holding a copy of the user's `~/.npmrc`, nothing else
configured), installs it with scripts disabled into a throwaway npm cache, and keeps, under
`cache_root/name/` (outside the repository; tarballs are never committed):

    package.json, package-lock.json   the app; its lockfile's `resolved` URLs, if the user's
                                      config keeps them, point at the placeholder REGISTRY
                                      (filled in per run)
    tarballs/*.tgz                    every tarball npm fetched, read from its cache by integrity
    fixture.json                      name, version, file and integrity of each

Platform packages npm skipped (esbuild's other `@esbuild/*` builds) have no tarball: npm ci
skips them the same way when it reads the lockfile. `LoopbackNpm` then serves the tarballs and a
packument per name at 127.0.0.1, tarball URLs pointing back at itself.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from support.registries import StaticServer

REGISTRY = "http://sbox-bench-registry.invalid"


def _cached(cache: Path, integrity: str) -> Path:
    algo, b64 = integrity.split()[0].split("-", 1)
    hexd = base64.b64decode(b64).hex()
    return cache / "_cacache" / "content-v2" / algo / hexd[:2] / hexd[2:4] / hexd[4:]


def _entry_name(key: str, entry: dict[str, Any]) -> str:
    return str(entry.get("name") or key.rsplit("node_modules/", 1)[-1])


def _tar_path(name: str, version: str) -> str:
    return f"/{name}/-/{name.split('/')[-1]}-{version}.tgz"


def fetch(name: str, dependencies: dict[str, str], cache_root: Path) -> Path:
    """The fixture directory for this app, fetching it from the real registry if not there yet."""
    where = cache_root / name
    if (where / "fixture.json").is_file():
        return where
    with tempfile.TemporaryDirectory(prefix="sbox-bench-fetch-") as tmp:
        work = Path(tmp)
        app, home, cache = work / "app", work / "home", work / "cache"
        app.mkdir()
        home.mkdir()
        if (Path.home() / ".npmrc").is_file():  # the user's npm configuration, as it is
            shutil.copy2(Path.home() / ".npmrc", home / ".npmrc")
        (app / "package.json").write_text(json.dumps(
            {"name": f"bench-{name}", "version": "0.0.0", "private": True, "dependencies": dependencies}, indent=2))
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
        env.update(HOME=str(home), npm_config_cache=str(cache), npm_config_update_notifier="false")
        proc = subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=app,
                              env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"fetching {name} from the registry failed:\n{proc.stderr[-2000:]}")
        lock = json.loads((app / "package-lock.json").read_text())
        tarballs = where / "tarballs"
        tarballs.mkdir(parents=True, exist_ok=True)
        kept = []
        for key, entry in lock["packages"].items():
            if not key or "integrity" not in entry:
                continue  # the root, links
            pkg, version = _entry_name(key, entry), entry["version"]
            if "resolved" in entry:  # absent with omit-lockfile-registry-resolved: npm asks the registry
                entry["resolved"] = REGISTRY + _tar_path(pkg, version)
            source = _cached(cache, entry["integrity"])
            if not source.is_file():
                continue  # a package for another platform: npm did not fetch it
            file = f"{pkg.replace('/', '__')}-{version}.tgz"
            shutil.copyfile(source, tarballs / file)
            kept.append({"name": pkg, "version": version, "file": file, "integrity": entry["integrity"]})
        (where / "package.json").write_text((app / "package.json").read_text())
        (where / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
        unique = {(k["name"], k["version"]): k for k in kept}
        (where / "fixture.json").write_text(json.dumps(
            {"name": name, "dependencies": dependencies, "installed_entries": len(lock["packages"]) - 1,
             "tarballs": sorted(unique.values(), key=lambda k: (k["name"], k["version"]))}, indent=2) + "\n")
    return where


def _manifest(tgz: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.strip("./").split("/")
            if len(parts) == 2 and parts[1] == "package.json" and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                return json.load(f)  # type: ignore[no-any-return]
    raise ValueError("tarball without a top-level package.json")


class LoopbackNpm(StaticServer):
    """The fixture's tarballs and packuments on 127.0.0.1 (no uplink: anything else is a 404)."""

    def __init__(self, fixture: Path) -> None:
        super().__init__()
        meta = json.loads((fixture / "fixture.json").read_text())
        packuments: dict[str, dict[str, Any]] = {}
        for t in meta["tarballs"]:
            tgz = (fixture / "tarballs" / t["file"]).read_bytes()
            doc = dict(_manifest(tgz), name=t["name"], version=t["version"], _id=f"{t['name']}@{t['version']}")
            doc["dist"] = {"tarball": self.url + _tar_path(t["name"], t["version"]),
                           "integrity": t["integrity"], "shasum": hashlib.sha1(tgz).hexdigest()}
            packument = packuments.setdefault(t["name"], {"_id": t["name"], "name": t["name"],
                                                          "dist-tags": {}, "versions": {}})
            packument["versions"][t["version"]] = doc
            packument["dist-tags"]["latest"] = t["version"]
            self.add_file(_tar_path(t["name"], t["version"]), tgz)
        for pkg, packument in packuments.items():
            self.add_file(f"/{pkg}", json.dumps(packument).encode(), "application/json")
        self.package_count = len(meta["tarballs"])

    def lockfile(self, fixture: Path) -> str:
        """The fixture's lockfile with its tarball URLs pointing here."""
        return (fixture / "package-lock.json").read_text().replace(REGISTRY, self.url)
