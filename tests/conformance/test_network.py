"""Network policies, attacked for real: listeners this test owns, on loopback and in a container of its own."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.listener import CanaryListener

from .helpers import PY, ListenerContainer, Runs, profile, project

# Half-close and wait for the listener to close: the payload has arrived, end to end.
DRAIN = r"""
def drain(s):
    try:
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
"""

# Inside the sandbox: try each HOST:PORT, send a payload, print a JSON verdict per target.
CONNECT = r"""
import json, socket, sys
""" + DRAIN + r"""
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=3)
        s.sendall(b"canary-from-sandbox")
        out[target] = "connected"
        drain(s)
    except OSError as e:
        out[target] = "failed: %s" % e
print(json.dumps(out))
"""

RESOLVE = r"""
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)})
    except OSError as e:
        out[name] = "unresolved: %s" % e
print(json.dumps(out))
"""

# Through the in-sandbox HTTP proxy (HTTPS_PROXY): CONNECT NAME:PORT, then send a payload.
VIA_PROXY = r"""
import json, os, socket, sys
""" + DRAIN + r"""
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1]
host, port = proxy.rsplit(":", 1)
out = {}
for target in sys.argv[1:]:
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
        head = s.recv(4096).split(b"\r\n", 1)[0].decode()
        out[target] = head
        if " 200 " in head + " ":
            s.sendall(b"canary-via-proxy")
        drain(s)
    except OSError as e:
        out[target] = "failed: %s" % e
print(json.dumps(out))
"""


def _verdicts(result: object) -> dict[str, object]:
    stdout = getattr(result, "stdout")
    assert getattr(result, "returncode") == 0, f"{stdout}\n{getattr(result, 'stderr')}"
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _listeners(backend: str) -> list[Any]:
    """Listeners the sandbox could reach if its network let it: the host's loopback, and for
    docker a listener container of the test's own on the default bridge."""
    found: list[Any] = [CanaryListener("127.0.0.1")]
    if backend == "docker":
        found.append(ListenerContainer())
    return found


def test_network_off_resolves_no_name(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(network="off"))
    names = ["registry.npmjs.org", "pypi.org", "example.com"]
    verdicts = _verdicts(runs.run(root, PY, "-c", RESOLVE, *names))
    for name in names:
        assert str(verdicts[name]).startswith("unresolved"), verdicts


def test_network_off_reaches_no_listener(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(network="off"))
    listeners = _listeners(runs.backend)
    try:
        targets = [f"{l.host}:{l.port}" for l in listeners]
        verdicts = _verdicts(runs.run(root, PY, "-c", CONNECT, *targets))
        for target in targets:
            assert str(verdicts[target]).startswith("failed"), verdicts
        assert [l.hits for l in listeners] == [0] * len(listeners)
    finally:
        for l in listeners:
            l.close()


def test_network_open_reaches_a_listener_on_this_machine(runs: Runs, tmp_path: Path) -> None:
    root = project(tmp_path, profile(network="on"))
    with (ListenerContainer() if runs.backend == "docker" else CanaryListener("127.0.0.1")) as listener:
        target = f"{listener.host}:{listener.port}"
        verdicts = _verdicts(runs.run(root, PY, "-c", CONNECT, target))
        assert verdicts[target] == "connected"
        assert listener.wait_for(1, b"canary-from-sandbox")


def test_network_open_resolves_names_as_the_host_does(runs: Runs, tmp_path: Path) -> None:
    import socket

    name = "pypi.org"
    try:
        socket.getaddrinfo(name, 443)
    except OSError:
        pytest.skip(f"this host cannot resolve {name} either")
    root = project(tmp_path, profile(network="on"))
    resolved = _verdicts(runs.run(root, PY, "-c", RESOLVE, name))
    assert isinstance(resolved[name], list) and resolved[name], resolved


def _allowlist_config(allowed: CanaryListener, enforce: str | None = None) -> str:
    config = profile(network="on", network_allow=[f"registry.sbox.test:{allowed.port}"],
                     **({"network_enforce": enforce} if enforce else {}))
    return config + "hosts:\n  registry.sbox.test: [127.0.0.1]\n  evil.sbox.test: [127.0.0.1]\n"


def test_allowlist_proxy_lets_the_allowed_name_through(runs: Runs, tmp_path: Path) -> None:
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = project(tmp_path, _allowlist_config(allowed))
        names = ["registry.sbox.test", "evil.sbox.test"]
        resolved = _verdicts(runs.run(root, PY, "-c", RESOLVE, *names))
        assert resolved["registry.sbox.test"] == ["127.0.0.1"]
        assert str(resolved["evil.sbox.test"]).startswith("unresolved"), resolved
        # the bridge forwards the pinned loopback port to the host's listener, through the proxy
        direct = _verdicts(runs.run(root, PY, "-c", CONNECT, f"127.0.0.1:{allowed.port}"))
        assert direct[f"127.0.0.1:{allowed.port}"] == "connected"
        assert allowed.wait_for(1, b"canary-from-sandbox")
        proxied = _verdicts(runs.run(root, PY, "-c", VIA_PROXY, f"registry.sbox.test:{allowed.port}"))
        assert " 200 " in str(proxied[f"registry.sbox.test:{allowed.port}"]) + " ", proxied
        assert allowed.wait_for(2, b"canary-via-proxy")
        assert evil.hits == 0


def test_allowlist_proxy_refuses_everything_else(runs: Runs, tmp_path: Path) -> None:
    with CanaryListener() as allowed, CanaryListener() as evil:
        root = project(tmp_path, _allowlist_config(allowed))
        wrong_port = f"registry.sbox.test:{evil.port}"
        proxied = _verdicts(runs.run(root, PY, "-c", VIA_PROXY, f"evil.sbox.test:{evil.port}", wrong_port,
                                     f"127.0.0.1:{evil.port}"))
        for target, head in proxied.items():
            assert " 200 " not in str(head) + " ", proxied
        others = _listeners(runs.backend)
        try:
            direct = _verdicts(runs.run(root, PY, "-c", CONNECT, f"127.0.0.1:{evil.port}",
                                        *[f"{l.host}:{l.port}" for l in others]))
            assert all(str(v).startswith("failed") for v in direct.values()), direct
            assert [l.hits for l in others] == [0] * len(others)
        finally:
            for l in others:
                l.close()
        assert evil.hits == 0
        assert allowed.hits == 0


def test_allowlist_dns_pins_allowed_names_only(runs: Runs, tmp_path: Path) -> None:
    config = profile(network="on", network_allow=["registry.sbox.test"], network_enforce="dns")
    config += "hosts:\n  registry.sbox.test: [198.51.100.7]\n  evil.sbox.test: [198.51.100.8]\n"
    root = project(tmp_path, config)
    # Only the allowed name is resolved here: it comes from the pinned hosts file, so no query is
    # sent. An unlisted name would send one to the sinkhole 192.0.2.1 over the shared network, an
    # address no test may aim at; so the sinkhole is checked by configuration, not by a query.
    resolved = _verdicts(runs.run(root, PY, "-c", RESOLVE, "registry.sbox.test"))
    assert resolved["registry.sbox.test"] == ["198.51.100.7"]
    resolv = runs.run(root, "cat", "/etc/resolv.conf").stdout
    assert [l.split()[1] for l in resolv.splitlines() if l.startswith("nameserver")] == ["192.0.2.1"]
    hosts = runs.run(root, "cat", "/etc/hosts").stdout
    assert "registry.sbox.test" in hosts and "evil.sbox.test" not in hosts


@pytest.mark.parametrize("policy", ["off", "proxy"])
def test_isolated_sandbox_sees_only_loopback(runs: Runs, tmp_path: Path, policy: str) -> None:
    with CanaryListener() as allowed:
        config = profile(network="off") if policy == "off" else _allowlist_config(allowed)
        root = project(tmp_path, config)
        script = "import socket; print(sorted({i[1] for i in socket.if_nameindex()}))"
        result = runs.run(root, PY, "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['lo']"
