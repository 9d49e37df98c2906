"""`sbox trust [PATH…]`, `sbox trust --list`, `sbox untrust [PATH…]`.

The command is the consent: it asks nothing, shows what it trusts (the change since the last
trust, or the new content) and records content digests in sbox's state directory.
"""
from __future__ import annotations

import os
import sys

from sbox_shim import trust
from sbox_shim.errors import UsageError
from sbox_shim.trust import Input, gate
from sbox_shim.trust.files import printable

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence, TextIO


def _state_dir(env: Mapping[str, str]) -> str:
    from sbox_shim.paths import sbox_dir

    return sbox_dir("state", env)


def _inputs(paths: Sequence[str], env: Mapping[str, str], cwd: str) -> list[Input]:
    """Files named, or every input of the project at each directory named (none: the cwd)."""
    out: list[Input] = []
    for raw in paths or [cwd]:
        path = os.path.abspath(os.path.join(cwd, raw))
        if os.path.isdir(path) and not os.path.islink(path):
            out += gate.project(path, env)
        elif os.path.lexists(path):
            out.append(gate.classify(path))
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return list(dict.fromkeys(out))


def _writer(out: TextIO | None) -> Callable[[str], object]:
    """Lines for the terminal: what a sandbox could have written (names, content) escaped, so no
    control sequence hides a line from the review `sbox trust` asks for."""
    stream = out or sys.stdout
    return lambda text: stream.write(printable(text.rstrip("\n")) + "\n")


def trust_paths(paths: Sequence[str], env: Mapping[str, str], cwd: str | None = None,
                out: TextIO | None = None) -> int:
    """Trust the files named (or each project's inputs); print what was trusted."""
    from sbox_shim.trust.gate import dirs_outside_projects

    state = _state_dir(env)
    dirs_outside_projects(env, cwd or os.getcwd(), (("state directory", state),))  # where the records go
    write = _writer(out)
    items = _inputs(paths, env, cwd or os.getcwd())
    refused = 0
    for v in trust.check(items, state):
        if v.state == "unreadable":
            write(f"refused: {v.input.path} ({v.input.kind}) {v.detail}\n")
            refused += 1
        elif v.state == "empty":
            write(f"nothing to trust: {v.input.path} ({v.input.kind}: nothing in it decides)\n")
        elif v.state == "trusted":
            write(f"already trusted: {v.input.path} ({v.input.kind})\n")
        else:
            write(f"trusted: {v.input.path} ({v.input.kind}, {'new' if v.state == 'new' else 'changed'})\n")
            for line in trust.change(v):
                write(f"    {line}\n")
            trust.record(v.input, state)
    if not items:
        write("nothing here for sbox to trust\n")
    return 1 if refused else 0


def cmd_trust(paths: Sequence[str], listing: bool, env: Mapping[str, str]) -> int:
    if listing:
        return list_trusted(env)
    return trust_paths(paths, env)


def list_trusted(env: Mapping[str, str], out: TextIO | None = None) -> int:
    write = _writer(out)
    state = _state_dir(env)
    found = trust.records(state)
    for r in found:
        item = Input(str(r.get("path")), str(r.get("kind")), str(r.get("part", "all")))
        now = trust.verdict(item, state).state
        status = {"trusted": "trusted", "changed": "changed since", "new": "changed since",
                  "unreadable": "missing or unreadable", "empty": "trusted"}[now]
        write(f"{status}: {item.path} ({item.kind})\n")
    if not found:
        write("no file is trusted yet\n")
    return 0


def cmd_untrust(paths: Sequence[str], env: Mapping[str, str]) -> int:
    state = _state_dir(env)
    cwd = os.getcwd()
    named = [os.path.abspath(os.path.join(cwd, p)) for p in paths]
    targets = [i.path for i in _inputs(paths, env, cwd)] if not named or any(os.path.isdir(p) for p in named) else named
    for path in dict.fromkeys(targets):
        if trust.forget(path, state):
            print(f"untrusted: {path}")
    return 0
