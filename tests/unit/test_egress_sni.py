from __future__ import annotations

import ssl

import pytest

from sbox_shim.egress.sni import parse_client_hello_sni
from sbox_shim.egress.sni import Peek


def real_client_hello(server_hostname: str | None) -> bytes:
    """The bytes Python's own TLS client sends first, captured through a MemoryBIO."""
    context = ssl.create_default_context()
    if server_hostname is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def record(payload: bytes, content_type: int = 0x16, version: bytes = b"\x03\x01") -> bytes:
    return bytes([content_type]) + version + u16(len(payload)) + payload


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def server_name(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + u16(len(n)) + n for n in names)
    return extension(0, u16(len(entries)) + entries)


def handshake(extensions: bytes | None, msg_type: int = 1, skew: int = 0) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + u16(2) + b"\x13\x01" + b"\x01\x00"
    if extensions is not None:
        body += u16(len(extensions) + skew) + extensions
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


ALPN = extension(16, u16(3) + b"\x02h2")


def test_real_client_hello_with_sni() -> None:
    assert parse_client_hello_sni(real_client_hello("Registry.Test")) == "Registry.Test"


@pytest.mark.parametrize("server_hostname", (None, "127.0.0.1", "::1"))
def test_real_client_hello_without_sni(server_hostname: str | None) -> None:
    assert parse_client_hello_sni(real_client_hello(server_hostname)) is None


def test_every_prefix_is_incomplete() -> None:
    hello = real_client_hello("registry.test")
    assert {parse_client_hello_sni(hello[:n]) for n in range(len(hello))} == {Peek.INCOMPLETE}


def test_bytes_after_the_hello_are_ignored() -> None:
    hello = real_client_hello("registry.test")
    assert parse_client_hello_sni(hello + record(b"\x17" * 40, 0x17)) == "registry.test"


def test_hello_split_over_records() -> None:
    message = handshake(ALPN + server_name(b"registry.test"))
    data = record(message[:7]) + record(message[7:30]) + record(message[30:])
    assert parse_client_hello_sni(data) == "registry.test"
    assert {parse_client_hello_sni(data[:n]) for n in range(len(data))} == {Peek.INCOMPLETE}


@pytest.mark.parametrize(
    ("extensions", "expected"),
    (
        (None, None),  # no extensions block at all
        (b"", None),
        (ALPN, None),
        (ALPN + server_name(b"a.test"), "a.test"),
        (server_name(b"a.test", name_type=7), None),  # not a host_name
    ),
)
def test_handmade_hellos(extensions: bytes | None, expected: str | None) -> None:
    assert parse_client_hello_sni(record(handshake(extensions))) == expected


@pytest.mark.parametrize(
    "data",
    (
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x00",
        b"\x80\x2e\x01\x03\x01",  # SSLv2-style hello: cannot carry SNI
        record(b"\x00", content_type=0x17),
    ),
)
def test_not_tls(data: bytes) -> None:
    assert parse_client_hello_sni(data) is Peek.NOT_TLS


def test_empty_is_incomplete() -> None:
    assert parse_client_hello_sni(b"") is Peek.INCOMPLETE
    assert parse_client_hello_sni(b"\x16") is Peek.INCOMPLETE


GOOD = handshake(server_name(b"a.test"))


@pytest.mark.parametrize(
    "data",
    (
        record(handshake(server_name(b"a.test"), msg_type=2)),  # ServerHello
        record(GOOD, version=b"\x02\x00"),
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x40\x01" + bytes(0x4001),  # longer than TLS allows
        record(GOOD[:10]) + record(GOOD[10:], content_type=0x17),  # interleaved non-handshake
        record(handshake(server_name(b"a.test", b"b.test"))),  # two host names
        record(handshake(server_name(b"a.test") + server_name(b"b.test"))),  # two extensions
        record(handshake(server_name(b"caf\xc3\xa9.test"))),  # not ASCII
        record(handshake(server_name(b"a.test\n"))),
        record(handshake(server_name(b""))),
        record(handshake(server_name(b"a.test") + b"\x00")),  # trailing garbage in extensions
        record(handshake(server_name(b"a.test"), skew=3)),  # lengths do not add up
        record(handshake(server_name(b"a.test"), skew=-3)),
        record(b"\x01\xff\xff\xff" + bytes(100)),  # claims a 16 MiB hello
    ),
)
def test_malformed(data: bytes) -> None:
    assert parse_client_hello_sni(data) is Peek.MALFORMED
