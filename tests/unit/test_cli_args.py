"""`sbox run` and `sbox plan` are read without argparse; they must read exactly as argparse would."""
from __future__ import annotations

import pytest

from sbox_shim.cli import _parser, _quick

SAME = [
    ["run", "--", "npm", "install"],
    ["run", "npm", "--version"],
    ["run", "--profile", "p", "--backend", "bwrap", "--config", "c.yaml", "--", "x"],
    ["run", "--profile=p", "x", "--profile", "q"],
    ["run", "--config=", "x"],
    ["plan", "--json", "--", "x"],
    ["plan", "--json", "x"],
    ["plan", "--backend=docker", "x", "--json"],
    ["run"],
    ["run", "--"],
]
LEFT_TO_ARGPARSE = [
    ["run", "--backend", "bogus", "x"],  # argparse's own error
    ["run", "--prof", "p", "x"],  # an abbreviation argparse accepts
    ["run", "-h"],
    ["run", "--profile"],
    ["run", "--json", "x"],  # plan's option
    ["shims", "list"],
    [],
]


@pytest.mark.parametrize("raw", SAME)
def test_quick_reading_equals_argparse(raw: list[str]) -> None:
    quick, full = _quick(raw), _parser().parse_args(raw)
    assert quick is not None
    for name in ("command", "profile", "backend", "config", "argv"):
        assert getattr(quick, name) == getattr(full, name), name
    assert quick.json == getattr(full, "json", False)


@pytest.mark.parametrize("raw", LEFT_TO_ARGPARSE)
def test_anything_unusual_is_left_to_argparse(raw: list[str]) -> None:
    assert _quick(raw) is None
