"""`sbox shims install|uninstall|list|verify`: one template, one small sh script per tool."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass

from sbox_shim.errors import UsageError
from sbox_shim.toolpath import SHIM_MARKER, find_real, is_shim, split_path, without_shims

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Mapping, Sequence

EXTRA_TOOLS = ("pip3", "uv", "poetry", "bun")
SENTINEL = ".sbox-shims"  # marks a directory as an sbox shims dir, for other installs' shims
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.sh")


def tools() -> tuple[str, ...]:
    from sbox_shim import ecosystems

    return tuple(dict.fromkeys(ecosystems.tools() + EXTRA_TOOLS))


def default_dir(env: Mapping[str, str]) -> str:
    if env.get("SBOX_SHIMS_DIR"):
        return os.path.abspath(env["SBOX_SHIMS_DIR"])
    from sbox_shim.paths import user_dir

    return os.path.join(user_dir("data", env), "shims")


def sbox_executable(env: Mapping[str, str]) -> str:
    """The `sbox` console script of this installation, which the shims hand over to."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "sbox")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("sbox", path=env.get("PATH", os.defpath))
    if found and not is_shim(found):
        return os.path.abspath(found)
    raise UsageError(f"cannot find the sbox executable next to {sys.executable}; reinstall with ./install.sh")


def render(tool: str, sbox: str, shims_dir: str) -> str:
    """The shim for `tool`: the template with its placeholders filled, each value sh-quoted."""
    with open(TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    if not _NAME.match(tool):
        raise UsageError(f"{tool!r} is not a command name a shim can carry")
    values = {"@TOOL@": tool, "@SBOX@": sbox, "@SHIMS@": shims_dir, "@SHIMS_REAL@": os.path.realpath(shims_dir)}
    for key, value in values.items():
        text = text.replace(f"={key}\n", f"={shlex.quote(value)}\n")
    return text.replace("@TOOL@", tool)


def _write(path: str, text: str, mode: int) -> None:
    """Write atomically: a shell running the old shim never reads a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Outcome:
    name: str
    action: str  # wrote | refreshed | unchanged | foreign


def ours(path: str) -> bool:
    """A regular file carrying our marker: the only kind of file we overwrite or remove."""
    return not os.path.islink(path) and os.path.isfile(path) and is_shim(path)


def install(shims_dir: str, names: Sequence[str], sbox: str) -> list[Outcome]:
    """Write (or refresh) our shims; leave alone any file that does not carry our marker."""
    os.makedirs(shims_dir, exist_ok=True)
    outcomes = []
    files = [(name, render(name, sbox, shims_dir)) for name in names]
    files.append((SENTINEL, f"{SHIM_MARKER}\n# This directory holds sbox shims; sbox's own shims skip it.\n"))
    for name, text in files:
        path = os.path.join(shims_dir, name)
        if os.path.lexists(path) and not ours(path):
            outcomes.append(Outcome(name, "foreign"))
            continue
        mode = 0o644 if name == SENTINEL else 0o755
        if not os.path.lexists(path):
            action = "wrote"
        elif _current(path) == text and os.stat(path).st_mode & 0o777 == mode:
            action = "unchanged"
        else:
            action = "refreshed"
        if action != "unchanged":
            _write(path, text, mode)
        outcomes.append(Outcome(name, action))
    return outcomes


def installed(shims_dir: str) -> list[str]:
    """The shims in a directory: the files carrying our marker, the sentinel excepted."""
    try:
        names = sorted(os.listdir(shims_dir))
    except OSError:
        return []
    return [n for n in names if n != SENTINEL and ours(os.path.join(shims_dir, n))]


def uninstall(shims_dir: str) -> list[str]:
    """Remove only our files; the directory too, when nothing else is left in it."""
    removed = installed(shims_dir)
    if ours(os.path.join(shims_dir, SENTINEL)):
        removed.append(SENTINEL)
    for name in removed:
        os.unlink(os.path.join(shims_dir, name))
    try:
        os.rmdir(shims_dir)
    except OSError:
        pass
    return [n for n in removed if n != SENTINEL]


def _first_on_path(name: str, path_var: str) -> str | None:
    for directory in split_path(path_var):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def status(name: str, shims_dir: str, path_var: str) -> tuple[str, str | None]:
    """(ok | shadowed | missing | no real tool, the path that matters): what typing `name` does."""
    shim = os.path.join(shims_dir, name)
    if not ours(shim):
        return "missing", None
    winner = _first_on_path(name, path_var)  # None: neither the shim nor any real tool is on PATH
    if winner is not None and not os.path.samefile(winner, shim):
        return "shadowed", winner
    real = find_real(name, without_shims(path_var, [shims_dir]), [shims_dir])
    if winner is None or real is None:
        return "no real tool", None
    return "ok", real


def describe(state: str, detail: str | None) -> str:
    if state == "ok":
        return f"ok ({detail})"
    if state == "shadowed":
        return f"shadowed by {detail}"
    return state


def position(shims_dir: str, path_var: str) -> str:
    """Where the shims dir sits on PATH: first | later | absent (compared by realpath)."""
    real = os.path.realpath(shims_dir)
    entries = [os.path.realpath(p) for p in split_path(path_var)]
    if not entries or real not in entries:
        return "absent"
    return "first" if entries[0] == real else "later"


def activation_hint(env: Mapping[str, str]) -> str:
    shell = os.path.basename(env.get("SHELL", "bash"))
    if shell == "fish":
        return "sbox activate fish | source"
    return f'eval "$(sbox activate {shell if shell in ("bash", "zsh") else "sh"})"'


def cmd_shims(action: str, dir: str | None, env: Mapping[str, str]) -> int:
    shims_dir = os.path.abspath(dir) if dir else default_dir(env)
    path_var = env.get("PATH", os.defpath)
    if action == "install":
        return _cmd_install(shims_dir, env)
    if action == "uninstall":
        return _cmd_uninstall(shims_dir)
    if action == "list":
        return _cmd_list(shims_dir, path_var)
    return _cmd_verify(shims_dir, path_var, env)


def _cmd_install(shims_dir: str, env: Mapping[str, str]) -> int:
    sbox = sbox_executable(env)
    try:
        outcomes = install(shims_dir, tools(), sbox)
    except OSError as exc:
        raise UsageError(f"cannot write shims to {shims_dir}: {exc.strerror or exc}") from None
    foreign = [o.name for o in outcomes if o.action == "foreign"]
    for o in outcomes:
        if o.name != SENTINEL and o.action != "foreign":
            print(f"{o.action:9} {os.path.join(shims_dir, o.name)}")
    for name in foreign:
        print(f"sbox: {os.path.join(shims_dir, name)} exists and is not an sbox shim; left it alone",
              file=sys.stderr)
    if position(shims_dir, env.get("PATH", "")) != "first":
        print(f"sbox: put the shims first on PATH: {activation_hint(env)}")
    return 1 if foreign else 0


def _cmd_uninstall(shims_dir: str) -> int:
    removed = uninstall(shims_dir)
    print(f"sbox: removed {len(removed)} shims from {shims_dir}" + (f": {' '.join(removed)}" if removed else ""))
    left = [n for n in tools() if os.path.lexists(os.path.join(shims_dir, n))]
    if left:
        print(f"sbox: left alone (not sbox shims): {' '.join(left)}", file=sys.stderr)
    return 0


def _cmd_list(shims_dir: str, path_var: str) -> int:
    names = installed(shims_dir)
    if not names:
        print(f"sbox: no shims in {shims_dir}; run: sbox shims install")
    for name in names:
        real = find_real(name, without_shims(path_var, [shims_dir]), [shims_dir])
        print(f"{os.path.join(shims_dir, name)} -> {real or f'(no real {name} on PATH)'}")
    return 0


def _cmd_verify(shims_dir: str, path_var: str, env: Mapping[str, str]) -> int:
    names = tools()
    extra = [n for n in installed(shims_dir) if n not in names]
    good = True  # every installed shim ok; one not installed is reported, not a failure
    width = max(len(n) for n in (*names, *extra))
    for name in (*names, *extra):
        state, detail = status(name, shims_dir, path_var)
        print(f"{name:{width}}  {describe(state, detail)}")
        good = good and state in ("ok", "missing", "no real tool")  # only a shadowed shim fails
    if not installed(shims_dir):
        print(f"sbox: no shims in {shims_dir}; run: sbox shims install", file=sys.stderr)
        return 1
    where = position(shims_dir, path_var)
    if where != "first":
        print(f"sbox: {shims_dir} is {'not first' if where == 'later' else 'not'} on PATH; "
              f"run: {activation_hint(env)}", file=sys.stderr)
    return 0 if good else 1
