"""Plain HTTP inside a CONNECT to an allowed name, run in a network namespace the test creates.

Usage: python plain_connect_scenario.py BACKEND WORKDIR  -> prints one JSON object on the last line.

registry.sbox.test is pinned (`hosts:`) to an address of a veth interface in this namespace, where
a canary listener on port 443 stands for a shared CDN front end: whatever reaches it could pick any
tenant by its Host header. A script inside sbox CONNECTs to the allowed name through the proxy and
sends plain HTTP for another tenant, then (a live control of the path) a TLS ClientHello for the
allowed name; this script then sends the same plain request straight to the listener, outside sbox.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egress_scenario import ADDRESSES, network  # noqa: E402
from support.listener import CanaryListener  # noqa: E402
from support.trust import trust  # noqa: E402

TENANT = b"other-tenant.sbox.test"
PLAIN = b"GET /steal HTTP/1.1\r\nHost: " + TENANT + b"\r\n\r\n"

ATTACK = r'''
import json, os, socket, ssl, time

proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
host, _, port = proxy.rpartition("/")[2].rpartition(":")


def tunnel(first):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"CONNECT registry.sbox.test:443 HTTP/1.1\r\nHost: registry.sbox.test:443\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            return "closed before the answer"
        head += chunk
    s.sendall(first)
    time.sleep(0.5)
    try:
        rest = s.recv(4096)
    except OSError as e:
        rest = repr(e).encode()
    s.close()
    return head.split(b"\r\n")[0].decode() + " | then " + repr(rest)


def hello(name):
    out = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


print(json.dumps({"plain": tunnel(%(plain)r), "tls": tunnel(hello("registry.sbox.test"))}))
'''


def main(backend: str, workdir: str) -> dict[str, object]:
    network()
    work = Path(workdir)
    env = dict(os.environ, SBOX_STATE_DIR=str(work / "state"), SBOX_CACHE_DIR=str(work / "cache"),
               HOME=str(work / "home"), SBOX_QUIET="1")
    (work / "home").mkdir(parents=True, exist_ok=True)
    cdn = CanaryListener(ADDRESSES["npm"], 443)
    project = work / "project"
    project.mkdir()
    (project / "attack.py").write_text(ATTACK % {"plain": PLAIN})
    config = project / "sbox.yaml"
    config.write_text(f"""\
version: 1
backend: {backend}
hosts:
  registry.sbox.test: [{ADDRESSES['npm']}]
profiles:
  default:
    network: on
    network_allow: [registry.sbox.test]
""")
    trust(config, env=env)
    sbox = os.path.join(os.path.dirname(sys.executable), "sbox")
    run = subprocess.run([sbox, "run", "--", "python3", "attack.py"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    through_sbox = cdn.received

    with socket.create_connection((ADDRESSES["npm"], 443), timeout=5) as direct:
        direct.sendall(PLAIN)  # the live control: outside sbox, the same bytes get there
    cdn.wait_for(data=PLAIN)
    denials = []
    for path in sorted(glob.glob(str(work / "state" / "denials" / "*.json"))):
        denials += json.loads(Path(path).read_text())["denials"]
    result = {
        "code": run.returncode, "stdout": run.stdout[-2000:], "stderr": run.stderr[-3000:],
        "hits": cdn.hits,
        "tenant_through_sbox": TENANT in through_sbox,
        "sni_through_sbox": b"registry.sbox.test" in through_sbox,
        "tenant_direct": PLAIN in cdn.received[len(through_sbox):],
        "denials": denials,
    }
    cdn.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
