"""Trusted inputs: sbox acts on a file a sandbox could have written only if the user trusted its
exact content (as `mise trust` and `direnv allow` do).

Every opt-in file from the working directory up to `/` needs trust, and so does the tool
configuration a plan is made from when it lies where a sandbox can write (the project, a venv,
sbox's caches). `sbox trust` records a content digest in sbox's state directory, which no sandbox
can write; an edit needs a new trust. Only the part of a file that decides counts: the option lines
of a requirements file, the `[tool.sbox]` table of a pyproject.toml, the `scripts` of a
package.json that a host-mode npm would run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import dataclass

from sbox_shim import kept
from sbox_shim.errors import EXIT_USAGE, SboxError
from sbox_shim.trust.files import MAX_BYTES, printable, read_regular, why_unreadable

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable, Mapping, Sequence

OPT_IN = "opt-in config"
SHOWN_LINES = 60  # how much of a new file `sbox trust` prints
_SECRET_LINE = re.compile(r"(_auth|token|password|secret|credential)", re.I)


@dataclass(frozen=True)
class Input:
    path: str
    kind: str  # what it is, for the user
    part: str = "all"  # all | options | tool.sbox | tool.uv | scripts | program: which part of it decides


@dataclass(frozen=True)
class Verdict:
    input: Input
    state: str  # trusted | new | changed | unreadable | empty (nothing in it decides anything)
    detail: str = ""


class UntrustedError(SboxError):
    """Inputs the user has not trusted: one line each, nothing ran."""

    exit_code = EXIT_USAGE

    def __str__(self) -> str:
        return str(self.args[0])


def directory(state_dir: str) -> str:
    return os.path.join(state_dir, "trust")


def _record_path(state_dir: str, path: str) -> str:
    return os.path.join(directory(state_dir), kept.digest(path.encode("utf-8", "surrogateescape")) + ".trust")


# ---------------------------------------------------------------- what decides


PROGRAM_BYTES = 64 << 20  # a program a trusted config names (a yarn release: 2 to 6 MiB)


def _limit(item: Input) -> int:
    return PROGRAM_BYTES if item.part == "program" else MAX_BYTES


def _read(item: Input) -> bytes | None:
    return read_regular(item.path, _limit(item))


def decisive(data: bytes, part: str, whole: str = "") -> str:
    """The part of a file's content that decides what sbox does (`whole`: the content's digest,
    if known)."""
    if part == "program":  # all of it, kept and shown as its digest
        return f"a program of {len(data)} bytes, sha256 {whole or kept.digest(data)}"
    text = data.decode("utf-8", "surrogateescape")
    if part == "options":
        from sbox_shim.trust.files import decode

        text = decode(data) or text  # a UTF-16 requirements file's options count too
        from sbox_shim.ecosystems.pip import option_lines

        return "\n".join(option_lines(text))
    if part in ("tool.sbox", "tool.uv"):  # a pyproject's own table (and its subtables)
        out, inside = [], False
        for line in text.splitlines():
            if line.strip().startswith("["):
                name = line.strip().lstrip("[").split("]")[0].strip()
                inside = name == part or name.startswith(part + ".")
            if inside:
                out.append(line)
        return "\n".join(out)
    if part == "scripts":  # what a host-mode npm runs: the scripts, which workspaces it enters, and
        # publishConfig, which npm lays over its whole config (`script-shell` there beats sbox's own)
        try:
            manifest = json.loads(text)
            decides = {k: manifest.get(k) for k in ("scripts", "workspaces", "publishConfig") if manifest.get(k)}
        except (ValueError, AttributeError):
            return text  # not JSON npm could read: the whole file decides
        return json.dumps(decides, indent=1, sort_keys=True) if decides else ""
    return text


def _shown(text: str) -> str:
    """What sbox keeps to show the next change: lines that look like credentials left out."""
    return "\n".join("<a line with a credential, not kept>" if _SECRET_LINE.search(line) else line
                     for line in text.splitlines())


CHECKED: dict[str, bytes] = {}  # the bytes each input was found trusted as, in this process


def checked(path: str) -> bytes | None:
    """The bytes `path` was last found trusted as, for a phase to read in place of the file (what
    a racing sandbox writes after the check is not what the tool runs); None if not checked."""
    return CHECKED.get(path)


def verdict(item: Input, state_dir: str) -> Verdict:
    data = _read(item)
    if data is None:
        return Verdict(item, "unreadable", why_unreadable(item.path, _limit(item)) or "cannot be read")
    whole = kept.digest(data)  # a release is megabytes: hashed once
    content = decisive(data, item.part, whole)
    if item.part != "all" and not content.strip():
        return Verdict(item, "empty")
    record = kept.read_private(_record_path(state_dir, item.path))
    digest = kept.digest(content.encode("utf-8", "surrogateescape"))
    if not isinstance(record, dict):
        return Verdict(item, "new")
    if record.get("sha256") == digest and record.get("part") == item.part \
            or record.get("sha256_all") == whole:  # or the whole file was trusted as it is now
        CHECKED[item.path] = data
        return Verdict(item, "trusted")
    return Verdict(item, "changed", str(record.get("shown", "")))


def check(inputs: Iterable[Input], state_dir: str) -> list[Verdict]:
    return [verdict(i, state_dir) for i in dict.fromkeys(inputs)]


def require(inputs: Iterable[Input], state_dir: str) -> None:
    """Stop (exit 2, one line per file, nothing run) unless every input is trusted."""
    lines = [printable(_refusal(v)) for v in check(inputs, state_dir) if v.state not in ("trusted", "empty")]
    if lines:
        raise UntrustedError("\n".join(lines))


def _refusal(v: Verdict) -> str:
    path = v.input.path
    if v.state == "unreadable":
        return f"sbox: {path}: {v.input.kind} {v.detail}; sbox reads only regular files there: replace it, nothing ran"
    what = "is new" if v.state == "new" else "changed since you trusted it"
    return (f"sbox: {path}: {v.input.kind} {what} and is not trusted, nothing ran; "
            f"review it, then: sbox trust {shlex.quote(path)}")


# ---------------------------------------------------------------- recording


def record(item: Input, state_dir: str) -> Verdict:
    """Trust the input's current content; the verdict before."""
    before = verdict(item, state_dir)
    data = _read(item)
    if data is None:
        return before
    whole = kept.digest(data)
    content = decisive(data, item.part, whole)
    kept.write_private(_record_path(state_dir, item.path), {
        "path": item.path, "kind": item.kind, "part": item.part, "at": int(time.time()),
        "sha256": kept.digest(content.encode("utf-8", "surrogateescape")), "shown": _shown(content),
        "sha256_all": whole,
    }, prune_old=False)
    return before


def forget(path: str, state_dir: str) -> bool:
    target = _record_path(state_dir, path)
    if not os.path.exists(target):
        return False
    kept.remove(target)
    _touch(directory(state_dir))
    return True


def _touch(path: str) -> None:
    """A trust removed changes the directory's times, which the plan cache watches."""
    try:
        os.utime(path)
    except OSError:
        pass


def records(state_dir: str) -> list[dict[str, object]]:
    try:
        names = sorted(os.listdir(directory(state_dir)))
    except OSError:
        return []
    found = [kept.read_private(os.path.join(directory(state_dir), n)) for n in names if n.endswith(".trust")]
    return sorted((r for r in found if isinstance(r, dict)), key=lambda r: str(r.get("path")))


def change(v: Verdict) -> list[str]:
    """What `sbox trust` shows of an input: the change since the last trust, or the new content."""
    data = _read(v.input) or b""
    now = _shown(decisive(data, v.input.part)).splitlines()
    if v.state == "changed":
        import difflib

        return list(difflib.unified_diff(v.detail.splitlines(), now, "trusted before", "now", lineterm="", n=1))
    if v.state == "new":
        extra = [f"… {len(now) - SHOWN_LINES} more lines"] if len(now) > SHOWN_LINES else []
        return now[:SHOWN_LINES] + extra
    return []


def describe(verdicts: Sequence[Verdict]) -> list[str]:
    """One line per input, for `sbox plan` and `sbox doctor`."""
    words = {"trusted": "trusted", "new": "NOT TRUSTED (new)", "changed": "NOT TRUSTED (changed)",
             "empty": "nothing to trust", "unreadable": "REFUSED"}
    return [printable(f"{words[v.state]}: {v.input.path} ({v.input.kind})") for v in verdicts]
