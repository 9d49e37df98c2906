"""Human and JSON renderings of a Plan, and the summary of what the egress proxy refused."""
from __future__ import annotations

import json

from sbox_shim.network import allow_line
from sbox_shim.plan import Limits, Plan, Step, asdict

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Sequence

_NETWORK_TEXT = {
    "off": "off (own network namespace with nothing in it)",
    "proxy": "allowlist, enforced by sbox's egress proxy (own network namespace; only allowed names, pinned addresses)",
    "dns": "allowlist by DNS pinning only (resolver 192.0.2.1, pinned /etc/hosts; shares the host network)",
    "open": "on, unrestricted",
}


def plan_text(plan: Plan, backend: str, cache: str = "", trust: Sequence[str] = ()) -> str:
    lines = [f"config: {plan.config_path or '(none: not opted in; built-in defaults)'}",
             f"project: {plan.project_root}", f"backend: {backend}"]
    if cache:
        lines.append(f"plan cache: {cache}")
    lines += [f"trust: {line}" for line in trust] or (["trust: no project file decides this plan"] if cache else [])
    for n, step in enumerate(plan.steps, 1):
        lines.append(f"step {n}/{len(plan.steps)} [{step.label}]: {_shell(step.command)}")
        lines += [f"  profile: {step.profile} ({step.reason})", f"  mode: {step.mode}",
                  f"  network: {_NETWORK_TEXT[step.network.policy]}"]
        if step.network.policy in ("proxy", "dns"):
            lines.append("  " + allow_line(step.network))
        lines.append("  project: " + _writable(step.writable) + (
            f"; anything else made or removed at the top of {', '.join(step.rebuilt)} is kept from the host (a "
            f"throwaway layer)" if step.rebuilt else ""))
        lines += [f"  git: {g} (this checkout's repository, outside the project: read-only, configs without "
                  f"credentials)" for g in _outside_repositories(step)]
        if step.declared:
            lines.append(f"  env: {', '.join(step.declared)}")
        lines.append("  limits: " + _limits(step.limits))
        lines.append(f"  no_new_privileges: {str(step.no_new_privileges).lower()}")
        if step.image:
            lines.append(f"  image: {step.image}")
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _outside_repositories(step: Step) -> list[str]:
    """The git directories outside the project a step is given (a linked worktree's or a
    submodule's, checkout.py), from their redacted configs: the outermost of them."""
    import os

    from sbox_shim.lean import inside

    # (the machine's redacted configs are named gitconfig, npmrc, pip.conf: a git directory's, config)
    dirs = sorted({os.path.dirname(m.target) for m in step.mounts if m.kind == "redact"
                   and os.path.basename(m.target) == "config" and not inside(m.target, step.project or "/")})
    return [d for d in dirs if not any(o != d and inside(d, o) for o in dirs)]


def _limits(limits: Limits) -> str:
    memory = f"{limits.memory >> 20}m" if limits.memory else "none"
    timeout = f"{limits.timeout:g}s" if limits.timeout else "none"
    return f"pids {limits.pids or 'none'}, memory {memory}, timeout {timeout}"


def _writable(writable: bool | tuple[str, ...]) -> str:
    guarded = "sbox.yaml, every .git, git's hooksPath, .github, .vscode, .idea, .claude read-only"
    if writable is True:
        return f"writable ({guarded})"
    if not writable:
        return "read-only"
    return f"read-only but for {', '.join(writable)} ({guarded})"


def _shell(argv: Iterable[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def plan_json(plan: Plan, backend: str, cache: str = "", trust: Sequence[str] = ()) -> str:
    data: dict[str, Any] = asdict(plan)
    data["backend_selected"] = backend
    data["plan_cache"] = cache
    data["trust"] = list(trust)
    for step, raw in zip(plan.steps, data["steps"]):
        raw["command"] = list(step.command)
        raw["env"] = {name: _redact(name, value) for name, value in step.env}
        raw["network"]["pins"] = {n: list(ips) for n, ips in step.network.pins}
        raw["network"]["allow_line"] = allow_line(step.network) if step.network.policy in ("proxy", "dns") else None
    return json.dumps(data, indent=2, sort_keys=True)


def _redact(name: str, value: str) -> str:
    """Credentials a step receives (tokens; passwords in index URLs) are not printed."""
    import re

    from sbox_shim.environment import is_secret

    if is_secret(name):
        return "<redacted>"
    return re.sub(r"(://)[^/@\s]+@", r"\1<redacted>@", value)


# What the proxy refused for what a connection carried, rather than for where it went.
_REASONS = {
    "plain-http": "plain HTTP inside CONNECT refused",
    "not-tls": "not TLS inside CONNECT: refused",
    "sni-mismatch": "TLS for another name inside CONNECT refused",
    "sni-missing": "TLS without a server name refused",
    "body-framing": "chunked plain-HTTP request body refused",
}


def denial_summary(denials: Iterable[Mapping[str, Any]], log_path: str | None) -> list[str]:
    """One or two lines for stderr: what was refused, how often, and what would admit it."""
    counts: dict[tuple[str, str], int] = {}
    hints: dict[tuple[str, str], str] = {}
    for d in denials:
        host = str(d.get("host"))
        key = (f"[{host}]:{d.get('port')}" if ":" in host else f"{host}:{d.get('port')}", str(d.get("reason")))
        counts[key] = counts.get(key, 0) + 1
        hints[key] = str(d.get("hint") or "")
    if not counts:
        return []
    parts = [f"{target} ({_REASONS.get(reason, reason)}{', x' + str(n) if n > 1 else ''})"
             for (target, reason), n in counts.items()]
    lines = [f"sbox: blocked {sum(counts.values())} connection attempt(s): " + ", ".join(parts[:6])
             + (f", and {len(parts) - 6} more" if len(parts) > 6 else "")]
    admit = sorted({h for h in hints.values() if h})
    tail = f"; log: {log_path}" if log_path else ""
    if admit:
        lines.append("sbox: to admit one, " + "; ".join(admit[:3]) + tail)
    elif tail:
        lines.append("sbox:" + tail[1:])
    return lines
