"""What the sandbox's filesystem holds: toolchain, project, throwaway HOME, our own /etc files.

The project is mounted at its own path, and what of it a step may write is its `writable`:
- `True` (the project's own lifecycle scripts, `npm run`, a profile's default): all of it, but
  PROTECTED, the config file, every `.git` file or directory anywhere in the tree (submodules,
  nested repositories, node_modules included: git reads their config and hooks on the host) and
  git's `core.hooksPath` when it points inside the project, which stay read-only binds;
- `False`: none of it;
- a tuple of project-relative paths (the built-in phases' outputs, a profile's `writable:` list):
  the project read-only but for a writable bind of each path, with the same `.git` protections
  inside them.

An output that does not exist yet: a directory (written with a trailing "/", as `node_modules/`)
is created by sbox on the host before the sandbox starts, empty. A file (a lockfile, go.sum) is
staged: a bind needs a mount point, and the project is read-only, so sbox creates an empty
placeholder on the host (O_EXCL, no link followed) and binds a fresh empty file of the run
directory over it; after the step, the staged content replaces the placeholder (written through an
O_NOFOLLOW descriptor, only if the placeholder is still the very inode sbox made), or, if the step
wrote nothing, the placeholder is removed. npm and cargo read an empty lockfile as none and write a
whole one. An output that is a symbolic link, or lies under one, is refused: left read-only, with a
warning, so a mount source never resolves through a link the project holds. A missing file is
staged only where its directory exists (or, for an optional output, will exist: below); sbox creates
no parents for it.

A built-in phase may also ask for a directory's top rebuilt (an output ending in TOP, "./" for
the project's own, "web/./" for `web/`'s; no `writable:` of a config can hold one): a writable
tmpfs over the directory, and in it each of its entries, bound again as it is when the step starts
(read-only but for the outputs; a link recreated on bwrap, left out on docker), so that what the
step makes or removes there but its outputs happens in a throwaway layer, never on the host
(berry's scripts phase: yarn removes a `node_modules` that is not there, which a read-only mount
refuses with EROFS, not the ENOENT it expects). The runner lists the directory as the step starts
(runner.present): a step before it may have made entries there (yarn.lock, `.pnp.cjs`).

A built-in phase may mark an output optional (a trailing "?", which no `writable:` of a config can
hold: it is a glob character there): it is bound only if it exists as the step starts, the step
after one that may or may not have made it (yarn 2+ removes a `.yarn/unplugged/` it does not need,
which a bind sbox made would stop it doing). So one whose directory is missing when the plan is
made is planned as staged all the same: by the step's start either both are there or it is left
out (`.yarn/install-state.gz`, which berry's download makes with `.yarn/`).

Making the project root writable to let a lockfile appear would have undone all of this; binding a
staging file keeps every other path of the project read-only even in the phase that makes it.

Unix sockets found (by lstat, at plan time) in the project's top two levels, `.git/` among them
(git's fsmonitor daemon listens at `.git/fsmonitor--daemon.ipc`), are masked by /dev/null in every
sandbox that mounts the project: a network-off step cannot reach a host daemon through them.
Still possible: a socket deeper in the tree (`node_modules/.cache/x/y.sock`), or one a host
process creates after the plan was made, is connectable; abstract sockets need the network
namespace, which network-off and allowlisted steps have.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from sbox_shim.lean import inside
from sbox_shim.plan import DNS_SINKHOLE, File, Mount, Network
from sbox_shim.tree import Tree

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Iterable, Sequence

TOOLCHAIN = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The host's /etc that tools need, never its private keys: /etc/ssl and /etc/pki only for their
# certificates and OpenSSL's config (not /etc/ssl/private, /etc/pki/tls/private, /etc/pki/nssdb).
# The system-wide npm, pip and git configs are configs.py's.
ETC = (
    "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/ca-certificates.conf",
    "/etc/pki/ca-trust", "/etc/pki/tls/certs", "/etc/pki/tls/cert.pem", "/etc/pki/tls/openssl.cnf",
    "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/timezone",
    "/etc/mime.types", "/etc/services", "/etc/protocols", "/etc/os-release", "/etc/debian_version",
    "/etc/xdg/pip", "/etc/python3", "/etc/login.defs",
)
from sbox_shim.protected import PROTECTED  # noqa: E402  (re-exported: layout.PROTECTED)
SYSTEM_DIRS = ("/usr/", "/bin", "/sbin", "/lib")


def toolchain_mounts(exists: Callable[[str], bool] = os.path.lexists,
                     readlink: Callable[[str], str | None] = lambda p: os.readlink(p) if os.path.islink(p) else None,
                     is_file: Callable[[str], bool] = lambda p: os.path.isfile(p) and not os.path.islink(p),
                     realpath: Callable[[str], str] = os.path.realpath,
                     ) -> list[Mount]:
    """The host toolchain read-only; `/bin -> usr/bin` style links are recreated as links, plain
    files of /etc are copied in. A link of /etc into /usr (`/etc/localtime`, `/etc/os-release`)
    is a link to where it leads, in the sandbox's /usr, not a mount of its own."""
    mounts = []
    for path in TOOLCHAIN + ETC:
        if not exists(path):
            continue
        link = readlink(path)
        if link and path in TOOLCHAIN:
            mounts.append(Mount(link, path, kind="symlink"))
        elif link and realpath(path).startswith("/usr/") and exists(realpath(path)):
            mounts.append(Mount(realpath(path), path, kind="symlink"))
        else:
            mounts.append(Mount(path, path, kind="copy" if path in ETC and is_file(path) else "bind"))
    return mounts


def in_toolchain(path: str) -> bool:
    """`path` is in every sandbox as it is on the host: under the toolchain or a chosen /etc entry
    (a file elsewhere in /etc, `/etc/ssl/private/client.pem`, is mounted only where a phase asks)."""
    path = os.path.normpath(path)
    return any(inside(path, top) for top in TOOLCHAIN + ETC)


def tool_prefix(real_tool: str | None, home: str) -> str | None:
    """The installation prefix of a tool outside the system dirs, to mount read-only.

    `/opt/node/bin/npm` -> `/opt/node`, `~/.pyenv/shims/pip` -> `~/.pyenv`. A prefix that is HOME
    itself, or a `.cargo` (which holds registry credentials), shrinks to the tool's bin directory.
    """
    if not real_tool:
        return None
    bindir = os.path.dirname(os.path.realpath(real_tool))
    if bindir.startswith(SYSTEM_DIRS):
        return None
    prefix = os.path.dirname(bindir)
    # HOME itself, a `.cargo` (registry credentials) or `~/.local` (shell histories, keyrings,
    # every app's data): only the tool's bin directory.
    if (prefix in ("/", home, os.path.join(home, ".local")) or os.path.basename(prefix) == ".cargo"
            or home.startswith(prefix.rstrip("/") + "/")):  # a prefix above HOME would hold HOME
        return bindir
    return prefix


def protected_paths(root: str, config_path: str | None) -> list[str]:
    """Paths in a writable project that stay read-only, when they exist."""
    protected = [os.path.join(root, name) for name in PROTECTED]
    if config_path:
        protected.append(os.path.abspath(config_path))
    return list(dict.fromkeys(protected))


TOP = "./"  # ending a built-in phase's output: that directory's top rebuilt in a throwaway layer


def optional_outputs(writable: bool | tuple[str, ...]) -> tuple[bool | tuple[str, ...], tuple[str, ...],
                                                                tuple[str, ...]]:
    """`writable` without the optional marks and the tops, the optional outputs as written, and the
    directories whose top is rebuilt ("" for the project's own)."""
    if isinstance(writable, bool):
        return writable, (), ()
    outputs = tuple(w.rstrip("?") for w in writable if not w.endswith(TOP))
    tops = tuple(w[:-len(TOP)].rstrip("/") for w in writable if w.endswith(TOP))
    return outputs, tuple(w[:-1] for w in writable if w.endswith("?")), tops


def rebuilt_top(mounts: tuple[Mount, ...], root: str, top: str) -> tuple[Mount, ...]:
    """`mounts` with the entries of `top` (the project `root` or a directory in it) as they are now
    after the tmpfs over it (TOP), each bound read-only but those a later mount takes (outputs,
    protected paths, masks); a link recreated as it is; anything else left out. Listed through a
    descriptor reached from the root without following a link."""
    from sbox_shim.skeleton import entries

    at = next((i for i, m in enumerate(mounts) if m.kind == "tmpfs" and m.target == top), None)
    if at is None:
        return mounts
    taken = {m.target for m in mounts[at + 1:]}
    found = entries(root, top) or []
    added = tuple(Mount(text, path, kind="symlink") if what == "link" else Mount(path, path)
                  for name, what, text in found for path in [os.path.join(top, name)] if path not in taken)
    return mounts[:at + 1] + added + mounts[at + 1:]


def project_mounts(root: str, writable: bool, config_path: str | None,
                   exists: Callable[[str], bool] = os.path.lexists) -> list[Mount]:
    mounts = [Mount(root, root, readonly=not writable)]
    if writable:
        mounts += [Mount(p, p) for p in protected_paths(root, config_path) if exists(p)]
    return mounts


@dataclass(frozen=True)
class ProjectLayout:
    mounts: tuple[Mount, ...]
    create: tuple[str, ...] = ()  # missing output directories sbox makes before the step
    staged: tuple[tuple[str, str], ...] = ()  # (run-dir file, project file) copied back after
    refused: tuple[str, ...] = ()  # why an output stays read-only


def project_layout(root: str, writable: bool | tuple[str, ...], config_path: str | None, tree: Tree,
                   stage_dir: str, exists: Callable[[str], bool] = os.path.lexists,
                   tops: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> ProjectLayout:
    """The project's mounts for a step (see the module's docstring); `tree` from tree.inspect."""
    masks = [Mount("/dev/null", s) for s in tree.sockets]
    if writable is False or writable == ():
        return ProjectLayout(tuple([Mount(root, root)] + masks))
    if isinstance(writable, bool):
        mounts = project_mounts(root, True, config_path, exists)
        kept = [m.target for m in mounts if m.readonly] + list(tree.hooks)
        mounts = mounts[:1] + [Mount(p, p, readonly=False) for p in pins(root, tree.gits, kept)] + mounts[1:]
        mounts += [Mount(p, p) for p in tree.gits + tree.hooks]
        return ProjectLayout(tuple(mounts + masks))
    mounts = [Mount(root, root)]
    # each rebuilt top: its entries follow its tmpfs at run time (runner.present)
    mounts += [Mount("", os.path.join(root, t) if t else root, readonly=False, kind="tmpfs") for t in tops]
    create: list[str] = []
    staged: list[tuple[str, str]] = []
    refused: list[str] = []
    kinds = dict(tree.kinds)
    for n, relative in enumerate(writable):
        path = os.path.join(root, relative.rstrip("/"))
        found = kinds.get(relative, "refused: not inspected")
        if found.endswith(" does not exist") and relative in optional:
            found = "missing"  # its directory too: decided as the step starts (runner.present)
        if found == "missing" and relative.endswith("/"):
            create.append(path)
        elif found == "missing":
            source = os.path.join(stage_dir, f"{n}-{os.path.basename(path)}")
            staged.append((source, path))
            mounts.append(Mount(source, path, readonly=False))
            continue
        elif found.startswith("refused"):
            refused.append(f"{relative} stays read-only ({found.split(': ', 1)[-1]})")
            continue
        mounts.append(Mount(path, path, readonly=False))
        if found == "dir":
            kept = protected_paths(root, config_path) + list(tree.hooks)
            mounts += [Mount(p, p, readonly=False) for p in pins(path, tree.gits, kept)]
    guarded = [p for p in protected_paths(root, config_path) + list(tree.gits + tree.hooks) if exists(p)]
    mounts += [Mount(p, p) for p in guarded]
    return ProjectLayout(tuple(mounts + masks), tuple(create), tuple(staged), tuple(refused))


def pins(top: str, gits: Iterable[str], readonly: Iterable[str] = ()) -> list[str]:
    """The directories below `top` (a writable bind) on the way to each of `gits`, the repository's
    own directory included, but none that is a `.git`, one of `readonly` or inside one (read-only
    binds already, which no sandbox moves).
    Each is bound on itself, writable as before: a mount point cannot be renamed or removed in its
    own mount namespace (EBUSY), so this sandbox cannot move a repository of the project. A bind
    protects a path through the mount it was made in: another sandbox writing the project moved
    `vendor/lib` into `node_modules/` (or out of a `.git` it had made) once a step ran, and in
    that step the repository was then reached through its writable `node_modules` bind, where no
    read-only bind of its `.git` applies: its token read, its hooks written (red team 9)."""
    top = top.rstrip("/")
    kept = [r.rstrip("/") for r in readonly]
    out: list[str] = []
    for g in gits:
        if not inside(g, top) or g == top:
            continue
        here = top
        for part in os.path.relpath(os.path.dirname(g), top).split("/"):
            here = os.path.join(here, part)
            if part in (".", "", ".git") or any(inside(here, r) for r in kept):
                break
            out.append(here)
    return list(dict.fromkeys(out))


def phase_parts(root: str, phase_mounts: Sequence[Mount], tree: Tree, config_path: str | None) -> list[Mount]:
    """For each writable bind a phase adds inside the project (pip's install phase writes an
    in-project `.venv`), what project_layout gives a writable part: its directories on the way to
    each repository in it pinned, and each `.git` entry in it read-only. Without them, pip's
    phase moved `.venv/src/foo` (a `pip install -e git+` checkout) into a `.git` it had made,
    where the walk of a step planned meanwhile does not look: that step read the repository's
    token and wrote its hooks, and the host's next `git commit` there ran them (red team 13)."""
    out: list[Mount] = []
    kept = [k.target for k in phase_mounts if k.readonly] + protected_paths(root, config_path) + list(tree.hooks)
    for m in phase_mounts:
        if m.kind not in ("bind", "cache") or m.readonly or not inside(m.target, root):
            continue
        out += [Mount(p, p, readonly=False) for p in pins(m.target, tree.gits, kept)]
        out += [Mount(g, g) for g in tree.gits if inside(g, m.target) and g != m.target]
        if m.target == root:  # a project that is a venv itself (`python3 -m venv .`): as `writable: true`
            out += [Mount(p, p) for p in [*protected_paths(root, config_path), *tree.hooks] if os.path.lexists(p)]
    return out


def pinned(mounts: Sequence[Mount], root: str, since: int | None = None) -> list[str]:
    """The directories `pins` bound in a step, relative to `root`: writable binds on themselves
    inside another writable bind; with `since` (ns), only those whose ctime is later, less the
    filesystem clock's coarseness: a step emptied them (`rm -rf vendor`), and failed on them."""
    parts = [m.target for m in mounts if m.kind == "bind" and not m.readonly]
    held = [m.target for m in mounts
            if m.kind == "bind" and not m.readonly and m.source == m.target and inside(m.target, root)
            and any(p != m.target and inside(m.target, p) for p in parts)]
    if since is not None:
        held = [p for p in held if _ctime(p) >= since - COARSE]
    return [os.path.relpath(p, root) for p in held]


COARSE = 20_000_000  # ns: file times come from a clock that may lag the one time.time_ns reads


def _ctime(path: str) -> int:
    try:
        return os.lstat(path).st_ctime_ns
    except OSError:
        return 0


def own_mounts(mounts: Sequence[Mount], own: Iterable[str]) -> list[Mount]:
    """sbox's own directories (its state with the plan cache, its config, its install) read-only
    wherever a writable mount would expose them: a project at or above HOME, say. Compared by real
    path, so a link to them changes nothing; made first if missing (kind `cache`), so a sandbox
    cannot create them either."""
    writable = [os.path.realpath(m.source) for m in mounts if not m.readonly and m.kind in ("bind", "cache")]
    out = []
    for d in dict.fromkeys(os.path.realpath(d) for d in own):
        if any(d == w or d.startswith(w.rstrip("/") + "/") for w in writable):
            out.append(Mount(d, d, readonly=True, kind="cache"))
    return out


def etc_files(user: str, uid: int, gid: int, home: str, net: Network) -> list[File]:
    """Our own resolv.conf, hosts, nsswitch.conf, passwd and group."""
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for name, addresses in net.pins:
        if name in ("localhost",):
            continue
        hosts += [f"{ip} {name}" for ip in addresses]
    # Offline, the sandbox's own loopback: nothing answers there but what sbox puts there to
    # hear which names a failing script wanted (egress/lookups.py). Elsewhere, a sinkhole.
    resolver = "127.0.0.1" if net.policy == "off" else DNS_SINKHOLE
    resolv = f"nameserver {resolver}\noptions timeout:1 attempts:1\n"
    users = ["root:x:0:0:root:/root:/bin/sh"]
    groups = ["root:x:0:"]
    if uid != 0:
        users.append(f"{user}:x:{uid}:{gid}:{user}:{home}:/bin/sh")
        groups.append(f"{user}:x:{gid}:")
    users.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    groups.append("nogroup:x:65534:")
    return [
        File("/etc/resolv.conf", resolv),
        File("/etc/hosts", "\n".join(hosts) + "\n"),
        File("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
        File("/etc/passwd", "\n".join(users) + "\n"),
        File("/etc/group", "\n".join(groups) + "\n"),
    ]


def extra_mounts(paths: Iterable[str], readonly: bool = True) -> list[Mount]:
    return [Mount(p, p, readonly=readonly) for p in dict.fromkeys(paths)]


def dedupe(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """Last mount of a target wins; parents sort before children, as both backends need."""
    by_target = {m.target: m for m in mounts}
    return tuple(sorted(by_target.values(), key=lambda m: (m.target.count("/"), m.target)))

