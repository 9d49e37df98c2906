"""Find, read and validate `sbox.yaml`: every error names file, line and key."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from sbox_shim import __version__
from sbox_shim.errors import ConfigError
from sbox_shim.plan import DEFAULT_PIDS
from sbox_shim.registries import parse_entry

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Mapping

CONFIG_NAMES = ("sbox.yaml", ".sbox.yaml")
PARSED_FORMAT = 2  # how _load_yaml reads a document; kept parses of another format are not used
BACKENDS = ("auto", "docker", "bwrap")
_BOOL_WORDS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}




@dataclass(frozen=True)
class Limits:
    pids: int | None = DEFAULT_PIDS
    memory: int | None = None  # bytes
    timeout: float | None = None  # seconds


@dataclass(frozen=True)
class Profile:
    name: str
    mode: str = "sandbox"  # sandbox | host
    network: bool = False
    network_allow: tuple[str, ...] = ()
    network_enforce: str = "proxy"  # proxy | dns
    # true: the project is writable (but for layout.PROTECTED); false: read-only; a tuple: read-only
    # but for these project-relative paths (a trailing "/" names a directory sbox may create)
    writable: bool | tuple[str, ...] = True
    no_new_privileges: bool = True
    image: str | None = None
    env: tuple[str, ...] = ()  # extra variable names passed through from the caller
    env_set: tuple[tuple[str, str], ...] = ()  # `NAME=value` entries: set inside, whatever the caller has
    limits: Limits = field(default_factory=Limits)
    line: int | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    patterns: tuple[str, ...]
    profile: str
    line: int | None = None


@dataclass(frozen=True)
class Config:
    path: str | None  # None: no project config (not opted in)
    root: str  # the project root: the config file's directory, else the working directory
    backend: str = "auto"
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    dispatch: tuple[Rule, ...] = ()
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Profiles named after a built-in phase (`npm:scripts`): what they add to it (env, allow
    # entries, limits, an explicit `network: on` for a scripts phase); see `phase_profile`.
    phases: Mapping[str, Profile] = field(default_factory=dict)


# ---------------------------------------------------------------- discovery


def find_config(start: str) -> str | None:
    """Walk up from `start` to the first opt-in file: sbox.yaml, .sbox.yaml, [tool.sbox]."""
    found = opt_in_files(start)
    return found[0] if found else None


def opt_in_files(start: str) -> list[str]:
    """Every opt-in file from `start` up to `/`, nearest first. Each needs the user's trust: a
    sandbox that could write a project could plant one in any directory of it. Two in one
    directory are an error, not a preference."""
    here = os.path.abspath(start)
    out = []
    while True:
        names = [os.path.join(here, n) for n in CONFIG_NAMES if os.path.isfile(os.path.join(here, n))]
        pyproject = os.path.join(here, "pyproject.toml")
        if os.path.isfile(pyproject) and _has_tool_sbox(pyproject):
            names.append(pyproject)
        if len(names) > 1:
            listed = " and ".join(os.path.basename(n) for n in names)
            raise ConfigError(names[0], None, "", f"{listed} both opt this directory in; keep one of them")
        out += names
        parent = os.path.dirname(here)
        if parent == here:
            return out
        here = parent


def consulted(cwd: str, env: Mapping[str, str], explicit: str | None = None) -> list[str]:
    """Every file whose content or presence decides `load(cwd, env, explicit)` and its trust: the
    plan cache watches them. The user file, then the candidates of every directory up to `/`."""
    paths = [user_config_path(env)]
    if explicit:
        paths.append(explicit)
    here = os.path.abspath(cwd)
    while True:
        paths += [os.path.join(here, name) for name in (*CONFIG_NAMES, "pyproject.toml")]
        parent = os.path.dirname(here)
        if parent == here:
            return paths
        here = parent


def _has_tool_sbox(path: str) -> bool:
    from sbox_shim.trust.files import read_regular

    data = read_regular(path)
    return data is not None and any(line.strip().startswith(b"[tool.sbox") for line in data.splitlines())


# ---------------------------------------------------------------- reading


class _Doc:
    """A loaded document: plain values plus the line of every key path."""

    def __init__(self, path: str, data: Any, lines: dict[tuple[str, ...], int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def error(self, keys: tuple[str, ...], message: str) -> ConfigError:
        line = None
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                line = self.lines[keys[:n]]
                break
        return ConfigError(self.path, line, ".".join(keys), message)


def _load_yaml(path: str, text: str) -> _Doc:
    import yaml  # lazily: only the configured path pays for it

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = min(mark.line + 1, max(1, len(text.splitlines()))) if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, line, "", f"malformed YAML: {problem}") from None
    lines: dict[tuple[str, ...], int] = {}
    loader = yaml.SafeLoader("")

    def walk(n: Any, keys: tuple[str, ...]) -> Any:
        lines.setdefault(keys, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                # A key is a name as written: YAML 1.1 would read a profile called `on` or `no` as a boolean.
                key = k.value if isinstance(k, yaml.ScalarNode) else str(loader.construct_object(k))
                if key in out:
                    raise ConfigError(path, k.start_mark.line + 1, ".".join(keys + (key,)), "duplicate key")
                lines[keys + (key,)] = k.start_mark.line + 1
                out[key] = walk(v, keys + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, keys + (str(i),)) for i, v in enumerate(n.value)]
        return loader.construct_object(n)

    data = walk(node, ()) if node is not None else {}
    return _Doc(path, data, lines)


def _load_pyproject(path: str, text: str) -> _Doc:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
    try:
        data = tomllib.loads(text).get("tool", {}).get("sbox", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, "", f"malformed TOML: {exc}") from None
    header = next((i + 1 for i, l in enumerate(text.splitlines()) if l.strip().startswith("[tool.sbox")), None)
    return _Doc(path, data, {(): header} if header else {})


def read_document(path: str, parsed_dir: str | None = None) -> _Doc:
    """The document at `path`. With `parsed_dir`, YAML is parsed once per distinct content and
    kept there (PyYAML's import alone costs about 25 ms)."""
    from sbox_shim.trust.files import read_regular, why_unreadable

    data = read_regular(path)
    try:
        text = data.decode("utf-8") if data is not None else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise ConfigError(path, None, "", f"cannot read: it {why_unreadable(path) or 'is not UTF-8 text'}")
    if path.endswith(".toml"):
        return _load_pyproject(path, text)
    if parsed_dir is None:
        return _load_yaml(path, text)
    from sbox_shim import kept as private

    name = f"{PARSED_FORMAT}\0{__version__}\0{text}"  # a new reading of YAML makes new entries
    kept = os.path.join(parsed_dir, private.digest(name.encode("utf-8", "surrogateescape")) + ".yaml")
    found = private.read_private(kept)
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[1], dict):
        return _Doc(path, found[0], found[1])
    doc = _load_yaml(path, text)
    try:
        private.write_private(kept, (doc.data, doc.lines))
    except (OSError, ValueError):  # not plain data (a YAML timestamp, say), or no room: parse next time
        pass
    return doc


def parsed_dir(env: Mapping[str, str]) -> str | None:
    """Where parsed config files are kept: sbox's state directory (never writable in a sandbox)."""
    if env.get("SBOX_PLAN_CACHE") == "0":
        return None
    from sbox_shim.paths import sbox_dir

    return os.path.join(sbox_dir("state", env), "parsed")


# ---------------------------------------------------------------- validation


def _check_keys(doc: _Doc, keys: tuple[str, ...], value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(keys, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in allowed:
            raise doc.error(keys + (key,), f"unknown key; accepted: {', '.join(allowed)}")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)


def _bool(doc: _Doc, keys: tuple[str, ...], value: Any, accepted: str = "true or false") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.lower()]
    raise doc.error(keys, f"expected {accepted}, got {value!r}")


def _choice(doc: _Doc, keys: tuple[str, ...], value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise doc.error(keys, f"expected one of {' | '.join(choices)}, got {value!r}")
    return str(value)


def _strings(doc: _Doc, keys: tuple[str, ...], value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise doc.error(keys, f"expected a list of strings, got {_kind(value)}")
    return tuple(value)


def _number(doc: _Doc, keys: tuple[str, ...], value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise doc.error(keys, f"expected a positive number, got {value!r}")
    return float(value)


def _memory(doc: _Doc, keys: tuple[str, ...], value: Any) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = str(value).strip().lower().rstrip("b")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise doc.error(keys, f"expected a size such as 512m or 2g, got {value!r}") from None


def _limits(doc: _Doc, keys: tuple[str, ...], value: Any) -> Limits:
    value = _check_keys(doc, keys, value, ("pids", "memory", "timeout"))
    base = Limits()
    return Limits(
        pids=int(_number(doc, keys + ("pids",), value["pids"])) if "pids" in value else base.pids,
        memory=_memory(doc, keys + ("memory",), value["memory"]) if "memory" in value else None,
        timeout=_number(doc, keys + ("timeout",), value["timeout"]) if "timeout" in value else None,
    )


_GLOB = set("*?[]{}")


def _writable(doc: _Doc, keys: tuple[str, ...], value: Any) -> bool | tuple[str, ...]:
    """`writable:` is true, false, or a list of project-relative paths (no `..`, no globs)."""
    if not isinstance(value, list):
        return _bool(doc, keys, value, "true, false or a list of project-relative paths")
    out = []
    for i, raw in enumerate(value):
        key = keys + (str(i),)
        if not isinstance(raw, str) or not raw.strip():
            raise doc.error(key, f"expected a project-relative path such as node_modules/, got {raw!r}")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if raw.startswith("/") or raw.startswith("~"):
            raise doc.error(key, f"expected a path relative to the project root, got {raw!r}")
        if ".." in parts:
            raise doc.error(key, f"'..' is not allowed: the path must stay inside the project, got {raw!r}")
        if _GLOB & set(raw):
            raise doc.error(key, f"globs are not supported; name each path, got {raw!r}")
        if not parts:
            raise doc.error(key, f"names the project root itself; use writable: true, got {raw!r}")
        out.append("/".join(parts) + ("/" if raw.endswith("/") else ""))
    return tuple(dict.fromkeys(out))


PROFILE_KEYS = ("mode", "network", "network_allow", "network_enforce", "writable",
                "no_new_privileges", "image", "env", "limits")


def _allow(doc: _Doc, keys: tuple[str, ...], value: Any) -> tuple[str, ...]:
    """A `network_allow` list: strings, each an entry the allowlist can hold."""
    allow = _strings(doc, keys, value)
    for i, raw in enumerate(allow):
        try:
            parse_entry(raw)
        except ValueError as exc:
            raise doc.error(keys + (str(i),), str(exc)) from None
    return allow


def _profile(doc: _Doc, name: str, value: Any) -> Profile:
    keys = ("profiles", name)
    value = _check_keys(doc, keys, value or {}, PROFILE_KEYS)

    def k(key: str) -> tuple[str, ...]:
        return keys + (key,)

    allow = _allow(doc, k("network_allow"), value.get("network_allow", []))
    network = _bool(doc, k("network"), value.get("network", False), "on or off")
    if allow and not network:
        raise doc.error(k("network_allow"), "has no effect with network: off; set network: on or remove it")
    passed, assigned = _env(doc, k("env"), value.get("env", []))
    return Profile(
        name=name,
        mode=_choice(doc, k("mode"), value.get("mode", "sandbox"), ("sandbox", "host")),
        network=network,
        network_allow=allow,
        network_enforce=_choice(doc, k("network_enforce"), value.get("network_enforce", "proxy"), ("proxy", "dns")),
        writable=_writable(doc, k("writable"), value.get("writable", True)),
        no_new_privileges=_bool(doc, k("no_new_privileges"), value.get("no_new_privileges", True)),
        image=str(value["image"]) if value.get("image") else None,
        env=passed,
        env_set=assigned,
        limits=_limits(doc, k("limits"), value["limits"]) if "limits" in value else Limits(),
        line=doc.lines.get(keys),
    )


def _env(doc: _Doc, keys: tuple[str, ...], value: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """`env:` entries: a NAME passes the caller's variable through; NAME=value sets it inside."""
    passed, assigned = [], []
    for i, entry in enumerate(_strings(doc, keys, value)):
        name, eq, text = entry.partition("=")
        if not name.strip() or name != name.strip():
            raise doc.error(keys + (str(i),), f"expected a variable name or NAME=value, got {entry!r}")
        if eq:
            assigned.append((name, text))
        else:
            passed.append(name)
    return tuple(dict.fromkeys(passed)), tuple(dict(assigned).items())


def _rule(doc: _Doc, name: str, value: Any, profiles: Mapping[str, Profile]) -> Rule:
    keys = ("dispatch", name)
    value = _check_keys(doc, keys, value, ("match", "profile"))
    for required in ("match", "profile"):
        if required not in value:
            raise doc.error(keys, f"missing key {required!r}")
    profile = value["profile"]
    if not isinstance(profile, str):  # `profile: on` is a YAML boolean
        raise doc.error(keys + ("profile",), f"expected a profile name, got {_kind(profile)}; quote it: profile: \"on\"")
    from sbox_shim.phaseprofiles import phase_name

    if profile not in profiles and phase_name(profile):
        raise doc.error(keys + ("profile",), f"{profile!r} configures sbox's built-in phase of that name; "
                                             "a dispatch rule needs a profile of your own")
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        raise doc.error(keys + ("profile",), f"unknown profile {profile!r}; defined: {known}")
    patterns = _strings(doc, keys + ("match",), value["match"])
    if not patterns or any(not p.strip() for p in patterns):
        raise doc.error(keys + ("match",), "expected non-empty command patterns such as \"npm install*\"")
    return Rule(name, patterns, str(profile), doc.lines.get(keys))


def _hosts(doc: _Doc, value: Any) -> dict[str, tuple[str, ...]]:
    value = _check_keys(doc, ("hosts",), value, tuple(value) if isinstance(value, dict) else ())
    out: dict[str, tuple[str, ...]] = {}
    for name, ips in value.items():
        keys = ("hosts", name)
        addresses = _strings(doc, keys, ips)
        for ip in addresses:
            import ipaddress  # here: most configs have no hosts

            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise doc.error(keys, f"expected IP addresses, got {ip!r}") from None
        out[name.lower()] = addresses
    return out


TOP_KEYS = ("version", "backend", "profiles", "dispatch", "hosts")


def parse(doc: _Doc, root: str, base: Config | None = None) -> Config:
    """Validate a document into a Config; `base` (the user-level file) supplies defaults."""
    data = _check_keys(doc, (), doc.data if doc.data is not None else {}, TOP_KEYS)
    if data.get("version", 1) != 1:
        raise doc.error(("version",), f"unsupported version {data['version']!r}; expected 1")
    backend = _choice(doc, ("backend",), data.get("backend", base.backend if base else "auto"), BACKENDS)
    raw_profiles = _check_keys(doc, ("profiles",), data.get("profiles") or {}, tuple(data.get("profiles") or {}))
    profiles = dict(base.profiles) if base else {}
    phases = dict(base.phases) if base else {}
    from sbox_shim.phaseprofiles import phase_name, phase_profile

    for name, v in raw_profiles.items():
        if phase_name(str(name)):
            phases[str(name)] = phase_profile(doc, str(name), v)
        else:
            profiles[str(name)] = _profile(doc, str(name), v)
    raw_rules = _check_keys(doc, ("dispatch",), data.get("dispatch") or {}, tuple(data.get("dispatch") or {}))
    rules = tuple(_rule(doc, str(name), v, profiles) for name, v in raw_rules.items())
    hosts = dict(base.hosts) if base else {}
    hosts.update(_hosts(doc, data.get("hosts") or {}))
    return Config(doc.path, root, backend, profiles, rules, hosts, phases)


def user_config_path(env: Mapping[str, str]) -> str:
    if env.get("SBOX_USER_CONFIG"):
        return env["SBOX_USER_CONFIG"]
    from sbox_shim.paths import user_dir

    return os.path.join(user_dir("config", env), "config.yaml")


def load(cwd: str, env: Mapping[str, str], explicit: str | None = None) -> Config:
    """The effective config for `cwd`: user defaults overlaid by the project file, if any."""
    base = None
    user_path = user_config_path(env)
    kept = parsed_dir(env)
    if os.path.isfile(user_path):
        user = parse(read_document(user_path, kept), cwd)
        base = Config(None, cwd, user.backend, user.profiles, (), user.hosts, user.phases)
    path = explicit or find_config(cwd)
    if path is None:
        return base or Config(None, os.path.abspath(cwd))
    if explicit and not os.path.isfile(explicit):
        raise ConfigError(explicit, None, "", "no such config file")
    return parse(read_document(path, kept), os.path.dirname(os.path.abspath(path)), base)
