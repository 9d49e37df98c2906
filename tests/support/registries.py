"""Local package registries for tests: npm, PyPI (simple), cargo (sparse), Go proxy.

Each one serves static content from memory, binds loopback by default (port 0 =
ephemeral), runs in a background thread and records the paths it was asked for. URLs
written into metadata (npm tarballs, cargo ``dl``) use ``public_url`` when one is given,
e.g. a name pinned inside a sandbox; otherwise the address the server is bound to.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import socket
import sys
import tarfile
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .packages import cargo_index_path, normalize_pypi_name, version_key

_S = TypeVar("_S", bound="StaticServer")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class StaticServer:
    """HTTP server of in-memory files; the base of every registry."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None
    ) -> None:
        self.public_url = public_url.rstrip("/") if public_url else None
        self.files: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.token: str | None = None  # when set, a request without `Authorization: Bearer TOKEN` gets 401
        self.refused: list[str] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"owner": self})
        server_cls: type[_Server] = _Server
        if ":" in host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._httpd = server_cls((host, port), handler)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def local_url(self) -> str:
        """Where the server listens, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL given to clients and written into metadata: ``public_url`` or local."""
        return self.public_url or self.local_url

    @property
    def paths(self) -> list[str]:
        """``requests`` percent-decoded and without query strings."""
        return [unquote(urlsplit(r).path) for r in self.requests]

    def add_file(self, path: str, body: bytes, ctype: str = "application/octet-stream") -> None:
        """Serve ``body`` at ``path`` (an unquoted absolute path)."""
        with self._lock:
            self.files[path] = (ctype, body)

    def lookup(self, path: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self.files.get(path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    owner: StaticServer
    protocol_version = "HTTP/1.1"

    def _respond(self, with_body: bool) -> None:
        self.owner.requests.append(self.path)
        token = self.owner.token
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            self.owner.refused.append(self.path)
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = unquote(urlsplit(self.path).path)
        found = self.owner.lookup(path)
        if found is None:
            found = self.owner.lookup(path.rstrip("/") if path.endswith("/") else path + "/")
        status, (ctype, body) = (200, found) if found else (404, ("text/plain", b"not found\n"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def do_POST(self) -> None:  # npm audit and friends: not served
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._respond(with_body=True)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class NpmRegistry(StaticServer):
    """npm registry: packuments at ``/<name>`` (``@scope%2fname`` too) and tarballs."""

    def __init__(
        self,
        packages: Iterable[bytes] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(host, port, public_url)
        self.packuments: dict[str, dict[str, Any]] = {}
        for tgz in packages:
            self.add(tgz)

    def add(self, tgz: bytes) -> dict[str, Any]:
        """Publish one tarball from ``npm_package``; returns its version document."""
        with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
            member = tar.extractfile("package/package.json")
            assert member is not None, "tarball has no package/package.json"
            manifest: dict[str, Any] = json.load(member)
        name, version = manifest["name"], manifest["version"]
        tar_path = f"/{name}/-/{name.split('/')[-1]}-{version}.tgz"
        integrity = base64.b64encode(hashlib.sha512(tgz).digest()).decode()
        doc = dict(manifest, _id=f"{name}@{version}")
        doc["dist"] = {
            "tarball": self.url + tar_path,
            "shasum": hashlib.sha1(tgz).hexdigest(),
            "integrity": f"sha512-{integrity}",
        }
        packument = self.packuments.setdefault(
            name, {"_id": name, "name": name, "dist-tags": {}, "versions": {}}
        )
        packument["versions"][version] = doc
        # published long ago: yarn 4's minimal age gate (npmMinimalAgeGate) quarantines the new
        packument.setdefault("time", {"created": "2020-01-01T00:00:00.000Z"})[version] = "2020-01-01T00:00:00.000Z"
        packument["time"]["modified"] = "2020-01-01T00:00:00.000Z"
        latest = max(packument["versions"], key=version_key)
        packument["dist-tags"]["latest"] = latest
        self.add_file(tar_path, tgz)
        self.add_file(f"/{name}", json.dumps(packument).encode(), "application/json")
        return doc


class PypiIndex(StaticServer):
    """PEP 503 simple index at ``/simple/`` with files at ``/files/<filename>``."""

    def __init__(
        self,
        dists: Iterable[tuple[str, bytes]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(host, port, public_url)
        self.projects: dict[str, dict[str, bytes]] = {}
        for filename, data in dists:
            self.add(filename, data)

    @property
    def index_url(self) -> str:
        """The value for ``pip --index-url``."""
        return self.url + "/simple/"

    def add(self, filename: str, data: bytes) -> None:
        """Publish a wheel or sdist (as returned by ``wheel()`` / ``sdist()``)."""
        project = normalize_pypi_name(_project_of(filename))
        self.projects.setdefault(project, {})[filename] = data
        self.add_file(f"/files/{filename}", data)
        links = "".join(
            f'<a href="/files/{html.escape(fn)}#sha256={hashlib.sha256(body).hexdigest()}">'
            f"{html.escape(fn)}</a><br>\n"
            for fn, body in sorted(self.projects[project].items())
        )
        self.add_file(f"/simple/{project}/", _html(f"Links for {project}", links), "text/html")
        root = "".join(f'<a href="/simple/{p}/">{p}</a><br>\n' for p in sorted(self.projects))
        self.add_file("/simple/", _html("Simple index", root), "text/html")


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return filename.split("-")[0]
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            return filename[: -len(ext)].rsplit("-", 1)[0]
    raise ValueError(f"not a wheel or sdist filename: {filename}")


def _html(title: str, body: str) -> bytes:
    head = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
    return f"{head}<body>\n{body}</body></html>\n".encode()


class CargoRegistry(StaticServer):
    """Cargo sparse registry: index under ``/index/``, crates at ``/api/v1/crates/...``."""

    def __init__(
        self,
        crates: Iterable[bytes] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(host, port, public_url)
        self.entries: dict[str, list[dict[str, Any]]] = {}
        config = {"dl": self.url + "/api/v1/crates/{crate}/{version}/download", "api": None}
        self.add_file("/index/config.json", json.dumps(config).encode(), "application/json")
        for data in crates:
            self.add(data)

    @property
    def index_url(self) -> str:
        """The value for a cargo ``registry = ...`` source (with ``sparse+``)."""
        return f"sparse+{self.url}/index/"

    def add(self, data: bytes) -> dict[str, Any]:
        """Publish a ``.crate`` from ``crate()``; returns its index entry."""
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            top = [m for m in tar.getmembers() if m.name.count("/") == 1]
            member = next(m for m in top if m.name.endswith("/Cargo.toml"))
            handle = tar.extractfile(member)
            assert handle is not None
            manifest = tomllib.load(handle)
        name, version = manifest["package"]["name"], manifest["package"]["version"]
        deps = [
            _cargo_dep(dep, spec, kind)
            for table, kind in (("dependencies", "normal"), ("build-dependencies", "build"))
            for dep, spec in manifest.get(table, {}).items()
        ]
        entry = {"name": name, "vers": version, "deps": deps, "features": {},
                 "cksum": hashlib.sha256(data).hexdigest(), "yanked": False}
        lines = self.entries.setdefault(name.lower(), [])
        lines.append(entry)
        body = "".join(json.dumps(e) + "\n" for e in lines).encode()
        self.add_file("/index/" + cargo_index_path(name), body, "text/plain")
        self.add_file(f"/api/v1/crates/{name}/{version}/download", data)
        return entry


def _cargo_dep(name: str, spec: str | dict[str, Any], kind: str) -> dict[str, Any]:
    req = spec if isinstance(spec, str) else spec["version"]
    return {"name": name, "req": req, "features": [], "optional": False,
            "default_features": True, "target": None, "kind": kind}


class GoProxy(StaticServer):
    """GOPROXY protocol served from files made by ``go_module()``."""

    def __init__(
        self,
        modules: Iterable[Mapping[str, bytes]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(host, port, public_url)
        self.infos: dict[str, dict[str, bytes]] = {}
        for files in modules:
            self.add(files)

    def add(self, files: Mapping[str, bytes]) -> None:
        """Publish one module version (the dict returned by ``go_module()``)."""
        for rel, body in files.items():
            ctype = "application/zip" if rel.endswith(".zip") else "text/plain; charset=utf-8"
            self.add_file("/" + rel, body, ctype)
        info_path = next(p for p in files if p.endswith(".info"))
        module = info_path.partition("/@v/")[0]
        infos = self.infos.setdefault(module, {})
        infos[json.loads(files[info_path])["Version"]] = files[info_path]
        listing = "".join(v + "\n" for v in infos).encode()
        self.add_file(f"/{module}/@v/list", listing, "text/plain; charset=utf-8")
        latest = max(infos, key=version_key)
        self.add_file(f"/{module}/@latest", infos[latest], "application/json")
