"""Egress throughput: one large HTTP download on loopback, direct vs through sbox's egress path.

    python bench/bench_egress.py [--size-mib 512] [--runs 15] [--requests 200]
                                 [--setup-runs 15] [--output bench/results/egress.json]

Three ways to fetch the same payload from the same loopback HTTP server with the same client:
- direct: TCP straight to the server;
- proxy: the unix socket of EgressProxy, `CONNECT registry.test:PORT`, then the GET;
- bridge: TCP to bridge.py's --listen port (as a sandboxed tool would), which hands each accepted
  connection to the proxy (SCM_RIGHTS): the proxy then serves that TCP socket itself (the docker
  backend's path, and bwrap's when sbox is not root);
- listener: TCP to a port the proxy itself listens on (bwrap's path as root: egress/netns.py makes
  that listener on the sandbox's loopback; here it is on the host's, which costs the same).
Server, proxy, bridge and client are processes of their own, as in real use. Runs are interleaved,
in an order that rotates from one round to the next, so that other load on the machine hits all
three alike. Reported per way: the median download time and throughput and its ratio to direct,
the CPU seconds each process spent during the downloads (what bounds throughput on few cores),
and the rate of small requests on fresh connections (the per-connection cost); and how busy the
CPUs were just before (other load skews everything). All traffic stays on 127.0.0.1 and on a
unix socket.

Then the set-up cost of an allowlisted step: `sbox run -- true` on bubblewrap in a project whose
profile has `network_allow: [a loopback registry name:port]` against the same with the network
off, interleaved, warm plan cache, through the launcher install.sh writes (`--setup-runs 0`
skips it).
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
import sysconfig
import tempfile
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Callable
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbox_shim.egress import bridge as bridge_module  # noqa: E402
from sbox_shim.egress.policy import EgressPolicy  # noqa: E402
from sbox_shim.egress.proxy import EgressProxy  # noqa: E402

BLOCK = os.urandom(4 * 1024 * 1024)  # streamed repeatedly: random, so nothing compresses it
BRIDGE = ROOT / "sbox_shim" / "egress" / "bridge.py"
SMALL = 1024  # bytes per small request
ON_PATH = {  # the processes each way goes through
    "direct": ("server", "client"),
    "proxy": ("server", "proxy", "client"),
    "bridge": ("server", "proxy", "bridge", "client"),
    "listener": ("server", "proxy", "client"),
}
Open = Callable[[], socket.socket]


def serve(listener: socket.socket) -> None:
    """A minimal HTTP server: `GET /N` gets N bytes (repeats of the random block), then close."""
    def answer(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            size = int(head.split(b" ", 2)[1].lstrip(b"/"))
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


def fetch(sock: socket.socket, size: int, prefix: bytes, buf: bytearray) -> None:
    """Send a GET over `sock` (after `prefix`, e.g. a CONNECT) and read the whole response."""
    sock.sendall(prefix + f"GET /{size} HTTP/1.1\r\nHost: registry.test\r\n\r\n".encode())
    received = 0
    while n := sock.recv_into(buf):
        received += n
    sock.close()
    if received < size:
        raise SystemExit(f"short download: {received} of {size} bytes")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process, its ended threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_percent(seconds: float = 2.0) -> float:
    """How busy the machine's CPUs are, before we start: other work that competes with ours."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return round(100 * (1 - (idle2 - idle) / max(1, total2 - total)), 1)


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


def run_proxy(policy: EgressPolicy, socket_path: str, stop: Event,
              listener: socket.socket) -> None:
    with EgressProxy(policy, socket_path) as proxy:
        if hasattr(proxy, "serve"):  # (not in sbox before the proxy could listen in the sandbox)
            proxy.serve(listener, None)
        stop.wait()


def measure(args: argparse.Namespace, ways: dict[str, tuple[Open, bytes]],
            pids: dict[str, int]) -> dict[str, dict[str, object]]:
    size = args.size_mib * 1024 * 1024
    buf = bytearray(1024 * 1024)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(pids, 0.0) for name in ways}
    for name, (opener, prefix) in ways.items():
        fetch(opener(), size, prefix, buf)  # warm-up, not counted
    for round_ in range(args.runs):
        names = list(ways)[round_ % len(ways):] + list(ways)[:round_ % len(ways)]
        for name in names:
            opener, prefix = ways[name]
            before = {who: cpu_seconds(pid) for who, pid in pids.items()}
            start = time.perf_counter()
            fetch(opener(), size, prefix, buf)
            seconds[name].append(time.perf_counter() - start)
            for who, pid in pids.items():
                cpu[name][who] += cpu_seconds(pid) - before[who]

    rates: dict[str, float] = {}
    for name, (opener, prefix) in ways.items():
        start = time.perf_counter()
        for _ in range(args.requests):
            fetch(opener(), SMALL, prefix, buf)
        rates[name] = args.requests / (time.perf_counter() - start)

    report: dict[str, dict[str, object]] = {}
    direct_mbps = size / statistics.median(seconds["direct"]) / 1e6
    for name in ways:
        median = statistics.median(seconds[name])
        mbps = size / median / 1e6
        total = sum(cpu[name][who] for who in ON_PATH[name]) / args.runs
        report[name] = {
            "seconds": [round(s, 4) for s in seconds[name]],
            "median_seconds": round(median, 4),
            "median_mb_per_s": round(mbps, 1),
            "ratio_to_direct": round(mbps / direct_mbps, 3),
            "cpu_seconds_per_run": {
                who: round(total / args.runs, 3) for who, total in cpu[name].items()
                if who in ON_PATH[name]
            },
            # All the processes on the path, and how many CPUs that kept busy on average: a
            # second loopback TCP hop (the listener, the bridge) costs about as much CPU as the
            # first, so on few cores the ratio to direct is bounded by CPU, not by the relay.
            "cpu_seconds_total_per_run": round(total, 3),
            "cpus_busy": round(total * args.runs / sum(seconds[name]), 2),
            "small_requests_per_s": round(rates[name], 1),
        }
        print(f"{name:>7}: median {median:.3f} s  {mbps:8.1f} MB/s  "
              f"({mbps / direct_mbps:.2f}x direct)  cpu/run {report[name]['cpu_seconds_per_run']}"
              f" = {total:.3f} s ({report[name]['cpus_busy']} CPUs)"
              f"  {rates[name]:.0f} small req/s")
    return report


ALLOW_CONFIG = """version: 1
backend: bwrap
hosts:
  registry.test: [127.0.0.1]
profiles:
  default:
    network: on
    network_allow: ["registry.test:{port}"]
"""
OFF_CONFIG = "version: 1\nbackend: bwrap\nprofiles:\n  default:\n    network: off\n"


def measure_setup(runs: int, port: int) -> dict[str, object]:
    """Median ms of `sbox run -- true` with an allowlist vs the network off, rounds interleaved."""
    sys.path.insert(0, str(ROOT / "bench"))
    import trusting  # noqa: E402
    from sbox_shim import launcher

    with tempfile.TemporaryDirectory(prefix="sbox-bench-egress-setup-") as tmp:
        base = Path(tmp)
        projects = {"network off": base / "off", "network_allow (proxy)": base / "allow"}
        projects["network off"].mkdir()
        projects["network_allow (proxy)"].mkdir()
        (projects["network off"] / "sbox.yaml").write_text(OFF_CONFIG)
        (projects["network_allow (proxy)"] / "sbox.yaml").write_text(ALLOW_CONFIG.format(port=port))
        (base / "home").mkdir()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(base / "home"),
               "LANG": os.environ.get("LANG", "C.UTF-8"), "SBOX_QUIET": "1",
               "SBOX_CACHE_DIR": str(base / "cache"), "SBOX_STATE_DIR": str(base / "state"),
               "SBOX_USER_CONFIG": str(base / "user-config.yaml")}
        trusting.trust(env, *(p / "sbox.yaml" for p in projects.values()))
        sbox = str(base / "sbox")
        # The launcher install.sh writes, which finds this tree's sbox_shim first (an editable
        # install's finder is not loaded under -S).
        launcher.write(sbox, paths=[str(ROOT), sysconfig.get_path("purelib"),
                                    sysconfig.get_path("platlib")])

        def timed(cwd: Path) -> float:
            start = time.perf_counter()
            proc = subprocess.run([sbox, "run", "--", "true"], cwd=cwd, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True)
            elapsed = (time.perf_counter() - start) * 1000
            if proc.returncode != 0:
                raise SystemExit(f"sbox run -- true in {cwd} exited {proc.returncode}: "
                                 f"{proc.stderr.decode()[-500:]}")
            return elapsed

        samples: dict[str, list[float]] = {name: [] for name in projects}
        for cwd in projects.values():
            timed(cwd)  # warm the plan cache
        for round_ in range(runs):
            names = list(projects)[round_ % 2:] + list(projects)[:round_ % 2]
            for name in names:
                samples[name].append(timed(projects[name]))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    extra = medians["network_allow (proxy)"] - medians["network off"]
    for name, value in medians.items():
        print(f"setup {name:>22}: median {value:6.1f} ms  (min {min(samples[name]):.1f}, "
              f"max {max(samples[name]):.1f})")
    print(f"setup: an allowlisted step costs {extra:+.1f} ms over a network-off one")
    return {"command": "sbox run -- true (bwrap, warm plan cache)", "runs": runs,
            "median_ms": {name: round(v, 2) for name, v in medians.items()},
            "samples_ms": {name: [round(v, 2) for v in vs] for name, vs in samples.items()},
            "allowlist_extra_ms": round(extra, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200, help="small requests per way")
    parser.add_argument("--setup-runs", type=int, default=15,
                        help="rounds of the set-up cost comparison (0: skip it)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "egress.json"))
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    busy_before = busy_percent()
    fork = multiprocessing.get_context("fork")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    server = fork.Process(target=serve, args=(listener,), daemon=True)
    server.start()
    listener.close()

    policy = EgressPolicy(
        pins={"registry.test": ("127.0.0.1",)}, ports={"registry.test": (port,)},
        explicit=frozenset(("registry.test",)),
    )
    connect = f"CONNECT registry.test:{port} HTTP/1.1\r\nHost: registry.test:{port}\r\n\r\n"
    with tempfile.TemporaryDirectory(prefix="sbox-bench-") as tmp:
        socket_path = os.path.join(tmp, "egress.sock")
        stop = fork.Event()
        served = socket.socket()
        served.bind(("127.0.0.1", 0))
        served.listen(128)
        served_port = served.getsockname()[1]
        proxy = fork.Process(target=run_proxy, args=(policy, socket_path, stop, served),
                             daemon=True)
        proxy.start()
        served.close()
        wait_until(lambda: os.path.exists(socket_path))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            bridge_port = probe.getsockname()[1]
        bridge = subprocess.Popen([
            sys.executable, "-I", "-S", str(BRIDGE), "--socket", socket_path,
            "--listen", f"127.0.0.1:{bridge_port}", "--", "sleep", "3600",
        ])

        def via_unix() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(socket_path)
            return sock

        ways: dict[str, tuple[Open, bytes]] = {
            "direct": (lambda: socket.create_connection(("127.0.0.1", port)), b""),
            "proxy": (via_unix, connect.encode()),
            "bridge": (lambda: socket.create_connection(("127.0.0.1", bridge_port)),
                       connect.encode()),
            "listener": (lambda: socket.create_connection(("127.0.0.1", served_port)),
                         connect.encode()),
        }
        if not hasattr(EgressProxy, "serve"):
            del ways["listener"]
        assert server.pid is not None and proxy.pid is not None
        pids = {"server": server.pid, "proxy": proxy.pid, "bridge": bridge.pid,
                "client": os.getpid()}
        try:
            wait_until(lambda: listening(bridge_port))
            results = measure(args, ways, pids) if args.runs else {}
        finally:
            bridge.terminate()
            bridge.wait(timeout=10)
            stop.set()
            proxy.join(timeout=10)
            server.terminate()
    setup = measure_setup(args.setup_runs, port) if args.setup_runs else None

    report: dict[str, object] = {
        "benchmark": "egress",
        "payload_bytes": args.size_mib * 1024 * 1024,
        "runs": args.runs,
        "small_requests": {"count": args.requests, "bytes": SMALL},
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "data_path": "os.splice" if bridge_module.SPLICE else "user-space copy",
        "bridge_path": "descriptor handoff (SCM_RIGHTS)",
        "listener_path": "the proxy's own TCP listener (bwrap as root: in the sandbox's netns)",
        "cpu_busy_percent_before": busy_before,
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **results,
        "setup": setup,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
