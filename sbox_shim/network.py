"""Turn a profile's network keys into the Plan's Network: validate, expand, resolve."""
from __future__ import annotations

from sbox_shim.plan import Network
from sbox_shim.registries import expand, is_ip as _is_ip, is_known_wildcard, parse_entry

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable, Mapping

    from sbox_shim.resolve import Resolver

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def build_network(
    network: bool,
    allow: Iterable[str],
    enforce: str,
    *,
    static: Mapping[str, tuple[str, ...]] | None = None,
    resolver: Resolver | None = None,
    implied: Iterable[str] = (),
) -> tuple[Network, tuple[str, ...]]:
    """Return the Network and the warnings `sbox plan` should print about it. `implied` entries
    (names from project files) are admitted like the others but are never explicit: the proxy
    refuses them loopback, private, link-local and metadata addresses."""
    implied = tuple(e for e in implied if e not in tuple(allow))
    allow = tuple(allow) + implied
    if not network:
        return Network("off"), ()
    if not allow:
        return Network("open"), ("network: on with no network_allow: the command can reach every host",)
    warnings: list[str] = []
    names: list[str] = []
    listed: set[str] = set()  # names an entry names itself, not only through a wildcard's table
    explicit: list[str] = []
    ports: dict[str, set[int]] = {}
    bare: set[str] = set()
    for raw in allow:
        entry = parse_entry(raw)
        expanded = expand(entry)
        if entry.wildcard and not is_known_wildcard(entry):
            warnings.append(
                f"{entry.pattern}: no built-in table for {entry.host}; only {entry.host} itself is allowed, "
                "its other subdomains stay blocked (list them by name)"
            )
        if not entry.wildcard and raw not in implied:
            explicit.append(entry.host)
        if not entry.wildcard or not is_known_wildcard(entry):
            listed.add(entry.host)
        for name in expanded:
            names.append(name)
            if entry.port is not None:
                ports.setdefault(name, set()).add(entry.port)
            else:
                bare.add(name)
    for name in bare & set(ports):  # `reg` and `reg:8080` both listed: the default ports stay
        ports[name] |= {80, 443}
    from sbox_shim.resolve import resolve_all, system_resolver  # threads and sockets: only here

    literal = {n: (n,) for n in names if _is_ip(n)}
    pins, failures = resolve_all(
        [n for n in names if n not in literal], static={**(static or {})}, resolver=resolver or system_resolver
    )
    pins.update(literal)
    warnings += _unresolved(failures, listed, bool(pins))
    policy = "dns" if enforce == "dns" else "proxy"
    if policy == "dns":
        warnings.append(
            "network_enforce: dns pins allowed names but does not stop a script that connects to a "
            "hard-coded IP address (e.g. 169.254.169.254); use the default proxy enforcement, "
            "network: off, or a two-phase install for that"
        )
    ordered = tuple((n, pins[n]) for n in dict.fromkeys(names) if n in pins)
    forwards = tuple(
        sorted({(n, p) for n, ps in ports.items() for p in ps if _loopback(pins.get(n, ()))})
    )
    net = Network(
        policy=policy,
        patterns=tuple(parse_entry(raw).pattern for raw in allow),
        pins=ordered,
        unresolved=tuple(sorted(failures.items())),
        explicit=tuple(dict.fromkeys(explicit)),
        ports=tuple(sorted((n, tuple(sorted(p))) for n, p in ports.items())),
        forwards=forwards,
    )
    return net, tuple(warnings)


def _unresolved(failures: Mapping[str, str], listed: set[str], any_resolved: bool) -> list[str]:
    """A line for each listed name that did not resolve. Names only a wildcard's built-in table
    added (`*.npmjs.org`: npmjs.org, www.npmjs.org, ...) are quiet when any allowed name resolved
    (the registry in use), else one line for them all."""
    out = [f"{name} did not resolve on the host ({why}); it stays blocked"
           for name, why in failures.items() if name in listed]
    table = [name for name in failures if name not in listed]
    if table and not any_resolved:
        out.append(f"{len(table)} name(s) of the built-in registry tables ({', '.join(table)}) did not resolve "
                   "on the host; they stay blocked")
    return out


def _loopback(addresses: Iterable[str]) -> bool:
    return any(_is_loopback(a) for a in addresses)


def _is_loopback(address: str) -> bool:
    """ipaddress's is_loopback; an IPv4 address as getaddrinfo writes it is read here, without
    loading ipaddress (milliseconds of every plan whose registry resolves)."""
    parts = address.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and str(int(p)) == p and int(p) < 256 for p in parts):
        return parts[0] == "127"
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


def allow_line(net: Network) -> str:
    """The spec's line: `network_allow: [resolved] name=ip, ...; [patterns] ...`."""
    resolved = ", ".join(f"{name}={'/'.join(ips)}" for name, ips in net.pins) or "(none)"
    patterns = ", ".join(p for p in net.patterns if "*" in p) or "(none)"
    line = f"network_allow: [resolved] {resolved}; [patterns] {patterns}"
    if net.unresolved:
        line += "; [unresolved] " + ", ".join(name for name, _ in net.unresolved)
    return line
