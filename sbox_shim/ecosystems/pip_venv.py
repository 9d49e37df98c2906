"""The Python a pip command runs in: the venv its real pip belongs to, the base interpreter that
venv needs (checked, not trusted: pyvenv.cfg is a file a sandbox could have written), and the pip
that downloads with the network, which is never the venv's."""
from __future__ import annotations

import os

from sbox_shim.ecosystems import Context, read_text, sandbox_writable
from sbox_shim.errors import UsageError
from sbox_shim.plan import SANDBOX_DIR, Mount

FETCH_STEP = f"{SANDBOX_DIR}/pip"  # where pip_fetch.py is mounted in the download sandbox
SYSTEM = ("/usr/", "/bin/", "/lib/", "/lib64/", "/etc/")


def environment(ctx: Context) -> tuple[str | None, tuple[str, ...]]:
    """The venv the real pip belongs to, and the base interpreter prefixes it needs (read-only)."""
    candidates = []
    if ctx.real_tool:
        candidates.append(os.path.dirname(os.path.dirname(os.path.join(ctx.cwd, ctx.real_tool))))
    if ctx.env.get("VIRTUAL_ENV"):
        candidates.append(ctx.env["VIRTUAL_ENV"])
    for venv in candidates:
        venv = os.path.normpath(venv)
        cfg = os.path.join(venv, "pyvenv.cfg")
        if os.path.isfile(cfg):
            return venv, _base_prefixes(cfg)
    return None, ()


def _base_prefixes(cfg: str) -> tuple[str, ...]:
    """The base interpreter's prefixes a venv's pyvenv.cfg names, checked rather than trusted: each
    must be a real Python installation (a `bin/python3*` or `lib/python3*` in it), so a venv a
    sandbox rewrote cannot have sbox mount `~/.ssh`."""
    values: dict[str, str] = {}
    for line in read_text(cfg).splitlines():
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip().lower()] = value.strip()
    found = []
    for key in ("home", "executable", "base-executable"):
        setting = values.get(key, "")
        if not setting.startswith("/"):
            continue
        directory = setting if key == "home" else os.path.dirname(setting)
        for path in (directory, os.path.realpath(directory)):
            prefix = os.path.dirname(path) if os.path.basename(path) == "bin" else path
            if prefix in ("", "/") or (prefix + "/").startswith(SYSTEM) or not os.path.isdir(prefix):
                continue
            if not _is_python_prefix(prefix):
                raise UsageError(f"{cfg}: {key} = {setting} does not name a Python installation; "
                                 "recreate the venv (python3 -m venv)")
            found.append(prefix)
    return tuple(dict.fromkeys(found))


def _is_python_prefix(prefix: str) -> bool:
    import glob

    return bool(glob.glob(os.path.join(glob.escape(prefix), "bin", "python3*"))
                or glob.glob(os.path.join(glob.escape(prefix), "lib", "python3*")))


def fetcher(venv: str | None, pip: str,
             ctx: Context) -> tuple[tuple[str, ...], tuple[Mount, ...], dict[str, str]]:
    """The pip that runs with the network and the index credentials: never the venv's, whose
    files (a `.pth`, pip itself) a sandbox may have written in an earlier install phase. sbox's
    own pip (outside every project) on the venv's base interpreter, which pyvenv.cfg names and
    `_base_prefixes` checked: the same Python, so the same wheels; `-I -S`, so no site runs. It
    runs through sbox's fetch step (pip_fetch.py, mounted as `/.sbox/pip`), which also fetches the
    build requirements of the sdists it downloaded; the announced command reads `… /.sbox/pip download …`."""
    if not venv:
        return (pip,), (), {}
    import importlib.util

    spec = importlib.util.find_spec("pip")
    own = os.path.dirname(spec.origin) if spec and spec.origin else ""
    python = _base_python(os.path.join(venv, "pyvenv.cfg"))
    step = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip_fetch.py")
    if not own or not python or any(sandbox_writable(p, ctx, venv) for p in (own, python, step)):
        raise UsageError(f"{venv}: cannot find the venv's base interpreter or sbox's own pip to download "
                         "with (the venv's own pip is not run where the network is); recreate the venv")
    return ((python, "-I", "-S", FETCH_STEP), (Mount(own, own), Mount(step, FETCH_STEP)),
            {"SBOX_PIP_HOME": os.path.dirname(own)})


def _base_python(cfg: str) -> str | None:
    values = {k.strip().lower(): v.strip() for k, eq, v in (ln.partition("=") for ln in read_text(cfg).splitlines()) if eq}
    home = values.get("home", "")
    version = (values.get("version_info") or values.get("version") or "").split(".")
    names = ([f"python{version[0]}.{version[1]}"] if len(version) > 1 else []) + ["python3", "python"]
    for name in names:
        path = os.path.join(home, name)
        if home.startswith("/") and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


