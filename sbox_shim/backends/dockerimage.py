"""The docker backend's images: a tiny base image built locally from scratch, or the profile's own."""
from __future__ import annotations

import hashlib
import io
from typing import Any

from sbox_shim.backends import dockerapi
from sbox_shim.errors import SandboxError

BASE_IMAGE = "sbox-base:1"  # tagged with a digest of the host's top-level links


def base_image_tag(links: tuple[tuple[str, str], ...]) -> str:
    digest = hashlib.sha256(repr(links).encode()).hexdigest()[:12]
    return f"{BASE_IMAGE}-{digest}"


def ensure_base_image(client: Any, links: tuple[tuple[str, str], ...]) -> str:
    """An image built locally from scratch: no registry pull; only the host's top-level links
    (`/bin -> usr/bin` on merged-/usr systems) and empty mount points."""
    api = dockerapi.low_level(client)
    tag = base_image_tag(links)
    try:
        api.inspect_image(tag)
        return tag
    except Exception as exc:
        if not dockerapi.image_missing(exc):
            raise SandboxError(f"docker could not look up the local base image {tag}: {dockerapi.short(exc)}") from None
    build_base_image(api, tag, links)
    return tag


def build_base_image(api: Any, tag: str, links: tuple[tuple[str, str], ...]) -> None:
    import tarfile

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b"FROM scratch\nLABEL io.sbox.base=1\nCOPY root/ /\n"
        _add(tar, "Dockerfile", tarfile.REGTYPE, data=dockerfile)
        for name in ("root", "root/etc", "root/tmp", "root/proc", "root/dev", "root/sys"):
            _add(tar, name, tarfile.DIRTYPE)
        for target, link in links:
            _add(tar, "root" + target, tarfile.SYMTYPE, link=link)
    context.seek(0)
    try:
        dockerapi.build(api, context, tag, {dockerapi.LABEL: "base"})
    except Exception as exc:
        raise SandboxError(f"could not build the local base image {tag}: {dockerapi.short(exc)}") from None


def _add(tar: Any, name: str, kind: bytes, data: bytes = b"", link: str = "") -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = link
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


def pull(api: Any, image: str) -> None:
    try:
        dockerapi.pull(api, image)
    except Exception as exc:
        raise SandboxError(f"image {image!r} is not available: {dockerapi.short(exc)}") from None
