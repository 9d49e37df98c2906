"""Builders of fixture packages (npm, PyPI, cargo, Go), benign and hostile, all in memory."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .hostile import (  # noqa: F401  (re-exported: the hostile fixtures live in hostile.py)
    LEAK_MARKER,
    PROOF_MARKER,
    hostile_build_rs,
    hostile_npm_script,
    hostile_python,
)

# npm's own fixed tarball mtime (1985-10-26); keeps every archive byte-for-byte reproducible.
MTIME = 499162500
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _targz(entries: Mapping[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in entries.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _zip(entries: Mapping[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, content in entries.items():
            zf.writestr(zipfile.ZipInfo(path, ZIP_DATE), content)
    return buf.getvalue()


# --- npm ------------------------------------------------------------------------------------


def npm_package(
    name: str,
    version: str,
    files: Mapping[str, str],
    scripts: Mapping[str, str] | None = None,
    dependencies: Mapping[str, str] | None = None,
    bin: Mapping[str, str] | None = None,
) -> bytes:
    """A publishable npm tarball (``package/`` prefix) with a generated package.json; `bin`: the
    commands npm links into node_modules/.bin (name: path in the package)."""
    manifest: dict[str, Any] = {"name": name, "version": version, "license": "MIT"}
    if scripts:
        manifest["scripts"] = dict(scripts)
    if dependencies:
        manifest["dependencies"] = dict(dependencies)
    if bin:
        manifest["bin"] = dict(bin)
    entries = {"package/package.json": json.dumps(manifest, indent=2) + "\n"}
    entries.update({f"package/{path}": body for path, body in files.items()})
    return _targz(entries)


# --- PyPI -----------------------------------------------------------------------------------


def normalize_pypi_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata(name: str, version: str, requires: Iterable[str] = ()) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires]
    return "\n".join(lines) + "\n"


def wheel(
    name: str, version: str, files: Mapping[str, str], requires: Iterable[str] = ()
) -> tuple[str, bytes]:
    """A pure-python ``py3-none-any`` wheel: ``(filename, bytes)``."""
    info = f"{_dist_name(name)}-{version}.dist-info"
    entries: dict[str, str | bytes] = {path: body.encode() for path, body in files.items()}
    entries[f"{info}/METADATA"] = _metadata(name, version, requires).encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: sbox-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in entries.items():
        assert isinstance(data, bytes)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    return f"{_dist_name(name)}-{version}-py3-none-any.whl", _zip(entries)


_INTREE_BACKEND = '''"""sbox test fixture: a stdlib-only PEP 517 backend.

It runs setup.py as a plain script, then emits a prebuilt wheel.
"""
import base64, os, runpy

WHEEL_NAME = {name!r}
WHEEL_B64 = {data!r}


def _run_setup():
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup.py"))


def get_requires_for_build_wheel(config_settings=None):
    _run_setup()
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _run_setup()
    with open(os.path.join(wheel_directory, WHEEL_NAME), "wb") as out:
        out.write(base64.b64decode(WHEEL_B64))
    return WHEEL_NAME
'''

_INTREE_PYPROJECT = """[build-system]
requires = []
build-backend = "sbox_build_backend"
backend-path = ["."]
"""


def sdist(
    name: str,
    version: str,
    setup_py: str,
    files: Mapping[str, str] | None = None,
    *,
    backend: str = "setuptools",
) -> tuple[str, bytes]:
    """A source distribution ``(filename, bytes)`` whose ``setup.py`` runs at build time.

    ``backend="setuptools"``: a classic setup.py-only sdist; pip builds it with setuptools
    (and, for setuptools < 70.1, ``wheel``), which must come from the index or the venv.
    ``backend="intree"``: adds a stdlib-only in-tree PEP 517 backend that runs ``setup.py``
    as a plain script and emits a wheel of ``files``; it needs nothing from any index.
    """
    files = dict(files or {})
    base = f"{_dist_name(name)}-{version}"
    entries: dict[str, str | bytes] = {f"{base}/{p}": body for p, body in files.items()}
    entries[f"{base}/setup.py"] = setup_py
    entries[f"{base}/PKG-INFO"] = _metadata(name, version)
    if backend == "intree":
        whl_name, whl = wheel(name, version, files)
        source = _INTREE_BACKEND.format(name=whl_name, data=base64.b64encode(whl).decode())
        entries[f"{base}/sbox_build_backend.py"] = source
        entries[f"{base}/pyproject.toml"] = _INTREE_PYPROJECT
    elif backend != "setuptools":
        raise ValueError(f"backend must be 'setuptools' or 'intree', not {backend!r}")
    return f"{base}.tar.gz", _targz(entries)


# A PEP 517 backend that "builds" by copying the prebuilt wheel an sdist carries (prebuilt/*.whl).
PREBUILT_BACKEND = """import glob, os, shutil


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    (found,) = glob.glob(os.path.join("prebuilt", "*.whl"))
    shutil.copy(found, wheel_directory)
    return os.path.basename(found)
"""


def backend_wheel(name: str, version: str, module: str, requires: Iterable[str] = ()) -> tuple[str, bytes]:
    """A wheel holding a PEP 517 build backend `module` that emits the prebuilt wheel its sdist carries."""
    return wheel(name, version, {f"{module}.py": PREBUILT_BACKEND}, requires=requires)


def built_sdist(name: str, version: str, files: Mapping[str, str], build_requires: Iterable[str],
                build_backend: str) -> tuple[str, bytes]:
    """An sdist whose `[build-system]` names `build_requires` and `build_backend` (one from
    ``backend_wheel``), carrying the wheel of ``files`` that the backend emits."""
    base = f"{_dist_name(name)}-{version}"
    whl_name, whl = wheel(name, version, files)
    requires = ", ".join(f'"{r}"' for r in build_requires)
    entries: dict[str, str | bytes] = {
        f"{base}/pyproject.toml": f'[build-system]\nrequires = [{requires}]\nbuild-backend = "{build_backend}"\n',
        f"{base}/PKG-INFO": _metadata(name, version),
        f"{base}/prebuilt/{whl_name}": whl,
    }
    return f"{base}.tar.gz", _targz(entries)


_BUILD_WHEELS: dict[str, Path] = {}


def build_wheels(projects: Iterable[str] = ("setuptools", "wheel", "packaging")) -> list[Path]:
    """Wheels of the build requirements of a setup.py-only sdist, for a test index to serve.

    Fetched once per session with this machine's own pip, as configured (the package registry is
    what pip reaches), or taken from ``$SBOX_TEST_WHEELHOUSE`` when that is set.
    """
    import subprocess
    import sys
    import tempfile

    wanted = [p for p in projects if p not in _BUILD_WHEELS]
    if wanted:
        where = os.environ.get("SBOX_TEST_WHEELHOUSE") or tempfile.mkdtemp(prefix="sbox-build-wheels-")
        if not os.environ.get("SBOX_TEST_WHEELHOUSE"):
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--dest", where, *wanted], capture_output=True, timeout=300, check=False)
        for project in wanted:
            prefix = _dist_name(project) + "-"
            found = [p for p in Path(where).glob("*-py3-none-any.whl") if p.name.lower().startswith(prefix)]
            if found:
                _BUILD_WHEELS[project] = max(found, key=lambda p: version_key(p.name.split("-")[1]))
    return [_BUILD_WHEELS[p] for p in projects if p in _BUILD_WHEELS]


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key of a version string (any ``-suffix`` ignored)."""
    return tuple(int(n) for n in re.findall(r"\d+", version.split("-")[0]))


# --- cargo ----------------------------------------------------------------------------------


def cargo_index_path(name: str) -> str:
    """Path of a crate's file inside a cargo index (``1/a``, ``3/a/abc``, ``ab/cd/abcd``)."""
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def crate(
    name: str,
    version: str,
    lib_rs: str,
    build_rs: str | None = None,
    deps: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A ``.crate`` (tar.gz, ``name-version/`` prefix); ``deps`` are ``(name, version_req)``."""
    toml = [
        "[package]",
        f'name = "{name}"',
        f'version = "{version}"',
        'edition = "2021"',
    ]
    if build_rs is not None:
        toml.append('build = "build.rs"')
    toml += ["", "[lib]", 'path = "src/lib.rs"', "", "[dependencies]"]
    toml += [f'{dep} = "{req}"' for dep, req in deps]
    base = f"{name}-{version}"
    entries = {f"{base}/Cargo.toml": "\n".join(toml) + "\n", f"{base}/src/lib.rs": lib_rs}
    if build_rs is not None:
        entries[f"{base}/build.rs"] = build_rs
    return _targz(entries)


# --- Go -------------------------------------------------------------------------------------


def go_escape(path: str) -> str:
    """Module path/version case-encoding of the GOPROXY protocol (``A`` -> ``!a``)."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group().lower(), path)


def go_module(path: str, version: str, files: Mapping[str, str]) -> dict[str, bytes]:
    """The files a GOPROXY serves for one module version, keyed by URL path (no leading /)."""
    files = dict(files)
    files.setdefault("go.mod", f"module {path}\n\ngo 1.19\n")
    info = {"Version": version, "Time": "2024-01-01T00:00:00Z"}
    prefix = f"{go_escape(path)}/@v/{go_escape(version)}"
    return {
        f"{prefix}.info": json.dumps(info).encode(),
        f"{prefix}.mod": files["go.mod"].encode(),
        f"{prefix}.zip": _zip({f"{path}@{version}/{p}": body for p, body in files.items()}),
    }
