"""The names an offline phase tried to reach: a DNS responder on the sandbox's own loopback that
answers every question with REFUSED and remembers it.

An install script that downloads (a prebuilt binary, headers) looks its host up first. In an
offline sandbox that lookup used to fail with nothing kept of it, and all sbox could say was that
scripts run offline. The sandbox's resolv.conf names 127.0.0.1 when its network is off
(layout.etc_files). Before the phase's command runs, sbox makes a UDP socket on port 53 there
from the host, answers each query at once with REFUSED (the lookup fails as fast as it did, with
the same "try again" error), and keeps the name. When the phase fails, the runner names what it
tried to reach. The socket is made by a thread that enters the sandbox's network namespace when
sbox is root (egress/netns.py, as the proxy's listeners are; bwrap, or a docker container's init),
and otherwise by a child that enters the user namespace bwrap made first (egress/userns.py). A
docker container run by a root daemon for sbox as an ordinary user cannot be entered: there the
query meets a closed port and fails at once, as before, and the hint alone is printed.

What the sandbox sends here is hostile: the parser reads a bounded header and question, never
follows a compression pointer, and keeps at most MAX_NAMES names of at most 253 host-name
characters; anything else is dropped unanswered.
"""
from __future__ import annotations

import socket
import threading

from sbox_shim.egress import netns, userns

MAX_NAMES = 32
MAX_PACKET = 512
REFUSED = 5
QTYPES = {1: "A", 28: "AAAA"}
HOSTNAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Lookups:
    """Start with `listen(pid)` (the shape of a backend's `egress` argument), end with `stop()`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.heard = False  # the socket was made: every lookup of the sandbox reaches it

    def listen(self, pid: int) -> str:
        """Answer the sandbox's lookups from now on. Always "": a sandbox whose lookups cannot be
        heard still runs, offline as before, only without the names."""
        try:
            if netns.usable():  # root: a thread of sbox enters the sandbox's network namespace
                self._sock = netns.made_in(pid, [_udp_53])[0]
            else:  # an ordinary user: a child enters the sandbox's user namespace first (bwrap's)
                self._sock = socket.socket(fileno=userns.made_in(pid, [_udp_53])[0].detach())
        except OSError:
            return ""
        self.heard = True
        self._thread = threading.Thread(target=self._answer, args=(self._sock,), name="sbox-lookups", daemon=True)
        self._thread.start()
        return ""

    def stop(self) -> list[str]:
        """Stop answering; the names looked up, in order, each once."""
        if self._sock is not None:
            self._stopping = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's recvfrom
            except OSError:
                pass
            if self._thread is not None:
                self._thread.join(1.0)
            self._sock.close()
            self._sock = None
        return list(self.names)

    def _answer(self, sock: socket.socket) -> None:
        while True:
            try:
                packet, peer = sock.recvfrom(MAX_PACKET)
            except OSError:
                return
            if not packet:  # shut down by `stop`, or an empty datagram from the sandbox
                if self._stopping:
                    return
                continue
            parsed = question(packet)
            if parsed is None:
                continue
            name, end = parsed
            if name and name not in self.names and len(self.names) < MAX_NAMES:
                self.names.append(name)
            try:
                sock.sendto(refusal(packet, end), peer)
            except OSError:
                pass


def _udp_53() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except BaseException:
        sock.close()
        raise
    return sock


def question(packet: bytes) -> tuple[str, int] | None:
    """(the first question's name, where the question ends) of a standard query; None for
    anything else (an answer, another opcode, no question, a compressed or malformed name)."""
    if len(packet) < 12 or packet[2] & 0x80 or (packet[2] >> 3) & 0x0F or int.from_bytes(packet[4:6], "big") < 1:
        return None
    labels: list[str] = []
    at = 12
    while True:
        if at >= len(packet):
            return None
        size = packet[at]
        at += 1
        if size == 0:
            break
        if size > 63 or at + size > len(packet):
            return None  # a pointer (0xC0) or a label past the end
        label = packet[at:at + size]
        if not all(b in HOSTNAME_BYTES for b in label):
            return None  # not a host name's: nothing to print in sbox's line
        labels.append(label.decode("ascii").lower())
        at += size
    if at + 4 > len(packet):
        return None
    name = ".".join(labels)
    return (name, at + 4) if len(name) <= 253 else None


def refusal(query: bytes, end: int) -> bytes:
    """The answer REFUSED to `query`, whose question ends at `end`: same id and question, the
    recursion-desired bit kept."""
    flags = bytes((0x80 | (query[2] & 0x01), REFUSED))
    return query[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
