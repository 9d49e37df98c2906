"""What the sandbox's filesystem holds: toolchain, project, throwaway HOME, our own /etc files."""
from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

from sbox_shim.plan import DNS_SINKHOLE, File, Mount, Network

TOOLCHAIN = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/pki", "/etc/alternatives",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/timezone",
    "/etc/mime.types", "/etc/services", "/etc/protocols", "/etc/os-release", "/etc/debian_version",
    "/etc/npmrc", "/etc/pip.conf", "/etc/xdg/pip", "/etc/gitconfig", "/etc/python3", "/etc/login.defs",
)
PROTECTED = ("sbox.yaml", ".sbox.yaml", ".git", ".github", ".vscode", ".idea", ".claude")
SYSTEM_DIRS = ("/usr/", "/bin", "/sbin", "/lib")


def toolchain_mounts(exists: Callable[[str], bool] = os.path.lexists,
                     readlink: Callable[[str], str | None] = lambda p: os.readlink(p) if os.path.islink(p) else None,
                     is_file: Callable[[str], bool] = lambda p: os.path.isfile(p) and not os.path.islink(p),
                     ) -> list[Mount]:
    """The host toolchain read-only; `/bin -> usr/bin` style links are recreated as links, plain
    files of /etc are copied in."""
    mounts = []
    for path in TOOLCHAIN + ETC:
        if not exists(path):
            continue
        link = readlink(path) if path in TOOLCHAIN else None
        if link:
            mounts.append(Mount(link, path, kind="symlink"))
        else:
            mounts.append(Mount(path, path, kind="copy" if path in ETC and is_file(path) else "bind"))
    return mounts


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
    if prefix in ("/", home) or os.path.basename(prefix) == ".cargo":
        return bindir
    return prefix


def protected_paths(root: str, config_path: str | None) -> list[str]:
    """Paths in a writable project that stay read-only, when they exist."""
    protected = [os.path.join(root, name) for name in PROTECTED]
    if config_path:
        protected.append(os.path.abspath(config_path))
    return list(dict.fromkeys(protected))


def project_mounts(root: str, writable: bool, config_path: str | None,
                   exists: Callable[[str], bool] = os.path.lexists) -> list[Mount]:
    mounts = [Mount(root, root, readonly=not writable)]
    if writable:
        mounts += [Mount(p, p) for p in protected_paths(root, config_path) if exists(p)]
    return mounts


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
    resolv = f"nameserver {DNS_SINKHOLE}\noptions timeout:1 attempts:1\n"
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

