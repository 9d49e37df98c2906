"""The summary of refused attempts that sbox prints on stderr after a run."""
from __future__ import annotations

from sbox_shim.report import denial_summary


def test_what_a_tunnel_carried_is_said_in_words() -> None:
    denials = [
        {"kind": "sni", "host": "registry.test", "port": 443, "reason": "plain-http", "hint": ""},
        {"kind": "sni", "host": "registry.test", "port": 443, "reason": "plain-http", "hint": ""},
        {"kind": "sni", "host": "registry.test", "port": 443, "reason": "not-tls", "hint": ""},
    ]
    [line] = denial_summary(denials, None)
    assert line == ("sbox: blocked 3 connection attempt(s): "
                    "registry.test:443 (plain HTTP inside CONNECT refused, x2), "
                    "registry.test:443 (not TLS inside CONNECT: refused)")


def test_where_a_connection_went_keeps_its_reason_and_hint() -> None:
    denials = [{"kind": "connect", "host": "evil.test", "port": 443, "reason": "not-allowlisted",
                "hint": 'add "evil.test" to network_allow'}]
    assert denial_summary(denials, "/log.json") == [
        "sbox: blocked 1 connection attempt(s): evil.test:443 (not-allowlisted)",
        'sbox: to admit one, add "evil.test" to network_allow; log: /log.json',
    ]
