"""The Python a pip command runs in: the venv its real pip belongs to, the base interpreter that
venv needs (checked, not trusted: pyvenv.cfg is a file a sandbox could have written), and the pip
that downloads with the network, which is never the venv's."""
from __future__ import annotations

import os

from sbox_shim.ecosystems import Context, read_text, sandbox_writable
from sbox_shim.errors import UsageError
from sbox_shim.lean import inside
from sbox_shim.plan import SANDBOX_DIR, Mount

FETCH_STEP = f"{SANDBOX_DIR}/pip"  # where pip_fetch.py is mounted in the download sandbox
INSTALL_STEP = f"{SANDBOX_DIR}/pip-install"  # where pip_install.py is mounted in the one-phase install
SYSTEM = ("/usr/", "/bin/", "/lib/", "/lib64/", "/etc/")


def environment(ctx: Context) -> tuple[str | None, tuple[Mount, ...]]:
    """The venv the real pip belongs to, and the base interpreter prefixes it needs (read-only mounts)."""
    candidates = []
    if ctx.real_tool:
        candidates.append(os.path.dirname(os.path.dirname(os.path.join(ctx.cwd, ctx.real_tool))))
    if ctx.env.get("VIRTUAL_ENV"):
        candidates.append(ctx.env["VIRTUAL_ENV"])
    for venv in candidates:
        venv = os.path.normpath(venv)
        cfg = os.path.join(venv, "pyvenv.cfg")
        if os.path.isfile(cfg):
            return venv, _base_prefixes(cfg, ctx)
    return None, ()


def writable_venv(venv: str) -> tuple[Mount, ...]:
    """A venv outside the project, writable for an install, with its pyvenv.cfg read-only: the
    file by which sbox knows the directory for a venv (whose `bin` no step with the network, and
    no `mode: host` command, takes a program from), which an install phase must not delete."""
    cfg = os.path.join(venv, "pyvenv.cfg")
    pinned = (Mount(cfg, cfg),) if os.path.isfile(cfg) and not os.path.islink(cfg) else ()
    return (Mount(venv, venv, readonly=False), *pinned)


def _base_prefixes(cfg: str, ctx: Context) -> tuple[Mount, ...]:
    """The base interpreter's prefixes a venv's pyvenv.cfg names, checked rather than trusted (a
    sandbox that wrote the venv wrote this file): each lies outside the venv, the project and sbox's
    cache, as written and resolved, and reaches no link planted there (`_resolve`); what it resolves
    to must be a Python installation (`_is_python_prefix`). The resolved prefix is what is mounted
    (at the written path too, which the venv's `python` link names), so a rewritten pyvenv.cfg
    cannot have sbox mount `~/.ssh` or `~/.local`."""
    values: dict[str, str] = {}
    for line in read_text(cfg).splitlines():
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip().lower()] = value.strip()
    places = _places(os.path.dirname(os.path.abspath(cfg)), ctx)
    found = []
    for key in ("home", "executable", "base-executable"):
        setting = values.get(key, "")
        if not setting.startswith("/"):
            continue
        directory = os.path.normpath(setting if key == "home" else os.path.dirname(setting))
        real = _resolve(directory, places)
        if real is None or any(inside(p, q) for p in (directory, real) for q in places):
            raise UsageError(f"{cfg}: {key} = {setting} lies in the venv, the project or sbox's cache, or goes "
                             "through a link there (a sandbox could have written it); recreate the venv (python3 -m venv)")
        why = _untrusted(directory, ctx, os.path.dirname(os.path.abspath(cfg)))
        if why:
            raise UsageError(f"{cfg}: {key} = {setting} {why}; recreate the venv from a Python installed where "
                             "no sandbox writes (python3 -m venv)")
        prefix = os.path.dirname(real) if os.path.basename(real) == "bin" else real
        written = os.path.dirname(directory) if os.path.basename(directory) == "bin" else directory
        if prefix in ("", "/") or (prefix + "/").startswith(SYSTEM) or not os.path.isdir(prefix):
            continue
        if not _is_python_prefix(prefix):
            raise UsageError(f"{cfg}: {key} = {setting} does not name a Python installation; "
                             "recreate the venv (python3 -m venv)")
        found += [Mount(prefix, prefix)] + ([Mount(prefix, written)] if written not in ("", "/", prefix) else [])
    return tuple(dict.fromkeys(found))


def _places(venv: str, ctx: Context) -> tuple[str, ...]:
    """What a sandbox could have written: the venv, the project, sbox's cache; as given and resolved."""
    given = [os.path.normpath(p) for p in (venv, ctx.project_root, ctx.cache_dir) if p]
    return tuple(dict.fromkeys(given + [os.path.realpath(p) for p in given]))


def _resolve(path: str, places: tuple[str, ...]) -> str | None:
    """`path` with every link followed, as realpath does; None if a link on the way lies in one of
    `places` (a link a sandbox could have planted), or the links loop."""
    done, todo, hops = "/", [p for p in path.split("/") if p], 0
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            done = os.path.dirname(done)
            continue
        here = os.path.join(done, name)
        if not os.path.islink(here):
            done = here
            continue
        hops += 1
        if hops > 40 or any(inside(here, p) for p in places):
            return None
        link = os.readlink(here)
        done = "/" if link.startswith("/") else done
        todo = [p for p in link.split("/") if p] + todo
    return done


def _is_python_prefix(prefix: str) -> bool:
    """A Python installation: an interpreter in `bin/` and a standard library in `lib/` (its os.py).
    `~/.local`, whose `lib/python3.X` holds only site-packages, is not one."""
    import glob

    root = glob.escape(prefix)
    return bool(glob.glob(os.path.join(root, "bin", "python3*"))
                and glob.glob(os.path.join(root, "lib", "python3*", "os.py")))


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
    python, own = _own_pip(venv, "pip_fetch.py", ctx)
    return ((python, "-I", "-S", FETCH_STEP), (Mount(own, own), Mount(_step("pip_fetch.py"), FETCH_STEP)),
            {"SBOX_PIP_HOME": os.path.dirname(own)})


def installer(venv: str, ctx: Context) -> tuple[tuple[str, ...], tuple[Mount, ...], dict[str, str]] | None:
    """sbox's one-phase install step (pip_install.py, mounted as `/.sbox/pip-install`): sbox's own
    pip on the base interpreter, as `fetcher`, installing into the venv as the venv's pip would.
    None when that step could only fall back: the pip the command runs is not the venv's, the venv
    has its own pip.conf (which the downloading pip does not read), or the venv's pip is not sbox's
    version (by the name of its dist-info; the step compares the files)."""
    tool = ctx.real_tool and os.path.normpath(os.path.join(ctx.cwd, ctx.real_tool))
    if not tool or os.path.dirname(tool) != os.path.join(venv, "bin"):
        return None
    if os.path.lexists(os.path.join(venv, "pip.conf")):
        return None
    python, own = _own_pip(venv, "pip_install.py", ctx)
    home = os.path.dirname(own)
    info = next((n for n in _names(home) if n.startswith("pip-") and n.endswith(".dist-info")), "")
    values = _settings(os.path.join(venv, "pyvenv.cfg"))
    version = (values.get("version_info") or values.get("version") or "").split(".")
    if not info or len(version) < 2 or not os.path.isdir(
            os.path.join(venv, "lib", f"python{version[0]}.{version[1]}", "site-packages", info)):
        return None
    mounts = (Mount(own, own), Mount(os.path.join(home, info), os.path.join(home, info)),
              Mount(_step("pip_install.py"), INSTALL_STEP))
    return (python, "-I", "-S", INSTALL_STEP), mounts, {"SBOX_PIP_HOME": home, "SBOX_PIP_VENV": venv,
                                                         "SBOX_PIP_TOOL": tool}


def _own_pip(venv: str, step: str, ctx: Context) -> tuple[str, str]:
    """The venv's base interpreter and sbox's own pip package directory, checked to lie where no
    sandbox writes."""
    import importlib.util

    spec = importlib.util.find_spec("pip")
    own = os.path.dirname(spec.origin) if spec and spec.origin else ""
    cfg = os.path.join(venv, "pyvenv.cfg")
    python = _base_python(cfg)
    if not own or not python or any(sandbox_writable(p, ctx, venv) for p in (own, python, _step(step))):
        raise UsageError(f"{venv}: cannot find the venv's base interpreter or sbox's own pip to download "
                         "with (the venv's own pip is not run where the network is); recreate the venv")
    why = _untrusted(python, ctx, venv)
    if why:  # it would run with the network and the index credentials
        raise UsageError(f"{cfg}: home = {_settings(cfg).get('home', '')}: {python} {why}; recreate the venv "
                         "from a Python installed where no sandbox writes (python3 -m venv)")
    return python, own


def _untrusted(path: str, ctx: Context, venv: str) -> str | None:
    """Why a sandbox could have written the base interpreter (or its directory) `path`, or None:
    see trust/written.py. Its looks (a `bin/python3`, a `lib/python3.X/os.py`) prove nothing."""
    import pwd

    from sbox_shim.paths import sbox_dir
    from sbox_shim.trust.written import install_places, python_refusal

    try:
        homes: tuple[str, ...] = (ctx.home, pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        homes = (ctx.home,)
    places = _places(venv, ctx) + tuple(dict.fromkeys(
        p for d in (sbox_dir("state", ctx.env),) if d for p in (d, os.path.realpath(d))))
    return python_refusal(path, places, install_places(ctx.env, homes))


def _step(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def _names(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _settings(cfg: str) -> dict[str, str]:
    lines = (ln.partition("=") for ln in read_text(cfg).splitlines())
    return {k.strip().lower(): v.strip() for k, eq, v in lines if eq}


def _base_python(cfg: str) -> str | None:
    values = _settings(cfg)
    home = values.get("home", "")
    version = (values.get("version_info") or values.get("version") or "").split(".")
    names = ([f"python{version[0]}.{version[1]}"] if len(version) > 1 else []) + ["python3", "python"]
    for name in names:
        path = os.path.join(home, name)
        if home.startswith("/") and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


