from __future__ import annotations


import pytest

from sbox_shim.egress.policy import decide
from sbox_shim.egress.policy import Decision
from sbox_shim.egress.policy import EgressPolicy
from sbox_shim.egress.policy import may_carry_plain

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"

POLICY = EgressPolicy(
    pins={
        "registry.npmjs.org": (PUBLIC_V4, PUBLIC_V6),
        "registry.test": ("127.0.0.1",),
        "mirror.test": ("127.0.0.1",),  # came from a wildcard: not explicit
        "mixed.test": ("10.0.0.5", PUBLIC_V4, "169.254.169.254", "8.8.8.8"),
        "crates.test": (PUBLIC_V4,),
        "gone.test": (),
        "garbage.test": ("not-an-address",),
        "127.0.0.1": ("127.0.0.1",),
        "::1": ("::1",),
        "10.9.9.9": ("10.9.9.9",),  # pinned, but never listed literally
    },
    ports={"registry.test": (4873,), "mirror.test": (443,), "crates.test": (443, 8443)},
    explicit=frozenset(("registry.test", "127.0.0.1", "::1")),
)


@pytest.mark.parametrize(
    ("host", "port", "addresses"),
    (
        ("registry.npmjs.org", 443, (PUBLIC_V4, PUBLIC_V6)),
        ("registry.npmjs.org", 80, (PUBLIC_V4, PUBLIC_V6)),
        ("REGISTRY.npmjs.ORG.", 443, (PUBLIC_V4, PUBLIC_V6)),
        ("registry.test", 4873, ("127.0.0.1",)),  # explicit: loopback is fine
        ("crates.test", 8443, (PUBLIC_V4,)),
        ("mixed.test", 443, (PUBLIC_V4, "8.8.8.8")),  # private ones dropped, order kept
        ("127.0.0.1", 443, ("127.0.0.1",)),  # an address listed literally
        ("[::1]", 443, ("::1",)),
    ),
)
def test_allowed(host: str, port: int, addresses: tuple[str, ...]) -> None:
    assert decide(POLICY, host, port) == Decision(True, addresses, "ok", "")


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    (
        ("evil.example", 443, "not-allowlisted"),
        ("sub.registry.npmjs.org", 443, "not-allowlisted"),  # no implicit subdomains
        ("npmjs.org", 443, "not-allowlisted"),
        ("registry.npmjs.org", 22, "port"),
        ("registry.npmjs.org", 8080, "port"),
        ("registry.npmjs.org", 0, "port"),
        ("registry.test", 443, "port"),  # its own ports replace the defaults
        ("mirror.test", 443, "private-address"),  # wildcard-expanded name on loopback
        ("gone.test", 443, "unresolved"),
        ("garbage.test", 443, "unresolved"),
        ("10.9.9.9", 443, "ip-literal"),  # pinned but not explicit
    ),
)
def test_refused(host: str, port: int, reason: str) -> None:
    decision = decide(POLICY, host, port)
    assert (decision.allowed, decision.addresses, decision.reason) == (False, (), reason)


@pytest.mark.parametrize(
    "host",
    (
        PUBLIC_V4,
        "1.1.1.1",
        "127.0.0.2",
        "127.1",  # inet_aton short forms
        "0x7f.1",
        "2130706433",  # one decimal number
        "0x7f000001",
        "0177.0.0.1",  # octal
        "10.9.9.9.",  # a trailing dot makes no name of it
        "[10.9.9.9]",
        "169.254.169.254",
        "::ffff:127.0.0.1",  # v4-mapped
        "[::ffff:7f00:1]",
        "[::ffff:169.254.169.254]",
        "::1.2.3.4",
        PUBLIC_V6,
        "[0:0:0:0:0:0:0:1]",  # ::1 spelt out: not the literal string that was listed
        "fe80::1%eth0",
        "1.2.3.4 evil.example",  # inet_aton ignores what follows a space
    ),
)
def test_ip_literals_are_refused(host: str) -> None:
    decision = decide(POLICY, host, 443)
    assert (decision.allowed, decision.reason) == (False, "ip-literal")


BLOCKED = (
    "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.1.1", "169.254.169.254", "100.64.0.1", "100.100.100.200", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
    "::", "::1", "fc00::1", "fd12:3456::1", "fd00:ec2::254", "fe80::1", "fe80::1%eth0", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.100.100.200",
    "::ffff:0.0.0.0", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "2002:7f00:1::1",
    "::127.0.0.1", "64:ff9b:1::1",
)
# Unroutable on the internet, but where fake-IP resolvers and some networks put real registries.
DOCUMENTATION = ("192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "2001:db8::1")
PUBLIC = (
    PUBLIC_V4, "1.1.1.1", "172.32.0.1", "100.128.0.1", "169.255.0.1", "11.0.0.1",
    PUBLIC_V6, "2001:4860:4860::8888", "::ffff:93.184.216.34", "2002:5db8:d822::1", *DOCUMENTATION,
)


@pytest.mark.parametrize("address", BLOCKED)
def test_private_addresses_need_an_explicit_name(address: str) -> None:
    pins = {"wild.test": (address,), "named.test": (address,)}
    policy = EgressPolicy(pins=pins, explicit=frozenset(("named.test",)))

    wild = decide(policy, "wild.test", 443)
    assert (wild.allowed, wild.addresses, wild.reason) == (False, (), "private-address")
    assert "network_allow" in wild.hint

    named = decide(policy, "named.test", 443)
    assert named.allowed and len(named.addresses) == 1


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    decision = decide(EgressPolicy(pins={"wild.test": (address,)}), "wild.test", 443)
    assert decision.allowed and decision.reason == "ok"


def test_hints_say_what_to_do() -> None:
    assert decide(POLICY, "Evil.Example.", 443).hint == 'add "evil.example" to network_allow'
    assert "(allowed: 443, 8443)" in decide(POLICY, "crates.test", 80).hint
    assert '"0x7f.1"' in decide(POLICY, "0x7f.1", 443).hint
    assert decide(POLICY, "registry.npmjs.org", 443).hint == ""


@pytest.mark.parametrize(
    "host", ("bad host", "evil\x1b[31m.example", "a/b", "", "é.example", "1.2.3.4 x"),
)
def test_hints_never_echo_junk(host: str) -> None:
    decision = decide(POLICY, host, 443)
    assert not decision.allowed
    assert decision.hint == ""


def test_default_ports_and_empty_policy() -> None:
    policy = EgressPolicy(pins={"a.test": (PUBLIC_V4,)})
    assert [decide(policy, "a.test", p).allowed for p in (80, 443, 8080)] == [True, True, False]
    assert decide(EgressPolicy(pins={}), "a.test", 443).reason == "not-allowlisted"


@pytest.mark.parametrize(
    ("host", "port", "address", "plain"),
    (
        ("registry.test", 4873, "127.0.0.1", True),  # listed with its port, loopback: a forward
        ("REGISTRY.test.", 4873, "::ffff:127.0.0.1", True),
        ("registry.test", 4873, "10.0.0.5", False),  # not loopback: its Host could pick anyone
        ("mirror.test", 443, "127.0.0.1", False),  # from a wildcard, not listed literally
        ("crates.test", 443, PUBLIC_V4, False),
        ("127.0.0.1", 443, "127.0.0.1", False),  # listed without a port: no forward
    ),
)
def test_only_the_bridges_loopback_forwards_may_carry_plain_bytes(
        host: str, port: int, address: str, plain: bool) -> None:
    assert may_carry_plain(POLICY, host, port, address) is plain


def test_forwards_given_explicitly_replace_the_derived_ones() -> None:
    policy = EgressPolicy(pins=POLICY.pins, ports=POLICY.ports, explicit=POLICY.explicit,
                          forwards=frozenset({("127.0.0.1", 443)}))
    assert may_carry_plain(policy, "127.0.0.1", 443, "127.0.0.1")
    assert not may_carry_plain(policy, "registry.test", 4873, "127.0.0.1")
    assert not may_carry_plain(policy, "127.0.0.1", 443, PUBLIC_V4)
