"""Local-path dependencies (`file:../lib`, `link:`, `npm install ../lib`) that lie outside the
project root: a sandbox sees only the project, so npm would fail there with ENOENT and no hint.

sbox does not mount them: package.json is written by the project (a sandbox could make it name
`~/.ssh`), so a path it names decides nothing on the host. It says, before anything runs, which
path is outside and what to do.
"""
from __future__ import annotations

import json
import os

from sbox_shim.errors import UsageError
from sbox_shim.lean import inside
from sbox_shim.trust.files import printable, read_text

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

SECTIONS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_PREFIXES = ("file:", "link:")


def check(package_dir: str, root: str, args: Sequence[str]) -> None:
    """Raise a one-line UsageError for the first local dependency outside `root`: in the
    package.json of `package_dir` (file, line, key) or among the command's package arguments."""
    path = os.path.join(package_dir, "package.json")
    text = read_text(path)
    for section, name, spec in _local_specs(text):
        where = _outside(spec, package_dir, root)
        if where:
            line = _line_of(text, name, spec)
            raise UsageError(printable(f"{path}:{line}: {section}.{name}: {spec} is outside the project root "
                                       f"{root} ({where}), which the sandbox cannot see; {_REMEDY}"))
    for arg in args:
        spec = arg if arg.startswith(_PREFIXES) or arg.startswith(("./", "../", "/", "~/")) else ""
        where = _outside(spec, package_dir, root) if spec else None
        if where:
            raise UsageError(printable(f"{arg} is outside the project root {root} ({where}), which the sandbox "
                                       f"cannot see; {_REMEDY}"))


_REMEDY = ("move it inside the project, or put sbox.yaml in a directory that holds both (the project root "
           "is sbox.yaml's directory)")


def _local_specs(text: str) -> list[tuple[str, str, str]]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return []
    out = []
    for section in SECTIONS:
        deps = data.get(section) if isinstance(data, dict) else None
        if isinstance(deps, dict):
            out += [(section, str(n), v) for n, v in deps.items()
                    if isinstance(v, str) and v.startswith(_PREFIXES + ("./", "../", "/", "~/"))]
    return out


def _outside(spec: str, package_dir: str, root: str) -> str | None:
    """The absolute path a local spec names, if it lies outside `root`; None otherwise."""
    for prefix in _PREFIXES:
        spec = spec.removeprefix(prefix)
    if spec.startswith("//"):  # file:///abs
        spec = "/" + spec.lstrip("/")
    if spec.startswith("~/"):  # the user's home: never inside a project root
        return spec
    if not spec:
        return None
    target = os.path.normpath(os.path.join(package_dir, spec))
    if not inside(target, root):
        return target
    real = os.path.realpath(target)  # a link in the project that leads out of it
    return None if inside(real, os.path.realpath(root)) else real


def inside_dirs(package_dir: str, root: str) -> tuple[str, ...]:
    """The local dependencies of `package_dir`'s package.json that lie inside `root` and build in
    place, relative to it with a trailing "/": their own install scripts write there (npm links
    them, then runs them in place). Only directories below the root, never the root itself, and
    only a dependency with an install-time script or a binding.gyp: every package's scripts run in
    the one phase, so a directory writable there is writable to all of them (a red-team finding:
    a dependency's postinstall rewrote a first-party `file:` library that builds nothing)."""
    out = []
    for _, _, spec in _local_specs(read_text(os.path.join(package_dir, "package.json"))):
        if _outside(spec, package_dir, root) is not None:
            continue
        for prefix in _PREFIXES:
            spec = spec.removeprefix(prefix)
        target = os.path.normpath(os.path.join(package_dir, spec))
        rel = os.path.relpath(target, root)
        # never the root, a hidden directory (.git, .husky, .venv, .vscode: what the host runs) or a venv
        if rel == "." or rel.startswith("..") or any(c.startswith(".") for c in rel.split(os.sep)):
            continue
        if os.path.lexists(os.path.join(target, "pyvenv.cfg")) or not builds(target):
            continue
        out.append(rel + "/")
    return tuple(dict.fromkeys(out))


BUILD_EVENTS = ("preinstall", "install", "postinstall", "prepare")  # what npm runs for a link


def builds(directory: str) -> bool:
    """Does the local package in `directory` run anything when installed: one of BUILD_EVENTS in
    its package.json, or node-gyp's default for a binding.gyp? (Unreadable: as if it did.)"""
    if os.path.isfile(os.path.join(directory, "binding.gyp")):
        return True
    text = read_text(os.path.join(directory, "package.json"))
    if not text:
        return False
    try:
        scripts = json.loads(text).get("scripts") or {}
    except (ValueError, AttributeError):
        return True
    return not isinstance(scripts, dict) or any(scripts.get(event) for event in BUILD_EVENTS)


def _line_of(text: str, name: str, spec: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if f'"{name}"' in line and spec in line:
            return number
    return 1
