"""A socket made in a sandbox's network namespace by a child that enters the user namespace owning
it (egress/userns.py): with real namespaces (unshare), never sbox's own or one it does not hold."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Iterator

import pytest

from sbox_shim.egress import userns

pytestmark = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")),
                                reason="unshare, nsenter (util-linux) and ip (iproute2) are not installed")


def _udp_53() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    return sock


def _waiting(*options: str, prefix: tuple[str, ...] = ()) -> Iterator[int]:
    """The pid of a `sleep` in the namespaces `unshare options` makes, once it is in them."""
    up = "ip link set lo up && " if "--map-root-user" in options else ""  # loopback up, as bwrap does
    proc = subprocess.Popen([*prefix, "unshare", *options, "sh", "-c", f"{up}exec sleep 60"],
                            stderr=subprocess.PIPE)
    try:
        ours = os.stat("/proc/self/ns/net").st_ino
        for _ in range(500):
            try:
                if os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep") \
                        and os.stat(f"/proc/{proc.pid}/ns/net").st_ino != ours:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.skip(f"unshare {' '.join(options)} is not allowed here: {proc.stderr.read()!r}"
                            if proc.stderr else "unshare failed")
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def child_userns() -> Iterator[int]:
    yield from _waiting("--user", "--map-root-user", "--net")


def test_a_socket_made_in_a_child_user_namespace_hears_what_is_sent_in_there(child_userns: int) -> None:
    sock = userns.made_in(child_userns, [_udp_53])[0]
    try:
        assert sock.getsockname() == ("127.0.0.1", 53) and sock.type == socket.SOCK_DGRAM
        assert not os.get_inheritable(sock.fileno())
        send = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".sendto(b'inside', ('127.0.0.1', 53))")
        subprocess.run(["nsenter", "-t", str(child_userns), "-U", "-n", "--preserve-credentials",
                        "/usr/bin/python3", "-I", "-c", send], check=True, timeout=30)
        sock.settimeout(10)
        assert sock.recvfrom(64)[0] == b"inside"
    finally:
        sock.close()


def test_nothing_is_made_in_sbox_s_own_namespaces() -> None:
    with pytest.raises(OSError, match="own network namespace"):
        userns.made_in(os.getpid(), [_udp_53])


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace without a user namespace takes root")
def test_nothing_is_made_in_a_network_namespace_of_sbox_s_own_user_namespace() -> None:
    for pid in _waiting("--net"):
        with pytest.raises(OSError, match="sbox's own user namespace"):
            userns.made_in(pid, [_udp_53])


def test_a_maker_that_fails_leaves_nothing_open(child_userns: int) -> None:
    def fails() -> socket.socket:
        raise OSError("no")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="cannot make a socket"):
        userns.made_in(child_userns, [_udp_53, fails])
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="making another user's namespace takes root and setpriv")
def test_nothing_is_made_in_another_user_s_namespace() -> None:
    """One made by nobody: root could enter it, but it is no sandbox sbox started."""
    for pid in _waiting("--user", "--net", prefix=("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")):
        with pytest.raises(OSError, match="made by another user"):
            userns.made_in(pid, [_udp_53])
