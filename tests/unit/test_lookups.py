"""The offline phase's DNS responder (egress/lookups.py): what it keeps of a query and what it
answers, over a real UDP socket on loopback; hostile packets are dropped unanswered."""
from __future__ import annotations

import socket
import struct
import threading

from sbox_shim.egress.lookups import MAX_NAMES, Lookups, question, refusal


def query(name: str, qtype: int = 1, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    body = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", ident, flags, 1, 0, 0, 0) + body + struct.pack(">HH", qtype, 1)


def test_a_query_gives_its_name_lowercased_and_where_its_question_ends() -> None:
    packet = query("Prebuilt.Example.COM", qtype=28)
    assert question(packet) == ("prebuilt.example.com", len(packet))


def test_what_is_not_a_plain_query_is_dropped() -> None:
    good = query("a.example")
    assert question(good[:11]) is None  # shorter than a header
    assert question(good[:-3]) is None  # the question's type and class cut off
    assert question(query("a.example", flags=0x8100)) is None  # an answer, not a query
    assert question(query("a.example", flags=0x2100)) is None  # another opcode (update)
    assert question(good[:4] + b"\0\0" + good[6:]) is None  # no question
    assert question(good[:12] + b"\xc0\x0c" + good[-4:]) is None  # a compression pointer
    assert question(query("a b.example")) is None  # not printable
    assert question(query("fake);record:/root/x.example")) is None  # not a host name's characters
    assert question(query("a\x1b[31m.example")) is None
    assert question(query("x" * 63 + "." + ".".join(["y" * 63] * 3))) is None  # longer than 253


def test_the_refusal_keeps_the_id_the_question_and_recursion_desired() -> None:
    packet = query("Host.Example", ident=0xBEEF)
    answer = refusal(packet, len(packet))
    ident, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", answer[:12])
    assert (ident, flags & 0x8000, flags & 0x0100, flags & 0x0F) == (0xBEEF, 0x8000, 0x0100, 5)
    assert (qd, an, ns, ar) == (1, 0, 0, 0) and answer[12:] == packet[12:]


def test_the_responder_answers_keeps_each_name_once_and_stops() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    lookups = Lookups()
    lookups._sock = server
    lookups._thread = threading.Thread(target=lookups._answer, args=(server,), daemon=True)
    lookups._thread.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.connect(server.getsockname())
    client.send(b"\xff" * 40)  # garbage: no answer, and the responder goes on
    client.send(b"")  # an empty datagram: not the end either
    for name in ("one.example", "two.example", "one.example", *(f"n{i}.example" for i in range(40))):
        client.send(query(name))
        assert client.recv(512)[3] & 0x0F == 5
    assert lookups.stop()[:3] == ["one.example", "two.example", "n0.example"]
    assert len(lookups.names) == MAX_NAMES and not lookups._thread.is_alive()
    client.close()
