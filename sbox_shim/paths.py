"""Where sbox keeps its files: the XDG base directories, read from the env passed in.

On Linux this is what platformdirs answers, without importing it on every `npm` a user types;
elsewhere platformdirs decides.
"""
from __future__ import annotations

import posix
import sys

from sbox_shim import lean

TYPE_CHECKING = False  # typing itself costs milliseconds on this path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Mapping

_XDG = {
    "config": ("XDG_CONFIG_HOME", ".config"),
    "data": ("XDG_DATA_HOME", ".local/share"),
    "cache": ("XDG_CACHE_HOME", ".cache"),
    "state": ("XDG_STATE_HOME", ".local/state"),
}


OVERRIDES = {"state": "SBOX_STATE_DIR", "cache": "SBOX_CACHE_DIR"}


def sbox_dir(kind: str, env: Mapping[str, str]) -> str:
    """sbox's state or cache directory: SBOX_STATE_DIR / SBOX_CACHE_DIR if set, else the XDG one."""
    return env.get(OVERRIDES[kind]) or user_dir(kind, env)


def user_dir(kind: str, env: Mapping[str, str]) -> str:
    """sbox's own directory of `kind` (config, data, cache, state) for this user."""
    if not sys.platform.startswith("linux"):
        import platformdirs

        return str(getattr(platformdirs, f"user_{kind}_dir")("sbox"))
    variable, default = _XDG[kind]
    base = env.get(variable, "")
    if not base.startswith("/"):  # the XDG spec: a relative value is ignored
        base = lean.join(env.get("HOME") or _home(), default)
    return lean.join(base, "sbox")


def _home() -> str:
    """`os.path.expanduser("~")`: without loading os where it has not been (the warm path)."""
    loaded = sys.modules.get("os")
    if loaded is not None:  # its environ is the live one
        return str(loaded.path.expanduser("~"))
    home = posix.environ.get(b"HOME")
    if home:
        return home.decode(sys.getfilesystemencoding(), "surrogateescape")
    import pwd

    return pwd.getpwuid(posix.getuid()).pw_dir
