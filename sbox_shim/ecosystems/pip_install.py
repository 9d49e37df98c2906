"""sbox's one-phase pip install, run in the download sandbox as `python -I -S /.sbox/pip-install install …`.

Installing a wheel runs no package code (no build backend, no setup.py): when every distribution
pip's resolver picks is a wheel, the install completes in the phase that has the network, with one
pip process instead of two. What runs there is sbox's own pip on the venv's base interpreter,
`-I -S`, as in the download step (pip_fetch.py): nothing of the venv or the project is imported or
run (no `.pth`, no sitecustomize, not the venv's pip). pip is made to install as the venv's own pip
would, with the values the venv's Python would have: `sys.prefix` is the venv, `sys.executable` the
interpreter the `#!` line of the venv's pip script names (what entry-point scripts' `#!` lines get),
and the installed distributions pip sees are those on the venv's `sys.path` (its site-packages and
the directories its `.pth` files name, read as text, never run), while imports come from sbox's pip
and the standard library only. So the files written (RECORD, INSTALLER, direct_url.json, scripts)
are the same bytes as the venv's pip writes, given the same pip: this runs only when the venv's pip
is sbox's own, file for file (its RECORD).

Anything that would run code falls back, before pip writes anything to the venv: a distribution
that is not a wheel (an sdist, a directory, a VCS link, a wheel built earlier from an sdist in pip's
cache), an editable, and a venv whose pip differs, which has its own pip.conf (the download phase's
pip does not read it either) or whose `.pth` files change `sys.path` in code.
Falling back prints one line and exits 0 without the mark (`SBOX_PIP_DONE`): the download phase and
the offline install then run as without this step (pip_run.py), with the resolution unchanged.
The mark is made only once pip's install succeeded; a failing pip's exit code is the step's.

Not imported by sbox; stdlib and sbox's own pip only. `SBOX_PIP_HOME`: the directory holding sbox's
pip; `SBOX_PIP_VENV`: the venv; `SBOX_PIP_TOOL`: the venv's pip script the offline phase would run.
"""
from __future__ import annotations

import os
import re
import sys

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn

CAP = 1 << 22  # what is read of a file the venv holds
_CODE_PATH = re.compile(r"sys\s*\.\s*path\b|addsitedir|__import__\(\s*['\"]sys")


def main(argv: list[str]) -> int:
    home, venv, tool, done = (os.environ.get(k, "") for k in ("SBOX_PIP_HOME", "SBOX_PIP_VENV", "SBOX_PIP_TOOL",
                                                               "SBOX_PIP_DONE"))
    executable = interpreter(venv, tool)
    why = ("the venv's pip script does not start with its own python" if executable is None else
           "the venv has its own pip.conf" if os.path.lexists(os.path.join(venv, "pip.conf")) else
           same_pip(home, venv) or "")
    paths = site_paths(venv, os.path.dirname(tool), [p for p in sys.path if p != home]) if not why else None
    if paths is None:
        return fall_back(why or "a .pth file of the venv changes sys.path in code")
    sys.prefix = sys.exec_prefix = venv  # before sysconfig is imported: it reads them once
    sys.executable = str(executable)
    sys.argv = [tool, *argv]
    sys.path.insert(0, home)
    try:
        from pip._internal.cli.main import main as pip_main
        confine(paths)
    except (ImportError, AttributeError) as exc:  # a pip whose insides differ: the two phases
        return fall_back(f"sbox's pip cannot be confined ({exc})")
    code = int(pip_main(argv) or 0)
    if code == 0:
        with open(done, "x"):
            pass
    return code


def fall_back(why: str) -> NoReturn:
    """Leave without the mark: the download phase and the offline install run next. Exits at once
    (pip's own handlers would turn an exception into a traceback), nothing written to the venv."""
    sys.stdout.flush()
    sys.stderr.write(f"sbox: {why}: installing in two phases (download, then install offline)\n")
    sys.stderr.flush()
    os._exit(0)


def interpreter(venv: str, tool: str) -> str | None:
    """The interpreter the `#!` line of the venv's pip script names, if it is the venv's own python
    (`bin/python`, `python3`, `python3.X`): what pip, run through that script, has as sys.executable."""
    if os.path.dirname(tool) != os.path.join(venv, "bin") or os.path.islink(tool) or not os.path.isfile(tool):
        return None
    try:
        with open(tool, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    minor = "python%d.%d" % sys.version_info[:2]
    allowed = {os.path.join(venv, "bin", n) for n in ("python", "python3", minor)}
    named = first[2:] if first.startswith("#!") else ""
    return named if named in allowed else None


def same_pip(home: str, venv: str) -> str | None:
    """Why the venv's pip is not sbox's own (None if it is): their RECORDs must list the same files
    of the `pip` package with the same hashes."""
    own = _record(home)
    theirs = _record(site_packages(venv))
    if own is None or theirs is None:
        return "the venv has no single pip distribution" if own is not None else "sbox's pip has no RECORD"
    return None if own == theirs else "the venv's pip is not sbox's own"


def _record(directory: str) -> frozenset[str] | None:
    try:
        infos = [n for n in os.listdir(directory) if n.startswith("pip-") and n.endswith(".dist-info")]
    except OSError:
        return None
    if len(infos) != 1:
        return None
    text = _read(os.path.join(directory, infos[0], "RECORD"))
    if text is None:
        return None
    return frozenset(ln for ln in text.splitlines() if ln.startswith("pip/") and "/__pycache__/" not in ln)


def site_packages(venv: str) -> str:
    return os.path.join(venv, sys.platlibdir, "python%d.%d" % sys.version_info[:2], "site-packages")


def site_paths(venv: str, script_dir: str, stdlib: list[str]) -> list[str] | None:
    """The venv's Python's sys.path as site.py makes it, without running anything: the script's
    directory, the standard library, the user site and the base site-packages if pyvenv.cfg includes
    the system's, the venv's site-packages, and the directories its `.pth` files name (import lines
    are code, never run here; None if one changes sys.path)."""
    import site

    system = _system_site(os.path.join(venv, "pyvenv.cfg"))
    prefixes = [venv] + ([sys.base_prefix] if system else [])
    out = [script_dir] + stdlib
    dirs = ([site.getusersitepackages()] if system else []) + site.getsitepackages(prefixes)
    for sitedir in dirs:
        if not os.path.isdir(sitedir):
            continue
        out.append(sitedir)
        try:
            names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            found = _pth(sitedir, name)
            if found is None:
                return None
            out += found
    return list(dict.fromkeys(os.path.normcase(os.path.abspath(p)) for p in out))


def _pth(sitedir: str, name: str) -> list[str] | None:
    """The existing directories a .pth file names (site.addpackage's path lines); None if an import
    line touches sys.path."""
    text = _read(os.path.join(sitedir, name))
    if text is None:
        return []
    lines = text.splitlines()
    out = []
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith(("import ", "import\t")):
            if _CODE_PATH.search(line):
                return None
            continue
        path = os.path.join(sitedir, line.rstrip())
        if os.path.exists(path):
            out.append(path)
    return out


def _system_site(cfg: str) -> bool:
    for line in (_read(cfg) or "").splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip().lower() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def _read(path: str) -> str | None:
    """A regular file's text (never a FIFO's or a device's: a planted one would block), capped."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(CAP).decode("utf-8", "replace")


def confine(paths: list[str]) -> None:
    """pip sees the venv's distributions (not this process's sys.path) and falls back before it
    would prepare anything but a wheel from a link (downloading an sdist, cloning, building)."""
    from pip._internal.metadata import select_backend
    from pip._internal.operations.prepare import RequirementPreparer

    environment: Any = select_backend().Environment
    environment.default = classmethod(lambda cls: cls.from_paths(paths))
    linked = RequirementPreparer.prepare_linked_requirement

    def prepare_linked(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        why = needs_build(req)
        if why:
            fall_back(why)
        return linked(self, req, *args, **kwargs)

    def prepare_editable(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        fall_back(f"{req} is editable")

    setattr(RequirementPreparer, "prepare_linked_requirement", prepare_linked)
    setattr(RequirementPreparer, "prepare_editable_requirement", prepare_editable)


def needs_build(req: Any) -> str:
    """Why installing `req` would run package code ("" if it is a wheel from the index or a file)."""
    link, original = getattr(req, "link", None), getattr(req, "original_link", None)
    if link is None or not getattr(link, "is_wheel", False):
        return f"{getattr(link, 'filename', None) or req} is not a wheel"
    if getattr(req, "is_wheel_from_cache", False) or (original is not None and not original.is_wheel):
        return f"{req} would install a wheel pip built earlier from a source distribution"
    return ""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
