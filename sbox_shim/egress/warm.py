"""An allowlisted step on the warm path (compiled.py): the egress proxy around a cached sandbox.

The plan cache keeps such a step only when sbox listens in the sandbox's own network namespace
(netns.py: no bridge inside; egress/userns.py for an ordinary user) and every allowed name is
pinned to loopback (recorder.py says why).
Its record holds the policy, as the cold path built it, and what the denial log names. Everything
here is what the cold path does around the same sandbox (runner._run_staged): one proxy for the
step, its denials written and summed up after.
"""
from __future__ import annotations

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    Ready = Callable[[int], str]


def record(step: Any, state_dir: str) -> dict[str, Any]:
    """What the warm path needs of an allowlisted Step (plan.Step)."""
    from sbox_shim.plan import PROXY_PORT

    net = step.network
    return {"pins": [[name, list(addresses)] for name, addresses in net.pins],
            "ports": [[name, list(ports)] for name, ports in net.ports],
            "explicit": list(net.explicit), "forwards": [list(f) for f in net.forwards],
            "port": PROXY_PORT, "state": state_dir, "label": step.label, "command": list(step.command),
            "profile": step.profile, "cwd": step.cwd}


def run(egress: Mapping[str, Any], sandbox: Callable[[Ready], int | None]) -> int | None:
    """Run `sandbox` (given the hook that makes the proxy's listeners in it) with the proxy up, as
    the cold path does (egress/starting.py): once bwrap has set the sandbox up, its listeners are
    made and the command goes; the proxy is imported and started in a thread meanwhile and serves
    them (a connection waits in the backlog until then). A proxy that cannot start leaves them
    closed (every connection refused) and the step fails, saying why."""
    import sys
    import threading

    from sbox_shim.egress.starting import Starting

    forwards = [(str(name), int(port)) for name, port in egress["forwards"]]
    proxy = Starting(lambda: _policy(egress), forwards, "", int(egress["port"]))
    loading = threading.Thread(target=proxy.begin, name="sbox-egress-begin", daemon=True)  # libc's setns, while bwrap works
    loading.start()

    def ready(pid: int) -> str:
        loading.join()
        return proxy.ready(pid)

    try:
        code = sandbox(ready)
    finally:
        loading.join()
        denials, problem = proxy.stop()
    if proxy.refusal:  # an ordinary user's child could not enter bwrap's user namespace: nothing ran
        from sbox_shim.egress import netns

        if not netns.usable():
            netns.refused_here(str(egress["state"]), proxy.refusal)
            sys.stderr.write("sbox: allowlisted steps run with the bridge inside the sandbox on this machine from now on\n")
            return None  # the cold path runs it, with the bridge
    if problem:
        sys.stderr.write(problem + "\n")
        code = 125 if code is None else code or 125
    if denials:
        _report(egress, denials, sys.stderr.write)
    return code


def _policy(egress: Mapping[str, Any]) -> Any:
    from sbox_shim.egress.policy import EgressPolicy

    return EgressPolicy(
        pins={str(name): tuple(map(str, addresses)) for name, addresses in egress["pins"]},
        ports={str(name): tuple(map(int, ports)) for name, ports in egress["ports"]},
        explicit=frozenset(map(str, egress["explicit"])),
    )


def _report(egress: Mapping[str, Any], denials: list[dict[str, Any]],
            write: Callable[[str], object]) -> None:
    from sbox_shim.report import denial_summary
    from sbox_shim.runner import write_record

    class Step:  # what write_record reads of a plan.Step
        label = str(egress["label"])
        command = [str(word) for word in egress["command"]]
        profile = str(egress["profile"])
        cwd = str(egress["cwd"])

    log = write_record(str(egress["state"]), Step(), "", {"denials": denials})  # type: ignore[arg-type]
    for line in denial_summary(denials, log):
        write(line + "\n")
