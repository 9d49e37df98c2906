"""Which install scripts an npm install's offline phase runs, decided after the download phase.

npm itself runs the install scripts of the packages an install added or changed (and of the
links the project holds), and the project's own preinstall/install/postinstall only for a bare
`npm install`/`npm ci`, never for `npm install <name>`. The download phase ran with
--ignore-scripts; its lockfiles say which packages have install scripts (`hasInstallScript`).
Comparing npm's hidden lockfile (node_modules/.package-lock.json) before and after gives the
packages to build: `npm rebuild <their directories>`, or no scripts phase at all when there are
none.

Those lockfiles were written by a sandbox: read size-capped, never through a link, and their
worst lie picks more or fewer scripts to run inside the offline sandbox. Every name becomes an
absolute path below the package directory (npm reads it as a directory spec, never an option).
"""
from __future__ import annotations

import os

HIDDEN = "node_modules/.package-lock.json"
LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
ROOT_EVENTS = ("preinstall", "install", "postinstall")
MAX_TARGETS = 2000  # beyond that, a plain `npm rebuild` (every package) is the shorter command
_LIMIT = 256 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Lockfiles are read with jsonread (the interpreter's own JSON scanner), not json: json imports re,
# enum and functools, about 7 ms before the first step of every repeated install.

Entries = dict[str, tuple[str, bool, bool]]  # lockfile key -> (identity, has install script, is a link)


def read_state(directory: str) -> Entries | None:
    """The packages npm's hidden lockfile lists under `directory`, but those whose folder is gone or
    changed after it was written (npm would reinstall or look at them anew); None if there is none."""
    found = entries(_read(directory, ("node_modules", ".package-lock.json")))
    if not found:
        return found
    try:
        written = os.lstat(os.path.join(directory, HIDDEN)).st_mtime_ns + 10_000_000  # npm's 10 ms slack
    except OSError:
        return None
    return {key: e for key, e in found.items() if _current(os.path.join(directory, key), e[2], written)}


def _current(path: str, link: bool, written: int) -> bool:
    """The package's folder is there and no entry was added to or removed from it since `written`."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    if link:
        return stat.S_ISLNK(st.st_mode)
    return stat.S_ISDIR(st.st_mode) and st.st_mtime_ns <= written


def touch(directory: str) -> None:
    """After the scripts phase: npm's hidden lockfile newer than the folders the scripts wrote, as
    npm, which writes it after the scripts, leaves it (else npm and the next run distrust it).
    Never through a link."""
    try:
        fd = os.open(os.path.join(directory, "node_modules"), _DIR)
    except OSError:
        return
    try:
        os.utime(".package-lock.json", dir_fd=fd, follow_symlinks=False)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_after(directory: str) -> Entries | None:
    """After the download: the hidden lockfile, else the project's lockfile."""
    found = read_state(directory)
    for name in LOCKFILES:
        if found is None:
            found = entries(_read(directory, (name,)))
    return found


def entries(data: bytes | None) -> Entries | None:
    if not data:
        return None
    from sbox_shim.jsonread import loads

    try:
        doc = loads(data)
    except ValueError:
        return None
    packages = doc.get("packages") if isinstance(doc, dict) else None
    if not isinstance(packages, dict):
        return None
    out: Entries = {}
    for key, meta in packages.items():
        if (not isinstance(meta, dict) or meta.get("inBundle") or not isinstance(key, str) or not _installed(key)
                or any(part in (".", "..", "@.", "@..") for part in key.split("/"))):
            continue  # the root (""), link targets outside node_modules, bundled packages (never built)
        identity = repr([meta.get(k) for k in ("version", "resolved", "integrity", "link")])
        out[key] = (identity, meta.get("hasInstallScript") is True, meta.get("link") is True)
    return out


def _installed(key: str) -> bool:
    """A key of a package installed in a node_modules: `node_modules/NAME`, then any number of
    `/node_modules/NAME`, each NAME `pkg` or `@scope/pkg` (no empty part, NUL or newline)."""
    if "\0" in key or "\n" in key:
        return False
    parts = key.split("/")
    at = 0
    while True:
        if at >= len(parts) or parts[at] != "node_modules":
            return False
        at += 1
        if at < len(parts) and len(parts[at]) > 1 and parts[at].startswith("@"):
            at += 1  # the scope: its package's name follows
        if at >= len(parts) or not parts[at]:
            return False
        at += 1
        if at == len(parts):
            return True


def targets(before: Entries, after: Entries) -> list[str]:
    """The packages to build: each added or changed one with install scripts, and every link
    directly under the project's node_modules (npm runs theirs on every install)."""
    out = []
    for key, (identity, script, link) in after.items():
        if link and key.count("node_modules/") == 1:
            out.append(key)
        elif script and not link and before.get(key, ("",))[0] != identity:
            out.append(key)
    return out


def settled(directory: str, before: Entries | None) -> bool:
    """Will a bare `npm install` change nothing in node_modules: package-lock.json lists exactly
    what npm's hidden lockfile says is there, package.json asks for what the lockfile's root holds,
    and no link (a workspace with its own package.json) is involved. A lie here only costs the
    rollback of node_modules, never a script."""
    if not before or any(link for _, _, link in before.values()):
        return False
    data = _read(directory, ("package-lock.json",))
    if entries(data) != before:
        return False
    from sbox_shim.jsonread import loads

    try:
        lock = loads(data or b"{}")["packages"][""]
        manifest = loads(_read(directory, ("package.json",)) or b"{}")
        return all((manifest.get(s) or {}) == (lock.get(s) or {}) for s in ROOT_SECTIONS)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


ROOT_SECTIONS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "workspaces")


def any_scripts(directory: str) -> bool:
    """Does package-lock.json list a package with install scripts, or a link?"""
    return any(script or link for _, script, link in (entries(_read(directory, ("package-lock.json",))) or {}).values())


def root_due(directory: str) -> bool:
    """Does the project's package.json have an install-time script (or a binding.gyp)?"""
    from sbox_shim.jsonread import loads

    try:
        scripts = loads(_read(directory, ("package.json",)) or b"{}").get("scripts") or {}
    except (ValueError, AttributeError):
        return True  # unreadable: as npm rebuild would, let it decide
    if not isinstance(scripts, dict):
        return True
    return any(scripts.get(e) for e in ROOT_EVENTS) or os.path.isfile(os.path.join(directory, "binding.gyp"))


def scripts_argv(argv: tuple[str, ...], directory: str, before: Entries | None, after: Entries | None,
                 root: bool) -> tuple[str, ...] | None:
    """The scripts phase's command (npm_scripts.js's `... -- DIR...`), or None when there is nothing
    to run. `root`: the project's own install scripts are due. Unknown state: no directories, for
    which the driver runs the whole `npm rebuild`."""
    if after is None:
        return argv
    chosen = targets(before or {}, after)
    if root:
        chosen.append("")
    if not chosen:
        return None
    if len(chosen) > MAX_TARGETS:
        return argv
    return (*argv, "--", *[os.path.join(directory, key) if key else directory for key in chosen])


def _read(directory: str, parts: tuple[str, ...]) -> bytes | None:
    """A file below `directory`, each directory opened without following a link; None if absent,
    not a regular file or larger than the cap."""
    from sbox_shim.regular import read_regular

    try:
        fd = os.open(directory, _DIR)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        return read_regular(parts[-1], _LIMIT, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
