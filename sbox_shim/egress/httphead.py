"""The few HTTP/1.1 request heads the egress proxy accepts, parsed strictly; and its replies.

Pure. Anything unusual (folded headers, bare CR/LF, userinfo in a URL, a host that is neither a
name nor an address) is refused rather than interpreted, so what the proxy checks is what the
server will see.
"""
from __future__ import annotations

import re

from sbox_shim.egress.value import Value

_AUTHORITY_HOST = re.compile(r"[A-Za-z0-9._:%-]{1,255}")
_PORT = re.compile(r"[0-9]{1,5}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_START = re.compile(rb"[A-Z]{3,16} [!-~]")
_HOP_BY_HOP = frozenset(("host", "connection", "keep-alive", "te", "upgrade", "trailer"))


class Request(Value):
    __slots__ = ("method", "target", "version", "headers")
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def __init__(self, method: str, target: str, version: str,
                 headers: tuple[tuple[str, str], ...]) -> None:
        self._init(method=method, target=target, version=version, headers=headers)


class AbsoluteURL(Value):
    __slots__ = ("authority", "host", "port", "path")
    authority: str  # as written, for the Host header
    host: str
    port: int
    path: str  # origin-form: path and query

    def __init__(self, authority: str, host: str, port: int, path: str) -> None:
        self._init(authority=authority, host=host, port=port, path=path)


def parse_request_head(head: bytes) -> Request | None:
    """The request in `head` (which ends with CRLF CRLF), or None if it is not plain HTTP/1.x."""
    request_line, *header_lines = head.decode("latin-1")[:-4].split("\r\n")
    if any(c in line for line in (request_line, *header_lines) for c in "\n\r\0"):
        return None
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        return None
    if parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            return None  # this includes obsolete line folding
        headers.append((name, value.strip(" \t")))
    return Request(parts[0], parts[1], parts[2], tuple(headers))


def split_authority(authority: str, *, default_port: int | None) -> tuple[str, int] | None:
    """`host[:port]` or `[v6][:port]` as (host, port), or None if it is not plain and valid."""
    port_text: str | None
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = authority.partition(":")
        port_text = port_text if sep else None
    if not _AUTHORITY_HOST.fullmatch(host):
        return None
    if port_text is None:
        return None if default_port is None else (host, default_port)
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def split_absolute_url(target: str) -> AbsoluteURL | None:
    """`http://host[:port]/path?query` (the absolute form a proxy receives), or None."""
    if target[:7].lower() != "http://":
        return None
    rest = target[7:]
    cut = min([rest.index(c) for c in "/?#" if c in rest] or [len(rest)])
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    parsed = split_authority(authority, default_port=80)
    if parsed is None:
        return None
    if not path.startswith("/"):
        path = "/" + path
    return AbsoluteURL(authority, parsed[0], parsed[1], path)


def origin_form(request: Request, url: AbsoluteURL) -> bytes:
    """The head to send the origin: origin-form target, our Host, no Proxy-* or hop-by-hop."""
    hop = set(_HOP_BY_HOP)
    for name, value in request.headers:
        if name.lower() == "connection":
            hop.update(token.strip().lower() for token in value.split(","))
    lines = [f"{request.method} {url.path} {request.version}", f"Host: {url.authority}"]
    lines += [
        f"{name}: {value}" for name, value in request.headers
        if not name.lower().startswith("proxy-") and name.lower() not in hop
    ]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def looks_like_request(data: bytes) -> bool:
    """Whether `data` starts like an HTTP/1 request line (`GET /...`), even cut short."""
    return _REQUEST_START.match(data) is not None


def body_length(request: Request) -> int | None:
    """How many bytes of body follow the head: its one Content-Length, or 0 if it has none.
    None for a body framed otherwise (Transfer-Encoding) or ambiguously (two lengths, a sign)."""
    lengths = [value for name, value in request.headers if name.lower() == "content-length"]
    if any(name.lower() == "transfer-encoding" for name, _ in request.headers):
        return None
    if not lengths:
        return 0
    if len(set(lengths)) != 1 or not re.fullmatch(r"[0-9]{1,18}", lengths[0]):
        return None
    return int(lengths[0])


def response(status: int, phrase: str, body: str = "") -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n"
    )
    return head.encode() + data
