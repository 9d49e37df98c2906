"""yarn 2 and later ("berry"): where its two phases differ from npm's and yarn classic's.

Berry refuses `--ignore-scripts`; its download phase is `--mode=skip-build` (resolve, fetch, link,
no build step: neither the dependencies' scripts nor the project's own). Its scripts phase is a
second `yarn install`, offline: berry keeps its own record of what it has built
(`.yarn/install-state.gz`), so that install builds what the first one added or changed and
nothing else, the project's `postinstall` included, as a plain `yarn install` would have.

Which yarn runs is decided by what the project says: a `packageManager: yarn@2…` or later, a
`.yarnrc.yml`, or a yarn.lock in berry's format. Nothing else tells them apart without running the
tool, so a project that says none of these gets yarn classic's flags (berry refuses them at once:
the install stops, nothing runs). The other way round, classic would take `--mode` silently and
run the scripts: so the download phase's HOME holds a `.yarnrc` (which classic reads and berry does
not) with `ignore-scripts true`. (Not `YARN_IGNORE_SCRIPTS`: yarn 3 refuses an unknown setting.)
Classic itself refuses a `packageManager: yarn@2…` project.

Berry also packs a git dependency from its sources while it downloads: it clones it and runs its
`yarn install` and `yarn pack`, the dependency's own scripts with them, which `--mode=skip-build`
does not reach (nor `enableScripts`). That would be third-party code with the network and the
registry token, so git has no transport in the download phase (GIT_ALLOW_PROTOCOL): such an
install fails there, and when the project names one, one line says why (the download phase's
hook: `failed`).

Berry's record of what it built lives in `.yarn/install-state.gz`, which `yarn run` on the host also
reads each package's commands from: the scripts phase writes a copy of it, and a third step keeps
the download's file with only that phase's build record (below: the install state). A note of the
last complete install skips the scripts phase when nothing that decides berry's builds changed.
Berry's other installing commands (`remove`, `dedupe`, `workspace NAME add`, `--cwd DIR`) take the
same steps; `unplug` and `workspaces focus`, which cannot be split, are refused.

Berry reads its settings from `.yarnrc.yml` files (the project's: trust inputs; the user's
`~/.yarnrc.yml`, which may hold `npmAuthToken`: the download phase only) and YARN_* variables. Its
cache (the "global folder") is sbox's, one per project: written by the download phase, read-only to
the scripts phase.
"""
from __future__ import annotations

import os
import re

from sbox_shim.ecosystems import Context, read_text
from sbox_shim.plan import File

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterator, Mapping, TextIO

    from sbox_shim.plan import Step

# the download phase: no telemetry; git with no transport (a git dependency's scripts would run)
DOWNLOAD_ENV = {"YARN_ENABLE_TELEMETRY": "0", "GIT_ALLOW_PROTOCOL": "none"}
# the scripts phase: the network off in yarn itself too (a clear error, not a connection refused),
# the lockfile and the cache as the download left them
SCRIPTS_ENV = {"YARN_ENABLE_TELEMETRY": "0", "YARN_ENABLE_NETWORK": "0",
               "YARN_ENABLE_IMMUTABLE_INSTALLS": "1", "YARN_ENABLE_IMMUTABLE_CACHE": "1"}
# what berry's scripts phase writes besides node_modules/ (each only if the download phase left it
# there: layout.py): the packages it unpacks to build them, yarn 2's record of what it built (yarn
# 3 and 4 keep theirs in the install state, which the scripts phase writes in a copy: below). Not
# Plug'n'Play's loader (`.pnp.cjs`, which `yarn run` loads on the host): the download phase wrote
# it, and a build changes nothing in it, so yarn leaves it as it is
BUILT = (".yarn/unplugged/", ".yarn/build-state.yml")

_PACKAGE_MANAGER = re.compile(r"^yarn@(\d+)")
_REGISTRY = re.compile(r"""["']?npm(?:Publish)?RegistryServer["']?\s*:\s*["']?([^"'\s#,}]+)""")


def _upward(start: str, stop: str) -> Iterator[str]:
    """`start` and each directory above it, up to `stop` (or `/`)."""
    here = start
    while True:
        yield here
        if here == stop or os.path.dirname(here) == here:
            return
        here = os.path.dirname(here)


def is_berry(ctx: Context, package_dir: str) -> bool:
    """Does the project say it uses yarn 2 or later: `packageManager`, a `.yarnrc.yml` from the
    package's directory up to the root, or a yarn.lock in berry's format?"""
    for here in _upward(package_dir, ctx.project_root):
        manager = _package_manager(os.path.join(here, "package.json"))
        if manager is not None:
            return manager >= 2
        if os.path.isfile(os.path.join(here, ".yarnrc.yml")):
            return True
        if "\n__metadata:" in "\n" + read_text(os.path.join(here, "yarn.lock"))[:4096]:
            return True
    return False


def project_dir(ctx: Context, package_dir: str) -> str:
    """The directory berry takes for the project from `package_dir`: the nearest one up to the
    root with a yarn.lock; with none, the highest with a package.json (a workspace's root)."""
    highest = package_dir
    for here in _upward(package_dir, ctx.project_root):
        if os.path.isfile(os.path.join(here, "yarn.lock")):
            return here
        if os.path.isfile(os.path.join(here, "package.json")):
            highest = here
    return highest


_CONSTRAINTS = re.compile(r"""["']?enableConstraintsChecks["']?\s*:\s*["']?(?:true|1)""", re.I)


def rc_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """berry's configuration files under another name than `.yarnrc.yml` (YARN_RC_FILENAME)."""
    name = env.get("YARN_RC_FILENAME", "")
    return (name,) if name and "/" not in name and name not in (".yarnrc", ".yarnrc.yml") else ()


def constraints_off(ctx: Context, project: str) -> dict[str, str]:
    """The download phase's override of yarn 4's constraints checks, where they could be on. With
    `enableConstraintsChecks`, `yarn install` loads the project's `yarn.config.cjs`, and what it
    requires (`@yarnpkg/types`, as yarn's docs begin it: a package in node_modules, which the last
    scripts phase could write), in its own process: in the download phase, the network and the
    registry token with it (red team 33). So they run in the scripts phase alone, offline. Set only
    where the setting is on (in a configuration from the project up to `/`, the user's, the
    environment) or the project says yarn 4 or later: yarn 3 refuses a setting it does not know."""
    names = (".yarnrc.yml", *rc_names(ctx.env))
    texts = [read_text(os.path.join(d, n)) for d in (*_upward(project, "/"), ctx.home) for n in names]
    value = next((v for k, v in ctx.env.items() if k.upper() == "YARN_ENABLE_CONSTRAINTS_CHECKS"), "")
    on = value.lower() in ("1", "true") or any(_CONSTRAINTS.search(t) for t in texts)
    major = _package_manager(os.path.join(project, "package.json"))
    return {"YARN_ENABLE_CONSTRAINTS_CHECKS": "0"} if on or (major or 0) >= 4 else {}


def workspace_dirs(root: str) -> list[str]:
    """The workspaces the package.json of berry's project names (trust.gate reads them so)."""
    from sbox_shim.trust.gate import workspaces

    return [os.path.dirname(p) for p in workspaces(os.path.join(root, "package.json"))]


def _package_manager(path: str) -> int | None:
    text = read_text(path)
    if "packageManager" not in text:
        return None
    import json  # only for a package.json that names one

    try:
        value = json.loads(text).get("packageManager")
    except (ValueError, AttributeError):
        return None
    found = _PACKAGE_MANAGER.match(value) if isinstance(value, str) else None
    return int(found.group(1)) if found else None


def download(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The user's command with the build step skipped: any `--mode` of theirs but `update-lockfile`
    (which links nothing, so builds nothing) gives way to `--mode=skip-build`."""
    if _mode(argv) == "update-lockfile":
        return argv
    out: list[str] = []
    words = iter(argv)
    for arg in words:
        if arg == "--mode":
            next(words, "")
        elif not arg.startswith("--mode="):
            out.append(arg)
    return (*out, "--mode=skip-build")


def _mode(argv: tuple[str, ...]) -> str:
    """The user's `--mode`, `--mode=X` or `--mode X` (the last one, as yarn takes it)."""
    found = ""
    for i, arg in enumerate(argv):
        if arg.startswith("--mode="):
            found = arg[len("--mode="):]
        elif arg == "--mode" and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def builds(argv: tuple[str, ...]) -> bool:
    """Is there a build step for the scripts phase to run: not when the user skips it themselves
    (`--mode skip-build`) or links nothing (`--mode update-lockfile`)?"""
    return _mode(argv) not in ("skip-build", "update-lockfile")


def classic_off(home: str) -> File:
    """yarn classic's scripts off, in a file berry does not read: the sandbox's `~/.yarnrc`."""
    return File(os.path.join(home, ".yarnrc"), "ignore-scripts true\n")


def scripts(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The scripts phase's `yarn install`, in the directory the user's `--cwd` names."""
    at = _cwd_option(argv)
    return (argv[0], *(("--cwd", at) if at is not None else ()), "install")


# Berry's commands that install besides `install`, `add` and `up`: each takes `--mode`, so each goes
# through the two phases as they do. `workspace NAME CMD` runs CMD in a workspace. Those that
# install and take no `--mode` (`unplug`, `workspaces focus`) cannot be split: refused, with the
# remedy (run in a writable project as they were, their packages' scripts could plant what `yarn
# run` on the host runs: red team 36).
ALSO_INSTALL = {"remove", "dedupe"}
UNSPLIT = {"unplug": "add the package to dependenciesMeta (unplugged: true) in package.json and run `yarn install`",
           "workspaces focus": "run `yarn install`"}


def installing(argv: tuple[str, ...], sub: str) -> str:
    """The subcommand to plan berry's `argv` as: `install` for each of ALSO_INSTALL, the command
    after `workspace NAME`; a UsageError for one that installs but cannot be split."""
    words, skip = [], False
    for word in argv[1:]:
        if skip or word.startswith("-"):
            skip = word == "--cwd" and not skip
            continue
        words.append(word)
    if sub == "workspace" and len(words) >= 3:
        sub = words[2]
    name = "workspaces focus" if sub == "workspaces" and words[1:2] == ["focus"] else sub
    if name in UNSPLIT:
        from sbox_shim.errors import UsageError

        raise UsageError(f"yarn {name} installs with the build step, which sbox cannot run apart from the download "
                         f"(it takes no --mode): {UNSPLIT[name]}, which sbox runs in two phases")
    return "install" if sub in ALSO_INSTALL else sub


def _cwd_option(argv: tuple[str, ...]) -> str | None:
    """The value of yarn's own `--cwd` (before the subcommand), if given."""
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--cwd" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--cwd="):
            return arg[len("--cwd="):]
        if not arg.startswith("-"):
            return None
    return None


def cwd_of(argv: tuple[str, ...], ctx: Context) -> str:
    """The directory yarn runs in: the user's `--cwd` if it lies in the project, else where sbox was
    called (a `--cwd` outside the project: yarn finds no project there that sbox mounts)."""
    at = _cwd_option(argv)
    if at is None:
        return ctx.cwd
    chosen = os.path.normpath(os.path.join(ctx.cwd, at))
    return chosen if (chosen + "/").startswith(ctx.project_root.rstrip("/") + "/") else ctx.cwd


def user_config(ctx: Context) -> list[str]:
    """The user's `~/.yarnrc.yml` (berry's home configuration, where `npmAuthToken` lives)."""
    paths = [os.path.join(ctx.home, n) for n in (".yarnrc.yml", *rc_names(ctx.env))]
    return [p for p in paths if os.path.isfile(p)]


def project_configs(ctx: Context, package_dir: str) -> list[str]:
    """The `.yarnrc.yml` files berry reads in the project, from the package's directory up."""
    names = (".yarnrc.yml", *rc_names(ctx.env))
    paths = [os.path.join(d, n) for d in _upward(package_dir, ctx.project_root) for n in names]
    return [p for p in paths if os.path.isfile(p)]


def registries(texts: list[str], env: Mapping[str, str] | None) -> list[str]:
    """The registry URLs berry's settings name (`npmRegistryServer`, scoped or not, and
    `npmPublishRegistry`); with `env`, YARN_NPM_REGISTRY_SERVER too."""
    urls = [m for text in texts for m in _REGISTRY.findall(text)]
    if env is not None:
        urls += [v for k, v in env.items() if k.upper() in ("YARN_NPM_REGISTRY_SERVER", "YARN_NPM_PUBLISH_REGISTRY")]
    return urls


def passthrough(ctx: Context, download: bool) -> tuple[str, ...]:
    """The caller's YARN_* variables: all of them in the download phase, none naming a credential in
    the scripts phase."""
    from sbox_shim.environment import is_secret

    names = sorted(k for k in ctx.env if k.upper().startswith("YARN_"))
    return tuple(names if download else (k for k in names if not is_secret(k) and "AUTH" not in k.upper()))


_GIT = re.compile(r"^(?:git\+|git://|git@|github:|gitlab:|bitbucket:|[\w.-]+/[\w.-]+(?:#.*)?$)|\.git(?:#.*)?$")
_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "resolutions")


def git_dependencies(package_dir: str) -> list[str]:
    """The dependencies of `package_dir`'s package.json whose range names a git repository (berry
    builds them from their sources, their scripts with it, as it downloads)."""
    import json

    try:
        manifest = json.loads(read_text(os.path.join(package_dir, "package.json")) or "{}")
    except ValueError:
        return []
    out: list[str] = []
    for field in _FIELDS:
        deps = manifest.get(field) if isinstance(manifest, dict) else None
        if isinstance(deps, dict):
            out += [n for n, r in deps.items() if isinstance(r, str) and _GIT.search(r) and not r.startswith("npm:")]
    return list(dict.fromkeys(out))


# The install state: yarn 2+'s scripts phase must write `.yarn/install-state.gz` (its record of what
# it built), and `yarn run`, `exec` and `bin` on the host take each package's `bin` from that file
# (red team 34: a postinstall pointed one at its own file, which the user's next `yarn build` ran
# unsandboxed). So the scripts phase never writes the project's file: its hook copies the file as
# the download phase wrote it (only yarn ran there) into this run's own directory (scratch.py),
# twice, and binds one copy over the project's file for the scripts phase to write (red team 35:
# a file that phase wrote reached the project, for as long as a padded one took to copy, before
# anything undid it). A third step, offline, writes the project's file: the other copy with only the
# scripts phase's build record merged in (yarn_state.js, which parses what a script could have
# written in a sandbox, never on the host), by a node that no sandbox could have written. When the
# scripts phase left its copy as it was, that step is skipped.
STATE = ".yarn/install-state.gz"
KEPT, WRITTEN = "install-state.gz", "scripts-install-state.gz"  # the copies' names in the run's directory
UNCHANGED = "nothing to build: yarn's install state, yarn, node and the built packages' places are as the last " \
            "complete install left them"
_STATE_PATH = re.compile(r"""^\s*["']?installStatePath["']?\s*:""", re.M)


def state_step(ctx: Context, here: str, run: str, noted: bool = True) -> tuple[tuple[str, ...], tuple[str, ...], File]:
    """The scripts phase's hook, the state step's command and the script it runs, for berry's
    project `here` and the run's directory `run` (scratch.py); without `noted` (`yarn rebuild`,
    which builds whatever the note says), no note."""
    import shutil

    from sbox_shim.kept import digest
    from sbox_shim.plan import YARN_STATE
    from sbox_shim.trust.written import network_path

    path = os.path.join(here, STATE)
    note = os.path.join(ctx.cache_dir, "yarn-built", digest(here.encode("utf-8", "surrogateescape"))[:32]) \
        if noted else ""
    with open(os.path.join(os.path.dirname(__file__), "yarn_state.js"), encoding="utf-8") as f:
        script = File(YARN_STATE, f.read())
    # node from a PATH entry no sandbox could have filled (not the project's node_modules/.bin)
    node = shutil.which("node", path=network_path(ctx.env.get("PATH", os.defpath),
                                                 (ctx.project_root, ctx.cache_dir))) or "node"
    argv = ("env", node, YARN_STATE, os.path.join(run, KEPT), os.path.join(run, WRITTEN), path)
    return ("yarn", "scripts", path, run, note), argv, script


def moved_state(ctx: Context, here: str) -> str | None:
    """Where the project's settings move yarn's install state (`installStatePath`,
    YARN_INSTALL_STATE_PATH), if they do: the file sbox keeps is `.yarn/install-state.gz`."""
    if any(k.upper() == "YARN_INSTALL_STATE_PATH" for k in ctx.env):
        return "YARN_INSTALL_STATE_PATH"
    names = (".yarnrc.yml", *rc_names(ctx.env))
    for place in [os.path.join(d, n) for d in (*_upward(here, "/"), ctx.home) for n in names]:
        if _STATE_PATH.search(read_text(place)):
            return f"installStatePath in {place}"
    return None


# The hook of berry's steps (hooks.py): `step.hook` is ("yarn", "download", git dependencies...),
# ("yarn", "scripts", the state file, the run's directory, the note) or ("yarn", "state", the same).
#
# The note (a file in sbox's cache, which no sandbox mounts, one per berry project) holds what
# decided the last complete install's builds: the install state as that install left it, and which
# yarn and node ran it (node's version is in every build's hash), and the places builds live (the
# unplugged packages, node_modules, Plug'n'Play's loader). When the download phase leaves all of
# that as the note has it, berry would go by the record that install's scripts phase left: the
# scripts phase would start yarn (half a second) to build what that record does not cover, which
# for a complete install is nothing but a build berry retries every time (a failed optional one, or
# one a package kept out of the record: README), so it and the state step are skipped. A failed
# step removes the note: the next install tries its builds again. The note only ever skips a phase
# of package code; what it says cannot make anything run.
def before(state: dict[str, object] | None, step: Step, err: TextIO) -> tuple[object, Step | None, str]:
    held = dict(state or {})
    role = held["at"] = step.hook[1]
    if role == "download":
        held["git"] = step.hook[2:]
        return held, step, ""
    path, run, note = step.hook[2:5]
    if role == "scripts":
        held["note"] = note
        held["search"] = dict(step.env).get("PATH", "")
        noted = _read_note(note) if note else None
        if noted is not None and noted == _fingerprint(path, str(held["search"])):  # no copies needed then
            held["unchanged"] = True
            return held, None, UNCHANGED
        held["kept"] = _keep(path, os.path.join(run, KEPT), err)
        if held["kept"] is None:
            return held, step, ""
        import shutil

        from sbox_shim.plan import Mount

        shutil.copyfile(os.path.join(run, KEPT), os.path.join(run, WRITTEN))  # the run's own: no link there

        # the scripts phase writes its own copy, bound over the project's file
        return held, step.replace(mounts=(*step.mounts, Mount(os.path.join(run, WRITTEN), path, readonly=False))), ""
    if held.get("unchanged"):
        return held, None, UNCHANGED
    if not held.get("kept"):
        return held, None, "the download phase left yarn no install state to keep"
    if _same(os.path.join(run, WRITTEN), os.path.join(run, KEPT)):
        return held, None, "the scripts phase left yarn's install state as the download wrote it"
    return held, step, ""


def likely(step: Step) -> bool:
    """Never worth starting early (docker): the scripts phase's copy of the state is bound at its
    turn (a container started before it would be thrown away), and the state step seldom runs."""
    return False


def done(state: object) -> None:
    """The install is complete: the note says what decided its builds."""
    if not isinstance(state, dict) or not state.get("note") or not state.get("kept") or state.get("unchanged"):
        return  # no note to write, or the one there says it all
    note, found = str(state["note"]), _fingerprint(str(state["kept"][0]), str(state.get("search", "")))
    if found is None:
        _remove(note)
        return
    from sbox_shim.kept import write_bytes

    try:
        write_bytes(note, found.encode(), prune_old=False)
    except OSError:
        pass


def _fingerprint(path: str, search: str) -> str | None:
    """What decides berry's builds in the project of the state file `path` (see the note), as a
    digest; None without a state file. `search`: the scripts phase's PATH (which yarn and node)."""
    import shutil

    from sbox_shim.environment import is_secret
    from sbox_shim.kept import hasher

    try:
        fd = _open_state(path)
    except OSError:
        return None
    h = hasher()
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    here = os.path.dirname(os.path.dirname(path))
    tools = [shutil.which(tool, path=search) or tool for tool in ("yarn", "node")]
    tools.append(os.path.join(os.path.expanduser("~"), ".yarnrc.yml"))
    # the places builds live, and what says which packages build (a workspace's new postinstall
    # changes no install state), yarn's settings and plugins
    places = [os.path.join(here, p) for p in _PLACES] + [os.path.join(w, "package.json") for w in workspace_dirs(here)]
    for place, follow in [(t, True) for t in tools] + [(p, False) for p in places]:
        try:
            st = os.stat(place, follow_symlinks=follow)
            h.update(f"\0{place}:{st.st_mode}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\0{place}:-".encode())
    settings = sorted((k, v) for k, v in os.environ.items()
                      if k.upper().startswith("YARN_") and not is_secret(k) and "AUTH" not in k.upper())
    h.update(repr(settings).encode("utf-8", "surrogateescape"))
    return str(h.hexdigest())


_PLACES = (".yarn/unplugged", "node_modules", "node_modules/.yarn-state.yml", ".pnp.cjs", "package.json", "yarn.lock",
           ".yarnrc.yml", ".yarn/plugins", ".yarn/releases")


def _read_note(note: str) -> str | None:
    from sbox_shim.regular import read_regular

    data = read_regular(note, 256)
    return data.decode("ascii", "replace") if data else None


def _remove(note: str) -> None:
    try:
        os.unlink(note)
    except OSError:
        pass


def failed(state: object, err: TextIO) -> None:
    if not isinstance(state, dict):
        return
    if state.get("note"):
        _remove(str(state["note"]))
    git = state.get("git")
    if state.get("at") == "download" and isinstance(git, tuple) and git:
        err.write(f"sbox: {', '.join(git[:3])}: a git dependency, which yarn 2+ builds from its sources while it "
                  f"downloads, running its own scripts with the network and your registry token: sbox gives git no "
                  f"transport there; depend on a published version or vendor it (a `portal:` or `file:` "
                  f"dependency), or install it once without sbox if you trust its scripts\n")
    kept = state.get("kept")
    if isinstance(kept, tuple):
        path, copy = kept
        _put_back(str(path), str(copy), err)


def _keep(path: str, copy: str, err: TextIO) -> tuple[str, str] | None:
    """Copy the state file as the download phase left it to `copy`: (path, copy), or None if
    there is none (nor, then, a copy for the scripts phase to write: the file stays read-only)."""
    import shutil

    try:
        source = _open_state(path)
    except OSError:
        return None
    try:
        with os.fdopen(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as out, \
                os.fdopen(source, "rb", closefd=False) as f:
            shutil.copyfileobj(f, out)
    except OSError as exc:
        from sbox_shim.errors import SandboxError

        raise SandboxError(f"cannot keep a copy of {path} for after the scripts phase: {exc.strerror or exc}; "
                           f"nothing of the scripts phase ran") from None
    finally:
        os.close(source)
    return path, copy


def _open_state(path: str) -> int:
    """The state file, opened to read: never through a link, in a directory reached through none
    (from `/`: the project's root is a real path), a regular file only; OSError otherwise."""
    import stat

    from sbox_shim.lean import open_along

    directory = open_along("/", os.path.dirname(path))
    try:
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory)
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file", path)
    return fd


def _same(path: str, copy: str) -> bool:
    """Is the file `path` byte for byte the copy?"""
    try:
        fd = _open_state(path)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as now, open(copy, "rb") as was:
        if os.fstat(now.fileno()).st_size != os.fstat(was.fileno()).st_size:
            return False
        while True:
            a, b = now.read(1 << 20), was.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True


def _put_back(path: str, copy: str, err: TextIO) -> None:
    """The copy back in the state file's place (a new file renamed over whatever is there now);
    a state file that cannot be put back is said, never left as the scripts phase wrote it
    unsaid."""
    from sbox_shim.lean import open_along

    if _same(path, copy):
        return
    name = os.path.basename(path)
    temporary = f".{name}.sbox-{os.getpid()}"
    try:
        directory = open_along("/", os.path.dirname(path))
        try:
            with open(copy, "rb") as f:
                data = f.read()
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=directory)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        finally:
            os.close(directory)
    except OSError as exc:
        err.write(f"sbox: {path}: could not put yarn's install state back as the download wrote it "
                  f"({exc.strerror or exc}); remove it before you run `yarn run` on this host\n")
        return
    err.write(f"sbox: {path}: put back as the download wrote it (the install stopped after it was written); "
              f"the next install builds again\n")
