"""Profiles named after a built-in phase (`npm:scripts`, `pip:download`): what they may add to it.

The phase's command, writable outputs, mounts and credentials stay sbox's; a profile of its name
adds variables (`env`), allow entries (`network_allow`) and `limits`, and may turn a scripts
phase's network on, explicitly (`sbox plan` shows it). build.py merges them in.
"""
from __future__ import annotations

from sbox_shim.config import Limits, Profile, _allow, _bool, _Doc, _env, _kind, _limits

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

PHASE_LABELS = ("download", "scripts")  # the built-in phases of every ecosystem (ecosystems.Phase.label)
PHASE_KEYS = ("env", "network", "network_allow", "limits")


def phase_name(name: str) -> bool:
    """Does a profile name configure a built-in phase (`npm:scripts`)? A known tool before the
    colon, or one of the phase labels after it (a typo such as `nmp:scripts` is then refused)."""
    from sbox_shim.ecosystems import tools

    tool, colon, label = name.partition(":")
    return bool(colon) and (tool in tools() or label in PHASE_LABELS)


def phase_profile(doc: _Doc, name: str, value: Any) -> Profile:
    """A profile named after a built-in phase: what it adds to sbox's phase. The phase's command,
    writable outputs, mounts and credentials stay sbox's; its network too, but for an explicit
    `network: on` on a scripts phase, which `sbox plan` shows."""
    from sbox_shim.ecosystems import tools
    from sbox_shim.environment import is_secret

    keys = ("profiles", name)
    tool, _, label = name.partition(":")
    if tool not in tools():
        raise doc.error(keys, f"no built-in policy for {tool!r}; built-in phases exist for {', '.join(tools())}")
    if label not in PHASE_LABELS:
        raise doc.error(keys, f"no built-in phase {label!r}; expected {tool}:download or {tool}:scripts")
    value = value or {}
    if not isinstance(value, dict):
        raise doc.error(keys, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in PHASE_KEYS:
            raise doc.error(keys + (key,), f"not settable for a built-in phase (sbox decides it); accepted: "
                                           f"{', '.join(PHASE_KEYS)}")

    def k(key: str) -> tuple[str, ...]:
        return keys + (key,)

    allow = _allow(doc, k("network_allow"), value.get("network_allow", []))
    network = _bool(doc, k("network"), value.get("network", label == "download"), "on or off")
    if label == "download" and not network:
        raise doc.error(k("network"), "the download phase needs the network; give the command a dispatch rule instead")
    if allow and not network:
        raise doc.error(k("network_allow"), "has no effect: the scripts phase runs with the network off; add "
                                            "network: on to let its scripts reach these (sbox plan shows it)")
    passed, assigned = _env(doc, k("env"), value.get("env", []))
    secret = next((n for n in (*passed, *(n for n, _ in assigned)) if is_secret(n)), None)
    if secret and not network:
        raise doc.error(k("env"), f"{secret} looks like a credential; credentials reach only phases with the network")
    return Profile(name=name, network=network, network_allow=allow, env=passed, env_set=assigned,
                   limits=_limits(doc, k("limits"), value["limits"]) if "limits" in value else Limits(),
                   line=doc.lines.get(keys))
