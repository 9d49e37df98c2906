"""Read the server name (SNI) out of the first bytes a client sends through a tunnel.

Pure. The caller peeks at what the client sends after CONNECT and calls
`parse_client_hello_sni` each time more bytes arrive, until it gets something other than
`Peek.INCOMPLETE`:

- `Peek.NOT_TLS`: the bytes do not start a TLS record (plain HTTP, SSH, ...);
- `Peek.MALFORMED`: a TLS handshake record, but not a ClientHello we can read with confidence;
- `None`: a well-formed ClientHello without a host_name;
- a `str`: the host_name the client asks for.

A ClientHello split over several TLS records is reassembled. Anything ambiguous (two names, a
name that is not ASCII, lengths that do not add up) is MALFORMED rather than guessed at.
"""
from __future__ import annotations

import enum

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Literal, Union

CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXTENSION_SERVER_NAME = 0x0000
NAME_TYPE_HOST_NAME = 0x00
MAX_RECORD = 1 << 14
MAX_HELLO = 1 << 16  # real ClientHellos are a few KiB; refuse to buffer more than this


class Peek(enum.Enum):
    NOT_TLS = "not-tls"
    INCOMPLETE = "incomplete"
    MALFORMED = "malformed"


if TYPE_CHECKING:
    PeekResult = Union[str, None, Literal[Peek.NOT_TLS, Peek.INCOMPLETE, Peek.MALFORMED]]


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Malformed
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)


def _handshake_message(data: bytes) -> bytes | Peek:
    """The first handshake message, reassembled from the leading TLS records."""
    payload = b""
    pos = 0
    while True:
        if len(payload) >= 4:
            if payload[0] != HANDSHAKE_CLIENT_HELLO:
                return Peek.MALFORMED
            length = int.from_bytes(payload[1:4], "big")
            if length > MAX_HELLO:
                return Peek.MALFORMED
            if len(payload) >= 4 + length:
                return payload[:4 + length]
        header = data[pos:pos + 5]
        if header[:1] and header[0] != CONTENT_HANDSHAKE:
            return Peek.NOT_TLS if pos == 0 else Peek.MALFORMED
        if header[1:2] and header[1] != 0x03:  # TLS record versions are all 3.x
            return Peek.MALFORMED
        if len(header) < 5:
            return Peek.INCOMPLETE
        record_length = int.from_bytes(header[3:5], "big")
        if record_length == 0 or record_length > MAX_RECORD:
            return Peek.MALFORMED
        fragment = data[pos + 5:pos + 5 + record_length]
        if len(fragment) < record_length:
            return Peek.INCOMPLETE
        payload += fragment
        pos += 5 + record_length


def _server_name(extension: _Reader) -> str | None:
    names = extension.vector(2)
    if not extension.done:
        raise _Malformed
    host_names = []
    while not names.done:
        name_type = names.number(1)
        name = names.vector(2).data
        if name_type == NAME_TYPE_HOST_NAME:
            host_names.append(name)
    if len(host_names) > 1:
        raise _Malformed
    if not host_names:
        return None
    try:
        host = host_names[0].decode("ascii")
    except UnicodeDecodeError:
        raise _Malformed from None
    if not host or not host.isprintable():
        raise _Malformed
    return host


def _parse_client_hello(body: _Reader) -> str | None:
    body.take(2 + 32)  # legacy_version, random
    body.vector(1)  # legacy_session_id
    body.vector(2)  # cipher_suites
    body.vector(1)  # legacy_compression_methods
    if body.done:
        return None  # no extensions at all
    extensions = body.vector(2)
    if not body.done:
        raise _Malformed
    seen = set()
    host: str | None = None
    while not extensions.done:
        ext_type = extensions.number(2)
        ext_data = extensions.vector(2)
        if ext_type in seen:
            raise _Malformed
        seen.add(ext_type)
        if ext_type == EXTENSION_SERVER_NAME:
            host = _server_name(ext_data)
    return host


def parse_client_hello_sni(data: bytes) -> PeekResult:
    message = _handshake_message(data)
    if isinstance(message, Peek):
        return message
    try:
        return _parse_client_hello(_Reader(message[4:]))
    except _Malformed:
        return Peek.MALFORMED
