"""The fast `sbox` launcher that install.sh puts in its venv.

pip's script starts Python with `site`, which looks through site-packages for .pth files and
customisation modules: about 3 ms on every command. In a venv that sbox owns, the launcher can
start Python with `-I -S` instead and name its two package directories itself. `-I` also keeps
PYTHONPATH, PYTHONSTARTUP and the user's site directory out of the program that builds the sandbox.

    python -m sbox_shim.launcher PATH    # write (or replace) the launcher at PATH
"""
from __future__ import annotations

import os
import sys
import sysconfig

MARKER = "# sbox-launcher: written by sbox; do not edit"
OURS = (MARKER, "from sbox_shim.entry import main")  # this launcher, or pip's script of bin/sbox


def text(python: str, paths: list[str]) -> str:
    return "\n".join([
        f"#!{python} -IS",
        MARKER,
        "import sys",
        # First on the path: sbox's own venv holds no module named like one of the standard library's,
        # and the interpreter finds sbox without looking through the standard library's directories.
        *(f"sys.path.insert({i}, {p!r})" for i, p in enumerate(dict.fromkeys(paths))),
        "from sbox_shim.entry import main",
        "main()",
        "",
    ])


def write(path: str, python: str | None = None, paths: list[str] | None = None) -> None:
    """Write the launcher at `path`, replacing only a launcher or sbox's own script."""
    if os.path.lexists(path) and not os.path.islink(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        if not any(mark in head for mark in OURS):
            raise SystemExit(f"sbox: {path} exists and is not sbox's; move it away first")
    python = python or sys.executable
    paths = paths or [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text(python, paths))
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sbox_shim.launcher PATH", file=sys.stderr)
        return 2
    write(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
