"""A hostile install script tries every way out; under the proxy allowlist each one is refused.

The scenario runs in a network namespace this test creates, where every target the script aims at
has a listener on a local address (the metadata address included), reachable from where the
egress proxy runs: a refusal is a refusal, not a missing route.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("egress_scenario.py")
VIA_PROXY = ("ipv4-proxy", "ipv6-proxy", "v4mapped-proxy", "decimal-ip-proxy", "metadata-proxy",
             "dns-tcp-proxy", "doh-proxy", "doh-by-name-proxy", "host-loopback-proxy", "localhost-proxy",
             "unlisted-name-proxy", "sni-mismatch-proxy")
DIRECT = ("ipv4-direct", "ipv6-direct", "metadata-direct", "dns-udp-direct", "dns-tcp-direct", "doh-direct",
          "host-loopback-direct", "unlisted-name-direct")


@pytest.fixture(scope="module")
def netns_ok() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to create the test's network namespace")


def run_scenario(backend: str, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["unshare", "--net", "--", sys.executable, str(SCENARIO), backend, str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_escape_is_refused_and_reported(backend: str, netns_ok: None, tmp_path: Path) -> None:
    r = run_scenario(backend, tmp_path)
    # The allowed registries served real installs through the proxy, in one phase.
    assert r["npm"]["code"] == 0, r["npm"]["stderr"]
    assert {"left-pad-ish", "hostile-dep"} <= set(r["npm"]["installed"])
    assert r["pip"]["code"] == 0 and r["pip"]["installed"], r["pip"]["stderr"]
    # The postinstall ran every attack, and none got a byte out.
    attacks = r["attacks"]
    assert attacks is not None, r["npm"]["stderr"]
    assert set(VIA_PROXY + DIRECT) <= set(attacks)
    for name in VIA_PROXY:
        assert attacks[name].startswith("refused"), (name, attacks[name])
    for name in DIRECT:
        assert attacks[name].startswith("error"), (name, attacks[name])
    for name, seen in r["listeners"].items():
        assert seen["bytes"] == 0, (name, seen)
        if name != "sni":  # the proxy never even connects for these
            assert seen["hits"] == 0, (name, seen)
    assert r["udp"]["datagrams"] == 0
    # A dependency given as an http://IP/ tarball is refused: the install fails, the host saw nothing.
    assert r["tarball"]["code"] != 0
    # The report lists each refused attempt with its reason.
    reasons = {(d["host"], d["port"]): d["reason"] for d in r["denials"]}
    assert reasons[("10.77.0.80", 9000)] == "ip-literal"
    assert reasons[("fd77::80", 9000)] == "ip-literal"
    assert reasons[("169.254.169.254", 80)] == "ip-literal"
    assert reasons[("10.77.0.53", 53)] == "ip-literal"
    assert reasons[("10.77.0.54", 443)] == "ip-literal"
    assert reasons[("127.0.0.1", r_port(r))] == "ip-literal"
    assert reasons[("evil.sbox.test", 443)] == "not-allowlisted"
    assert reasons[("dns.example", 443)] == "not-allowlisted"
    assert any(d["kind"] == "sni" and d["host"] == "registry.sbox.test" for d in r["denials"])


def r_port(r: dict) -> int:  # type: ignore[type-arg]
    loop = [d["port"] for d in r["denials"] if d["host"] == "127.0.0.1"]
    assert loop, r["denials"]
    return int(loop[0])


PLAIN_SCENARIO = Path(__file__).with_name("plain_connect_scenario.py")


def test_plain_http_inside_connect_reaches_no_tenant(backend: str, netns_ok: None,
                                                      tmp_path: Path) -> None:
    out = subprocess.run(["unshare", "--net", "--", sys.executable, str(PLAIN_SCENARIO), backend,
                          str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["code"] == 0, r["stderr"]
    seen = json.loads(r["stdout"].strip().splitlines()[-1])
    # The attack: the tunnel opened, then closed on the plain request; the front end got nothing.
    assert seen["plain"].startswith("HTTP/1.1 200 ") and seen["plain"].endswith("then b''"), seen
    assert not r["tenant_through_sbox"]
    # The same tunnel with TLS for the allowed name does reach it (the path works) ...
    assert r["sni_through_sbox"], seen
    # ... and so does the plain request when sent directly, outside sbox (the listener is live).
    assert r["tenant_direct"]
    assert [(d["host"], d["reason"]) for d in r["denials"]] == [("registry.sbox.test", "plain-http")]
    assert "registry.sbox.test:443 (plain HTTP inside CONNECT refused)" in r["stderr"]
