"""Programs a sandbox could have written, which no host or network step may run.

- Anything in a venv: a directory with `pyvenv.cfg` in it or in any directory above it, as the
  path is written or as it resolves. pip writes the venv it installs into, whichever that is, and
  may move the venv's `bin` behind a link (`V/bin -> lib/.x/bin`: pyvenv.cfg is still at `V/`).
- A venv's base interpreter (pyvenv.cfg's `home`, a file a sandbox may have written) runs in
  pip's download step with the index credentials: it is accepted only where no sandbox writes
  (`python_refusal`), never by its looks (a `bin/python3` and a `lib/python3.X/os.py`).
"""
from __future__ import annotations

import os
import stat

from sbox_shim.lean import inside

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable, Mapping, Sequence

# Where Pythons are installed and no sandbox is given write: the system's, /opt (CI's toolcaches,
# Homebrew on macOS), Nix's store, Homebrew on Linux, macOS's frameworks.
SYSTEM_PLACES = ("/usr", "/bin", "/lib", "/lib64", "/opt", "/nix/store", "/home/linuxbrew/.linuxbrew",
                 "/Library/Frameworks/Python.framework", "/Library/Developer/CommandLineTools",
                 "/Applications/Xcode.app")


def venv_of(path: str) -> str | None:
    """The venv `path` lies in: the nearest directory (itself or above it, as written or resolved)
    holding a pyvenv.cfg; None if there is none."""
    for start in dict.fromkeys((os.path.normpath(path), os.path.realpath(path))):
        here = start
        while True:
            if os.path.lexists(os.path.join(here, "pyvenv.cfg")):
                return here
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    return None


def opted_in_by(path: str) -> str | None:
    """The nearest sbox opt-in file covering `path` (in it or a directory above): a project whose
    sandboxes write its tree. Two in one directory still opt it in: the first of them."""
    from sbox_shim.config import opt_in_files
    from sbox_shim.errors import ConfigError

    try:
        return next(iter(opt_in_files(path)), None)
    except ConfigError as exc:
        return exc.path


def written_by_sandbox(path: str, writable: Sequence[str]) -> bool:
    """A PATH entry or program a sandbox could have filled: inside `writable`, inside any venv, or
    under any directory an sbox opt-in file covers, as written or resolved (pip writes the venv
    it installs into, whichever that is, and may have moved its bin behind a link: `venv_of`
    looks for pyvenv.cfg in every directory above)."""
    paths = tuple(dict.fromkeys((os.path.normpath(path), os.path.realpath(path))))
    if any(inside(p, w) for p in paths for w in writable):
        return True
    return venv_of(path) is not None or any(opted_in_by(p) for p in paths)


def network_path(path: str, writable: Sequence[str]) -> str:
    """PATH for a step with the network: absolute entries no sandbox could have filled."""
    return os.pathsep.join(d for d in path.split(os.pathsep)
                           if d.startswith("/") and not written_by_sandbox(d, writable))


def install_places(env: Mapping[str, str], homes: Iterable[str]) -> tuple[str, ...]:
    """The user's Python install directories (pyenv, uv, mise, asdf, Homebrew, conda, rye) and the
    system's: where interpreters live that no sandbox is given write to."""
    places = list(SYSTEM_PLACES)
    for name, sub in (("PYENV_ROOT", "versions"), ("UV_PYTHON_INSTALL_DIR", ""),
                      ("MISE_DATA_DIR", "installs/python"), ("ASDF_DATA_DIR", "installs/python")):
        if env.get(name, "").startswith("/"):
            places.append(os.path.join(env[name], sub) if sub else env[name])
    for home in dict.fromkeys(h for h in homes if h.startswith("/") and h != "/"):
        data = env.get("XDG_DATA_HOME", "") if env.get("XDG_DATA_HOME", "").startswith("/") else ""
        for share in dict.fromkeys((data, os.path.join(home, ".local", "share"))):
            if share:
                places += [os.path.join(share, "uv", "python"), os.path.join(share, "mise", "installs", "python")]
        places += [os.path.join(home, p) for p in (".pyenv/versions", ".asdf/installs/python", ".linuxbrew",
                                                   "miniconda3", "anaconda3", "miniforge3", "mambaforge",
                                                   ".rye/py")]
    return tuple(os.path.normpath(p) for p in dict.fromkeys(places))


def python_refusal(python: str, places: Iterable[str], installs: Iterable[str]) -> str | None:
    """Why a sandbox could have written the interpreter `python` (an absolute path), or None.
    Never where sandboxes write (`places`: the project, sbox's cache and state, as given and
    resolved), in a venv, or in a directory an sbox opt-in file covers (any sandbox run there
    could write it); and, as written and as resolved, either under a Python install directory
    (`installs`) or on a path no directory of which this user can write (meaningful but as root)."""
    given, real = os.path.normpath(python), os.path.realpath(python)
    for path in dict.fromkeys((given, real)):
        where = next((p for p in places if p and inside(path, p)), None)
        if where:
            return f"lies in {where}, where sandboxes write"
        venv = venv_of(path)
        if venv:
            return f"lies in a venv ({venv}/pyvenv.cfg), which sandboxes write"
        opted = opted_in_by(path)
        if opted:
            return f"lies under {os.path.dirname(opted)}, which {opted} opts in (sandboxes write there)"
    for path in dict.fromkeys((given, real)):
        if not any(inside(path, p) for p in installs) and not _unwritable(path):
            return ("is neither in a Python install directory (/usr, /opt, pyenv, uv, mise, asdf, Homebrew) "
                    "nor on a path only root can write")
    return None


def _unwritable(path: str) -> bool:
    """`path` and every directory above it belong to another user (root) and are writable by
    no group or others: this user, hence no sandbox of theirs, could have written it. Never so
    for root, who can write anything."""
    uid = os.geteuid()
    if uid == 0:
        return False
    here = path
    while True:
        try:
            st = os.stat(here)
        except OSError:
            return False
        if st.st_uid == uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        parent = os.path.dirname(here)
        if parent == here:
            return True
        here = parent
