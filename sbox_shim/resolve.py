"""Resolve allowlisted names on the host at plan time: in parallel, each bounded in time."""
from __future__ import annotations

import socket
import threading

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Iterable, Mapping

    Resolver = Callable[[str], "tuple[str, ...]"]


def system_resolver(name: str) -> tuple[str, ...]:
    """A and AAAA records for `name`, IPv4 first, without duplicates."""
    # an ASCII name as bytes: as a str, socket encodes it with the idna codec, whose import costs
    # more than the lookup of a name the host knows
    host = name.encode("ascii") if name.isascii() else name
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
    v6 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET6]
    return tuple(dict.fromkeys(v4 + v6))


def resolve_all(
    names: Iterable[str],
    *,
    static: Mapping[str, tuple[str, ...]] | None = None,
    resolver: Resolver = system_resolver,
    timeout: float = 3.0,
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Return (pins, failures): name -> addresses, and name -> why it did not resolve.

    Each name gets its own daemon thread so one slow lookup cannot stall the rest, and a
    lookup that never answers cannot keep the process alive.
    """
    static = static or {}
    pins: dict[str, tuple[str, ...]] = {}
    failures: dict[str, str] = {}
    results: dict[str, tuple[str, ...] | str] = {}
    lock = threading.Lock()

    def work(name: str) -> None:
        try:
            value: tuple[str, ...] | str = resolver(name) or "no addresses"
        except (OSError, UnicodeError) as exc:
            value = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        with lock:
            results[name] = value

    threads = []
    for name in dict.fromkeys(names):
        if name in static:
            pins[name] = tuple(static[name])
            continue
        t = threading.Thread(target=work, args=(name,), daemon=True)
        t.start()
        threads.append((name, t))
    import time

    deadline = time.monotonic() + timeout
    for name, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        for name, _ in threads:
            value = results.get(name, f"timed out after {timeout:g}s")
            if isinstance(value, str):
                failures[name] = value
            else:
                pins[name] = value
    return pins, failures
