"""Choose a profile for a command line: the project's rules, first match wins."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sbox_shim.config import Config, Rule

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence


@dataclass(frozen=True)
class Match:
    rule: Rule
    pattern: str


def command_line(argv: Sequence[str]) -> str:
    """The text rules match against: argv joined by single spaces, the tool by its base name."""
    if not argv:
        return ""
    return " ".join([os.path.basename(argv[0]), *argv[1:]])


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.S)


def pattern_matches(pattern: str, line: str) -> bool:
    return _compile(pattern).match(line) is not None


def match(config: Config, argv: Sequence[str]) -> Match | None:
    line = command_line(argv)
    for rule in config.dispatch:
        for pattern in rule.patterns:
            if pattern_matches(pattern, line):
                return Match(rule, pattern)
    return None
