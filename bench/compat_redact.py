"""Keep the machine's registry and mirror locations out of what compat.py writes and prints.

The bench reaches the registries through the user's own configuration; error output quotes it
(a pip traceback names the mirror's files). Before anything is stored or printed, every URL
becomes `<url>` and every local directory the tool configuration names (by its first two levels,
e.g. a file:// index and the files beside it) becomes `<configured>`.
"""
from __future__ import annotations

import configparser
import os
import re
from pathlib import Path
from typing import Any

URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"<>)\]]+")
CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf", "~/.npmrc",
           "/usr/etc/npmrc", "/etc/npmrc")


def _values() -> list[str]:
    values = [v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().startswith("npm_config_")]
    for name in CONFIGS:
        path = Path(os.path.expanduser(name))
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".conf":
            parser = configparser.ConfigParser(interpolation=None)
            try:
                parser.read_string(text)
            except configparser.Error:
                continue
            values += [v for s in parser.sections() for v in parser[s].values()]
        else:
            values += [line.split("=", 1)[1] for line in text.splitlines() if "=" in line]
    return values


def _roots() -> list[str]:
    roots = set()
    for value in _values():
        for token in re.split(r"[\s,]+", value):
            path = token.removeprefix("file://") if token.startswith(("file://", "/")) else ""
            parts = [p for p in path.split("/") if p]
            if len(parts) >= 2:
                roots.add("/" + "/".join(parts[:2]))
    return sorted(roots, key=len, reverse=True)


ROOTS = _roots()


def text(s: str) -> str:
    s = URL.sub("<url>", s)
    for root in ROOTS:
        s = s.replace(root, "<configured>")
    return s


def deep(value: Any) -> Any:
    """`text` applied to every string in a JSON-like value."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, list):
        return [deep(v) for v in value]
    if isinstance(value, dict):
        return {k: deep(v) for k, v in value.items()}
    return value
