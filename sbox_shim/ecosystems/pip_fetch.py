"""sbox's pip download step, run inside the download sandbox as `python -I -S /.sbox/pip download …`.

Not imported by sbox: a script mounted into the sandbox and run on the venv's base interpreter with
sbox's own pip (the directory holding it is `SBOX_PIP_HOME`), stdlib and pip's vendored libraries
only. In one process it runs `pip download` of the command's requirements into the wheelhouse;
then, only if that left source distributions whose build requirements are not there yet, it
fetches those (`[build-system] requires`, setuptools and wheel for a setup.py-only sdist), round
after round until closed, so that the offline install builds each sdist as pip would on the host
(pip gives a build environment the install's `--no-index --find-links`). A build requirement the
index lacks costs one line, not the install: pip on the host would have failed the same build.

`SBOX_PIP_BUILD_ARGS` (JSON): the command's index and binary options (`-i`, `--no-binary`, …),
which the build requirements are fetched with too.

A local project on the command line (`pip install .`, `./sub[extra]`) is read from a copy in the
sandbox's /tmp: learning its dependencies builds its metadata in its tree (`*.egg-info`), and this
phase, which has the network, writes nothing of the project. The offline install builds it in place.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

ROUNDS = 8
PYPROJECT_CAP = 1 << 20
LEGACY = ["setuptools>=40.8.0"]  # pip's build requirements for an sdist without [build-system]


def main(argv: list[str]) -> int:
    home = os.environ.get("SBOX_PIP_HOME", "")
    sys.path.insert(0, home)
    from pip._internal.cli.main import main as pip_main

    local: list[str] = []
    if argv[:1] == ["download"]:
        argv = [_copy_if_local(a, local) for a in argv]
    code = pip_main(argv)
    build_args = os.environ.get("SBOX_PIP_BUILD_ARGS")  # set for sbox's own `download --dest WHEELHOUSE …`
    if code or build_args is None or argv[:2] != ["download", "--dest"]:
        return int(code or 0)
    wheelhouse = argv[2]
    extra = json.loads(build_args)
    tried: set[str] = set()
    for _ in range(ROUNDS):
        wanted = [(r, optional, sdist) for r, optional, sdist in missing(wheelhouse, local) if r not in tried]
        if not wanted:
            break
        tried.update(r for r, _, _ in wanted)
        fetch(home, wheelhouse, extra, wanted)
    return 0


def fetch(home: str, wheelhouse: str, extra: list[str], wanted: list[tuple[str, bool, str]]) -> None:
    """`pip download` the build requirements together; if that fails, one by one, best effort."""
    pip = [sys.executable, "-I", "-S", os.path.join(home, "pip"), "download", "-q", "--dest", wheelhouse, *extra]
    names = list(dict.fromkeys(r for r, _, _ in wanted))
    if _quiet(pip + names):
        return
    for requirement, optional, sdist in wanted:
        if not _quiet(pip + [requirement]) and not optional:
            sys.stderr.write(f"sbox: build requirement {requirement} of {sdist} is not on the index: "
                             "it will not build offline\n")


SKIP_IN_COPY = (".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox", "build", "dist", "*.egg-info")


def _copy_if_local(arg: str, copies: list[str]) -> str:
    """A directory argument holding a Python project, copied to /tmp (links kept as links): the copy's
    path, with its `[extras]`; any other argument as it is."""
    import shutil
    import tempfile

    word = arg.split("=", 1)[1] if arg.startswith("--editable=") else arg
    base = word.split("[", 1)[0]
    if arg.startswith("-") and not arg.startswith("--editable=") or not base or not os.path.isdir(base):
        return arg
    if not any(os.path.isfile(os.path.join(base, f)) for f in ("pyproject.toml", "setup.py", "setup.cfg")):
        return arg
    copy = os.path.join(tempfile.mkdtemp(prefix="sbox-local-"), os.path.basename(os.path.abspath(base)) or "project")
    shutil.copytree(base, copy, symlinks=True, ignore=shutil.ignore_patterns(*SKIP_IN_COPY))
    copies.append(copy)  # its own build requirements are fetched too (the offline phase builds it)
    return arg.replace(base, copy, 1) if arg.startswith("--editable=") else copy + word[len(base):]


def _quiet(argv: list[str]) -> bool:
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def missing(wheelhouse: str, local: list[str] | None = None) -> list[tuple[str, bool, str]]:
    """(requirement, optional, sdist) for each build requirement of the wheelhouse's sdists (and of
    the `local` project directories) that no file in the wheelhouse satisfies."""
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.version import InvalidVersion

    have = _versions(wheelhouse)
    out = []
    sources = [os.path.join(wheelhouse, n) for n in sorted(os.listdir(wheelhouse)) if n.endswith((".tar.gz", ".zip"))]
    for source in sources + list(local or ()):
        name = os.path.basename(source)
        for text, optional in build_requires(source):
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate():
                continue
            if not any(_satisfies(req, v, InvalidVersion) for v in have.get(_canonical(req.name), [])):
                out.append((text, optional, name))
    return out


def _satisfies(req: Any, version: str, invalid: type[Exception]) -> bool:
    try:
        return bool(req.specifier.contains(version, prereleases=True))
    except invalid:
        return False


def build_requires(path: str) -> list[tuple[str, bool]]:
    """An sdist's build requirements as (requirement, optional): its pyproject.toml's
    `[build-system] requires`, else setuptools; with `wheel` optional for a setuptools build
    (setuptools < 70.1 asks for it)."""
    table = _build_system(path)
    if table is None:
        return [(r, False) for r in LEGACY] + [("wheel", True)]
    requires = [(str(r), False) for r in table.get("requires", []) if isinstance(r, str)]
    backend = str(table.get("build-backend", "setuptools"))
    if backend.startswith("setuptools") and "wheel" not in {r for r, _ in requires}:
        requires.append(("wheel", True))
    return requires


def _build_system(path: str) -> dict[str, Any] | None:
    text = _pyproject(path)
    if text is None:
        return None
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the copy pip vendors
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    try:
        table = tomllib.loads(text).get("build-system")
    except (ValueError, AttributeError):
        return None
    return table if isinstance(table, dict) else None


def _pyproject(path: str) -> str | None:
    """The top-level pyproject.toml of an sdist (`name-1.0/pyproject.toml`) or of a project
    directory, or None."""
    try:
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "pyproject.toml")):
                return None
            with open(os.path.join(path, "pyproject.toml"), "rb") as f:
                return f.read(PYPROJECT_CAP).decode("utf-8", "replace")
        if path.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if info.filename.count("/") == 1 and info.filename.endswith("/pyproject.toml"):
                        return z.read(info)[:PYPROJECT_CAP].decode("utf-8", "replace")
            return None
        with tarfile.open(path) as t:
            for member in t:
                if member.isfile() and member.name.count("/") == 1 and member.name.endswith("/pyproject.toml"):
                    data = t.extractfile(member)
                    return data.read(PYPROJECT_CAP).decode("utf-8", "replace") if data else None
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError):
        return None
    return None


def _versions(wheelhouse: str) -> dict[str, list[str]]:
    """The versions of each project the wheelhouse holds, by canonical name."""
    out: dict[str, list[str]] = {}
    for name in os.listdir(wheelhouse):
        if name.endswith(".whl"):
            project, _, rest = name.partition("-")
            version = rest.split("-", 1)[0]
        elif name.endswith((".tar.gz", ".zip")):
            project, _, version = name.rsplit(".tar.gz" if name.endswith(".tar.gz") else ".zip", 1)[0].rpartition("-")
        else:
            continue
        out.setdefault(_canonical(project), []).append(version)
    return out


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
