"""The Docker sandbox's lifeline, held on the host: `python -m sbox_shim.backends.dockerwatch NAME [PATH]`.

sbox starts this process in a session of its own, its stdin the read end of a pipe that only sbox
holds open. When sbox has removed the container itself it writes DONE, and this process exits.
If the pipe closes without DONE, sbox died (SIGKILL included): this process removes the container,
with the Docker SDK found on PATH (sbox's own sys.path: the watcher starts without `site`).
Nothing in the container can signal it: it lives in the host's pid namespace, not the sandbox's.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Sequence

DONE = b"done"
RETRY_AFTER = 1.0  # a create that sbox had in flight when it died may land after the first removal


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) not in (1, 2):
        sys.stderr.write("usage: python -m sbox_shim.backends.dockerwatch CONTAINER [PATH] < PIPE\n")
        return 2
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    said = b""
    while chunk := os.read(0, 64):
        said += chunk
    if said != DONE:
        if len(args) == 2:
            sys.path[len(sys.path):] = [p for p in args[1].split(os.pathsep) if p and p not in sys.path]
        remove(args[0])
    return 0


def remove(name: str) -> None:
    import time

    from sbox_shim.backends import dockerapi  # only now: a run that ends normally never pays for it

    try:
        api = dockerapi.connect()
    except Exception:  # no daemon: nothing of it left to remove
        return
    for attempt in range(2):
        try:
            api.remove_container(name, force=True)
        except Exception:  # gone already, or not there yet
            pass
        if attempt == 0:
            time.sleep(RETRY_AFTER)


if __name__ == "__main__":
    raise SystemExit(main())
