"""Egress throughput: one large HTTP download on loopback, direct vs through sbox's egress path.

    python bench/bench_egress.py [--size-mib 200] [--runs 5] [--output bench/results/egress.json]

Three ways to fetch the same payload from a loopback HTTP server:
- direct: TCP straight to the server;
- proxy: the unix socket of EgressProxy, `CONNECT registry.test:PORT`, then the GET;
- bridge: TCP to bridge.py's --listen port (as a sandboxed tool would), which pipes to the proxy.
Server, proxy and client run in processes of their own, as in real use (the bridge too). Runs are
interleaved so that other load on the machine hits all three alike. Prints the median of each and
its ratio to direct; writes the numbers as JSON. All traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Callable
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbox_shim.egress.policy import EgressPolicy  # noqa: E402
from sbox_shim.egress.proxy import EgressProxy  # noqa: E402

BLOCK = os.urandom(4 * 1024 * 1024)  # streamed repeatedly: random, so nothing compresses it
BRIDGE = ROOT / "sbox_shim" / "egress" / "bridge.py"


def serve(listener: socket.socket, size: int) -> None:
    """A minimal HTTP server: any GET gets `size` bytes of the random block, then close."""
    def answer(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode(),
            )
            view, left = memoryview(BLOCK), size
            while left:
                n = min(left, len(BLOCK))
                conn.sendall(view[:n])
                left -= n

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def download(sock: socket.socket, size: int, prefix: bytes = b"") -> None:
    """Send a GET over `sock` (after `prefix`, e.g. a CONNECT) and read the whole response."""
    sock.sendall(prefix + b"GET /payload HTTP/1.1\r\nHost: registry.test\r\n\r\n")
    buf = bytearray(1024 * 1024)
    received = 0
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        received += n
    sock.close()
    if received < size:
        raise SystemExit(f"short download: {received} of {size} bytes")


def connect_prefix(port: int) -> bytes:
    return f"CONNECT registry.test:{port} HTTP/1.1\r\nHost: registry.test:{port}\r\n\r\n".encode()


def timed(runs: int, ways: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    """Seconds per run for each way, interleaved so that load on the machine hits all alike."""
    for fetch in ways.values():
        fetch()  # warm-up, not counted
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, fetch in ways.items():
            start = time.perf_counter()
            fetch()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def wait_until(ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the proxy or the bridge to start")
        time.sleep(0.02)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def run_proxy(policy: EgressPolicy, socket_path: str, stop: Event) -> None:
    with EgressProxy(policy, socket_path):
        stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "egress.json"))
    args = parser.parse_args(argv)
    size = args.size_mib * 1024 * 1024
    load_before = [round(x, 2) for x in os.getloadavg()]
    fork = multiprocessing.get_context("fork")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = fork.Process(target=serve, args=(listener, size), daemon=True)
    server.start()
    listener.close()

    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)}, ports={"registry.test": (port,)},
        explicit=frozenset(("registry.test",)),
    )
    with tempfile.TemporaryDirectory(prefix="sbox-bench-") as tmp:
        socket_path = os.path.join(tmp, "egress.sock")
        stop = fork.Event()
        proxy = fork.Process(target=run_proxy, args=(policy, socket_path, stop), daemon=True)
        proxy.start()
        wait_until(lambda: os.path.exists(socket_path))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        bridge_port = probe.getsockname()[1]
        probe.close()
        bridge = subprocess.Popen([
            sys.executable, "-I", "-S", str(BRIDGE), "--socket", socket_path,
            "--listen", f"127.0.0.1:{bridge_port}", "--", "sleep", "3600",
        ])

        def direct() -> None:
            download(socket.create_connection(("127.0.0.1", port)), size)

        def via_proxy() -> None:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(socket_path)
            download(sock, size, connect_prefix(port))

        def via_bridge() -> None:
            sock = socket.create_connection(("127.0.0.1", bridge_port))
            download(sock, size, connect_prefix(port))

        try:
            wait_until(lambda: listening(bridge_port))
            results = timed(args.runs, {"direct": direct, "proxy": via_proxy, "bridge": via_bridge})
        finally:
            bridge.terminate()
            bridge.wait(timeout=10)
            stop.set()
            proxy.join(timeout=10)
            server.terminate()

    report: dict[str, object] = {
        "benchmark": "egress",
        "payload_bytes": size,
        "runs": args.runs,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    direct_mbps = size / statistics.median(results["direct"]) / 1e6
    for name, seconds in results.items():
        mbps = size / statistics.median(seconds) / 1e6
        report[name] = {
            "seconds": [round(s, 4) for s in seconds],
            "median_seconds": round(statistics.median(seconds), 4),
            "median_mb_per_s": round(mbps, 1),
            "ratio_to_direct": round(mbps / direct_mbps, 3),
        }
        print(f"{name:>7}: median {statistics.median(seconds):.3f} s  {mbps:8.1f} MB/s  "
              f"({mbps / direct_mbps:.2f}x direct)")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
