"""npm's scripts phase started before its turn, with sbox's driver told to wait: what both
backends share (bwrapahead.py, dockerahead.py).

The driver (npm_scripts.js) started with `--later=WHERE` loads Node, npm's modules and npm's
configuration, then reads the rest of its command line from WHERE (a descriptor on bwrap, the
gate's FIFO in a container): `go`, then each word the hook appended, each ended by a NUL, then end
of file. Anything else runs nothing. So the load, about 0.15 s of CPU that a direct `npm ci` pays
once and a two-phase install twice, overlaps the download.

Only the driver and npm may run before `go`: they must be the host's (the toolchain's, mounted
read-only), never a file the project holds (`only_host_programs`). At the turn, the step the hook
decided must be the one started but for the words it appended (`appended`).
"""
from __future__ import annotations

import os

from sbox_shim.plan import NPM_DRIVER as SCRIPTS_JS
from sbox_shim.plan import Step

LATER = "--later="


def preloadable(step: Step) -> bool:
    """npm's scripts phase, run by sbox's driver, offline, with nothing to stage first, whose
    programs can only be the host's."""
    return (step.mode == "sandbox" and step.label == "scripts" and bool(step.hook) and step.hook[0] == "npm"
            and SCRIPTS_JS in step.argv and step.network.policy == "off" and not step.staged
            and only_host_programs(step))


def only_host_programs(step: Step) -> bool:
    """Can the driver's programs only be the host's? `env`, then `node` and the npm it loads are
    looked up on the step's PATH inside the sandbox (npm by its path when the user named one):
    every entry must be one a step with the network keeps (trust/written.py: absolute, and in
    nothing a sandbox writes, this step's writable places and the project included), and no
    NODE_OPTIONS (a `--require`) or NODE_PATH may name more. Else a program the project holds
    (`node_modules/.bin/env`, with that directory on the user's PATH) would run before `go`,
    while the download runs and outside the persistence guard's watch: then the phase starts at
    its turn, its programs found as they would be."""
    from sbox_shim.trust.written import written_by_sandbox

    env = step.environ
    if env.get("NODE_OPTIONS") or env.get("NODE_PATH"):
        return False
    written = [step.project] + [place for m in step.mounts if not m.readonly and m.kind != "tmpfs"
                                for place in (m.source, m.target) if place]
    written += [os.path.realpath(place) for place in written]
    at = step.argv.index(SCRIPTS_JS) + 1
    tool = step.argv[at] if at < len(step.argv) else ""
    entries = (env.get("PATH") or "").split(":") + ([os.path.dirname(tool)] if "/" in tool else [])
    # "", ".", "node_modules/.bin": relative, the working directory's, in the project
    return all(entry.startswith("/") and not written_by_sandbox(entry, written) for entry in entries)


def waiting(argv: tuple[str, ...], where: int | str) -> tuple[str, ...]:
    """The driver's command line, told to wait for the rest on `where` (a descriptor or a path)."""
    at = argv.index(SCRIPTS_JS) + 1
    return (*argv[:at], f"{LATER}{where}", *argv[at:])


def appended(planned: Step, step: Step) -> tuple[str, ...] | None:
    """The words `step`'s hook appended to the planned step (`-- DIR...`, or none); None when it
    differs in anything else."""
    if step.replace(argv=planned.argv) != planned or step.argv[:len(planned.argv)] != planned.argv:
        return None
    words = step.argv[len(planned.argv):]
    if words and words[0] != "--" or any("\0" in w for w in words):
        return None
    return words


def turn(words: tuple[str, ...]) -> bytes:
    """What the driver reads at its turn: `go` and the words, each ended by a NUL."""
    return b"".join(w.encode("utf-8", "surrogateescape") + b"\0" for w in ("go", *words))
