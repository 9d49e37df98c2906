"""What a sandbox may be given from the host, checked on the finished mounts of every step.

- Never HOME, a directory above it, or HOME's secret places (keys, cloud and registry
  credentials, keyrings): a bind that would contain one gets it masked.
- Never a source reached through a link the project holds: a protected name or a path named by a
  project file that is a link is refused with one line, not followed.
- Never sbox's own state, caches, config or install inside a mount the sandbox can write: a
  sandbox could rename its parent and plant what the next run trusts.
"""
from __future__ import annotations

import os
import stat

from sbox_shim.errors import UsageError
from sbox_shim.lean import inside
from sbox_shim.plan import Mount

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable, Sequence

# Relative to HOME: what no sandbox ever sees, whichever mount would include it.
SECRET_PLACES = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".config/gh", ".config/hub", ".kube", ".docker",
    ".netrc", ".git-credentials", ".pypirc", ".password-store", ".local/share/keyrings", ".pki",
    ".config/op", ".config/rclone", ".terraform.d", ".vault-token", ".gem/credentials",
    ".cargo/credentials", ".cargo/credentials.toml", ".npmrc", ".yarnrc",
)
BIND_KINDS = ("bind", "cache", "copy")


def check_root(root: str, home: str, config_path: str | None) -> None:
    """A project root that is HOME or contains it would hand HOME to every sandbox."""
    if home and home != "/" and inside(os.path.realpath(home), os.path.realpath(root)):
        where = f"{config_path} makes {root}" if config_path else f"{root} is"
        raise UsageError(f"{where} the project root, which is your HOME or contains it; sbox never gives a "
                         "sandbox HOME: opt in from the project's own directory")


def check_mounts(mounts: Sequence[Mount], root: str, home: str, own: Iterable[str],
                 deliberate: Iterable[str] = ()) -> list[Mount]:
    """Refuse what no sandbox may be given; return the masks for secret places inside the binds.
    `deliberate` are credential files a phase is meant to see (the user's ~/.npmrc in npm's
    download phase): sbox chose them, no project file named them."""
    chosen = set(deliberate)
    masks: list[Mount] = []
    home = home.rstrip("/") or "/"
    for m in mounts:
        if m.kind not in BIND_KINDS or not m.source:
            continue
        source = os.path.normpath(m.source)
        if home != "/" and (source == home or inside(home, source)):
            raise UsageError(f"{m.source}: sbox never mounts HOME or a directory above it into a sandbox")
        if source not in chosen and any(inside(source, os.path.join(home, s)) for s in SECRET_PLACES):
            raise UsageError(f"{m.source}: sbox never mounts HOME's secret places (keys, credentials) into a sandbox")
        if inside(source, root) and source != root:
            _no_links(source, root)
        masks += [_mask(p) for s in SECRET_PLACES for p in [os.path.join(home, s)]
                  if inside(p, source) and p != source and p not in chosen and os.path.lexists(p)]
    _own_dirs_safe(mounts, own)
    return masks


def _no_links(source: str, root: str) -> None:
    """Each component from the project root down to `source` is what it says, not a link."""
    relative = os.path.relpath(source, root).split(os.sep)
    here = root
    for part in relative:
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except OSError:
            return  # missing: nothing to follow (the backend makes a mount point or skips it)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(here)
            except OSError:
                target = "?"
            raise UsageError(f"{here} is a symbolic link (to {target}) inside the project; sbox never "
                             "mounts through links a project holds: replace it with the real directory or file")


def _mask(path: str) -> Mount:
    if os.path.isdir(path) and not os.path.islink(path):
        return Mount("", path, readonly=True, kind="tmpfs")
    return Mount("/dev/null", path, readonly=True)


def _own_dirs_safe(mounts: Sequence[Mount], own: Iterable[str]) -> None:
    writable = [os.path.realpath(m.source) for m in mounts if not m.readonly and m.kind == "bind"]
    for d in own:
        real = os.path.realpath(d)
        for w in writable:
            if inside(real, w):
                raise UsageError(f"sbox's own directory {d} lies inside {w}, which this sandbox can write; move it "
                                 "out (SBOX_STATE_DIR, SBOX_CACHE_DIR, XDG_* or a reinstall) so no run can plant "
                                 "what the next one trusts")
