"""Which (host, port) the egress proxy lets out, and to which addresses.

Pure: no I/O, no DNS. Names were resolved on the host when the plan was made; a request is
allowed only for a pinned name, on an allowed port, and only to the pinned addresses that are
public (unless the user named the host explicitly, e.g. a registry on localhost).
"""
from __future__ import annotations

import ipaddress
import re
import socket

from sbox_shim.egress.value import Value

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Mapping, Union

    IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

DEFAULT_PORTS = (80, 443)

# Our own table rather than `ipaddress`'s is_private/is_global, whose lists change between
# Python versions: the same plan must give the same answers everywhere. It blocks what leads
# inside (loopback, private networks, link-local and metadata services); the documentation and
# benchmark ranges (192.0.2/24, 203.0.113/24, 198.18/15, 2001:db8::/32) are unroutable on the
# internet but are where fake-IP resolvers and some networks put real registries, so they pass.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT; 100.100.100.200 is Alibaba's metadata service
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local; 169.254.169.254 is the cloud metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # unspecified, loopback, IPv4-compatible
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "fc00::/7",  # ULA; fd00:ec2::254 is AWS's IPv6 metadata service
        "fe80::/10",  # link-local
        "fec0::/10",  # old site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,62}(\.[a-z0-9_][a-z0-9_-]{0,62})*")


class EgressPolicy(Value):
    __slots__ = ("pins", "ports", "explicit", "forwards")
    # allowed hostname (lowercase, no trailing dot) -> addresses pinned on the host at plan time
    pins: Mapping[str, tuple[str, ...]]
    # allowed ports per name; names absent here get DEFAULT_PORTS
    ports: Mapping[str, tuple[int, ...]]
    # names the user listed literally: only these may map to loopback/private/metadata addresses
    explicit: frozenset[str]
    # (name, port) that the sandbox's bridge forwards (network.py's `forwards`): tunnels to them
    # may carry bytes other than TLS. None: the names listed literally with that port, as
    # network.py picks them. Either way only while the address connected to is loopback.
    forwards: frozenset[tuple[str, int]] | None

    def __init__(self, pins: Mapping[str, tuple[str, ...]],
                 ports: Mapping[str, tuple[int, ...]] | None = None,
                 explicit: frozenset[str] = frozenset(),
                 forwards: frozenset[tuple[str, int]] | None = None) -> None:
        self._init(pins=pins, ports={} if ports is None else ports, explicit=explicit,
                   forwards=forwards)

    def __hash__(self) -> int:  # (its mappings are not hashable, as a dataclass's would not be)
        raise TypeError("unhashable type: 'EgressPolicy'")


class Decision(Value):
    __slots__ = ("allowed", "addresses", "reason", "hint")
    allowed: bool
    addresses: tuple[str, ...]  # where to connect, in order
    reason: str  # ok | not-allowlisted | ip-literal | port | private-address | unresolved
    hint: str  # what the user can do about it, or ""

    def __init__(self, allowed: bool, addresses: tuple[str, ...], reason: str, hint: str) -> None:
        self._init(allowed=allowed, addresses=addresses, reason=reason, hint=hint)


def normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith("."):
        host = host[:-1]
    return host


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` denotes if anything would read it as one (`127.1`, `0x7f.1`, ...)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or NAT64 address leads to."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_private(ip: IPAddress) -> bool:
    """Loopback, private, link-local, CGNAT, metadata, multicast, unspecified (or v4 inside v6)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_private(ip.ipv4_mapped)  # what a dual-stack socket really connects to
        embedded = _embedded_ipv4(ip)
        if embedded is not None and is_private(embedded):
            return True
        ip = ipaddress.IPv6Address(ip.packed)  # drop a %scope before the network checks
    return any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version)


def may_carry_plain(policy: EgressPolicy, host: str, port: int, address: str) -> bool:
    """Whether a tunnel to (host, port), connected to `address`, may carry bytes other than TLS.

    Elsewhere the SNI check is what keeps a tunnel on the name it was allowed for: plain HTTP
    inside it would pick any site behind the same address by its Host header (a shared CDN).
    A loopback registry the user listed with its port (the bridge forwards it to plain-HTTP
    tools) serves no one else, and is reachable only because the user named it.
    """
    host = normalize_host(host)
    if policy.forwards is not None:
        listed = (host, port) in policy.forwards
    else:
        listed = host in policy.explicit and port in policy.ports.get(host, ())
    ip = parse_ip_literal(normalize_host(address))
    if ip is None or not listed:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _show(host: str) -> str:
    """`host` quoted for a hint, or "" when it is not a plausible name or address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            return ""
    return f'"{host}"'


def _refuse(reason: str, hint: str) -> Decision:
    return Decision(allowed=False, addresses=(), reason=reason, hint=hint)


def decide(policy: EgressPolicy, host: str, port: int) -> Decision:
    host = normalize_host(host)
    shown = _show(host)
    explicit = host in policy.explicit

    if parse_ip_literal(host) is not None and not (explicit and host in policy.pins):
        hint = f"connect by name, or list {shown} in network_allow" if shown else ""
        return _refuse("ip-literal", hint)
    if host not in policy.pins:
        return _refuse("not-allowlisted", f"add {shown} to network_allow" if shown else "")

    allowed_ports = policy.ports.get(host, DEFAULT_PORTS)
    if port not in allowed_ports:
        ports = ", ".join(str(p) for p in allowed_ports)
        return _refuse("port", f"port {port} is not allowed for {shown} (allowed: {ports})")

    pinned = [ip for ip in map(parse_ip_literal, policy.pins[host]) if ip is not None]
    if not pinned:
        return _refuse("unresolved", f"{shown} did not resolve when the plan was made")

    addresses = tuple(str(ip) for ip in pinned if explicit or not is_private(ip))
    if not addresses:
        hint = (
            f"{shown} resolves only to private addresses; "
            f"list it literally in network_allow to allow them (a built-in install admits them only "
            f"for a registry named in your own ~/.npmrc, pip.conf or environment, never a project file's)"
        )
        return _refuse("private-address", hint)
    return Decision(allowed=True, addresses=addresses, reason="ok", hint="")
