"""Allowlist patterns, expansion, resolution and the spec's `sbox plan` line, with no sandbox."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sbox_shim import dispatch
from sbox_shim.build import build_plan
from sbox_shim.config import Config, Profile, Rule
from sbox_shim.host import Host
from sbox_shim.network import allow_line, build_network
from sbox_shim.registries import EXPANSIONS, expand, parse_entry
from sbox_shim.resolve import resolve_all

FAKE_DNS = {
    "registry.npmjs.org": ("104.16.0.1",),
    "npmjs.org": ("104.16.0.2",),
    "www.npmjs.org": ("104.16.0.3", "2606:4700::1"),
}


def fake_resolver(name: str) -> tuple[str, ...]:
    if name in FAKE_DNS:
        return FAKE_DNS[name]
    raise OSError(-2, "Name or service not known")


def test_spec_line_exactly() -> None:
    net, warnings = build_network(True, ["*.npmjs.org"], "proxy", resolver=fake_resolver)
    assert allow_line(net) == (
        "network_allow: [resolved] registry.npmjs.org=104.16.0.1, npmjs.org=104.16.0.2, "
        "www.npmjs.org=104.16.0.3/2606:4700::1; [patterns] *.npmjs.org"
    )
    assert warnings == ()


@pytest.mark.parametrize("family", ["npmjs.org", "yarnpkg.com", "pypi.org", "crates.io", "golang.org",
                                    "rubygems.org", "maven.org", "github.com", "docker.io", "ghcr.io",
                                    "gcr.io", "quay.io", "ecr.aws", "mcr.microsoft.com", "gradle.org"])
def test_every_family_the_spec_names_has_a_table(family: str) -> None:
    assert len(EXPANSIONS[family]) >= 1
    assert expand(parse_entry(f"*.{family}")) == EXPANSIONS[family]


def test_unknown_wildcard_allows_bare_domain_and_warns() -> None:
    net, warnings = build_network(True, ["*.example.org"], "proxy", resolver=lambda n: ("192.0.2.55",))
    assert [n for n, _ in net.pins] == ["example.org"]
    assert any("other subdomains stay blocked" in w for w in warnings)


def test_unresolved_name_is_reported_not_dropped() -> None:
    net, warnings = build_network(True, ["*.npmjs.org", "nothere.example"], "proxy", resolver=fake_resolver)
    assert ("nothere.example", "Name or service not known") in net.unresolved
    assert "[unresolved] nothere.example" in allow_line(net)
    assert any("nothere.example did not resolve" in w for w in warnings)


def test_slow_name_does_not_stall_the_rest() -> None:
    release = threading.Event()

    def resolver(name: str) -> tuple[str, ...]:
        if name == "slow.example":
            release.wait(30)
        return ("192.0.2.9",)

    start = time.monotonic()
    pins, failures = resolve_all(["fast.example", "slow.example", "fast2.example"], resolver=resolver, timeout=0.5)
    release.set()
    assert set(pins) == {"fast.example", "fast2.example"}
    assert "timed out" in failures["slow.example"]
    assert time.monotonic() - start < 10  # a safety net, not a benchmark


def test_dns_enforcement_warns_about_hard_coded_ips() -> None:
    net, warnings = build_network(True, ["registry.npmjs.org"], "dns", resolver=fake_resolver)
    assert net.policy == "dns"
    assert any("hard-coded IP" in w for w in warnings)


def test_static_hosts_and_ports_and_loopback_forwards() -> None:
    net, _ = build_network(True, ["reg.test:4873"], "proxy", static={"reg.test": ("127.0.0.1",)},
                           resolver=fake_resolver)
    assert net.pins == (("reg.test", ("127.0.0.1",)),)
    assert net.ports == (("reg.test", (4873,)),)
    assert net.explicit == ("reg.test",)
    assert net.forwards == (("reg.test", 4873),)


def test_network_off_and_open() -> None:
    assert build_network(False, [], "proxy")[0].policy == "off"
    net, warnings = build_network(True, [], "proxy")
    assert net.policy == "open" and "every host" in warnings[0]


@pytest.mark.parametrize("pattern,line,expected", [
    ("npm install --ignore-scripts*", "npm install --ignore-scripts", True),
    ("npm install --ignore-scripts*", "npm install --ignore-scripts --save-dev x", True),
    ("npm install --ignore-scripts*", "npm install", False),
    ("npm rebuild*", "npm rebuild", True),
    ("npm*", "npx foo", False),
    ("pip install *", "pip install -r requirements.txt", True),
    ("a.b", "axb", False),  # only * is special
])
def test_pattern_semantics(pattern: str, line: str, expected: bool) -> None:
    assert dispatch.pattern_matches(pattern, line) is expected


def _host(tmp_path: Path) -> Host:
    return Host(uid=1000, gid=1000, user="dev", home="/home/dev-not-here", cwd=str(tmp_path),
                env={"PATH": "/usr/bin:/bin", "NPM_TOKEN": "secret", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x"},
                shim_dirs=(), python="/usr/bin/python3", python_prefix="/usr",
                package_dir="/opt/sbox/sbox_shim", cache_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "s"))


def _spec_config(tmp_path: Path) -> Config:
    download = Profile("download", network=True, network_allow=("*.npmjs.org",))
    scripts = Profile("scripts", network=False)
    rules = (Rule("npm-download", ("npm install --ignore-scripts*",), "download"),
             Rule("npm-rebuild", ("npm rebuild*",), "scripts"))
    return Config(str(tmp_path / "sbox.yaml"), str(tmp_path), "docker",
                  {"download": download, "scripts": scripts}, rules)


def which(name: str, path: str, shims: object) -> str:
    return f"/usr/bin/{name}"


def test_dispatch_first_match_wins_and_reason_is_recorded(tmp_path: Path) -> None:
    cfg = _spec_config(tmp_path)
    plan = build_plan(["npm", "install", "--ignore-scripts"], cfg, _host(tmp_path), resolver=fake_resolver, which=which)
    (step,) = plan.steps
    assert step.profile == "download"
    assert "npm-download" in step.reason and "npm install --ignore-scripts*" in step.reason
    assert step.network.policy == "proxy"
    assert step.argv[-3:] == ("npm", "install", "--ignore-scripts")  # wrapped in the egress bridge
    plan = build_plan(["npm", "rebuild"], cfg, _host(tmp_path), resolver=fake_resolver, which=which)
    assert plan.steps[0].profile == "scripts" and plan.steps[0].network.policy == "off"


def test_unmatched_npm_install_uses_builtin_two_phase(tmp_path: Path) -> None:
    plan = build_plan(["npm", "install"], _spec_config(tmp_path), _host(tmp_path), resolver=fake_resolver, which=which)
    assert [s.label for s in plan.steps] == ["download", "scripts"]
    assert "--ignore-scripts" in plan.steps[0].argv and plan.steps[0].network.policy == "proxy"
    assert plan.steps[1].argv == ("env", "node", "/etc/sbox-npm-scripts.js", "npm", "install")
    assert plan.steps[1].network.policy == "off"


def test_phase_profiles_merge_into_the_builtin_phases(tmp_path: Path) -> None:
    from sbox_shim.config import Limits

    npm_scripts = Profile("npm:scripts", env=("FIXTURE_OPTION", "UNSET_ONE"), env_set=(("A", "1"),),
                          limits=Limits(pids=99, timeout=30.0), line=3)
    download = Profile("pnpm:download", network=True, network_allow=("cdn.example",), line=7)
    cfg = Config(str(tmp_path / "sbox.yaml"), str(tmp_path), phases={"npm:scripts": npm_scripts,
                                                                       "pnpm:download": download})
    host = _host(tmp_path)
    host.env.update(FIXTURE_OPTION="1", npm_config_cache="/elsewhere")
    plan = build_plan(["pnpm", "install"], cfg, host, resolver=fake_resolver, which=which)
    fetch, scripts = plan.steps
    # pnpm's own download profile; its scripts phase takes the npm family's.
    assert fetch.profile == "pnpm:download" and "cdn.example" in dict(fetch.network.unresolved)
    assert "FIXTURE_OPTION" not in fetch.environ and fetch.limits.pids == 4096
    assert scripts.profile == "pnpm:scripts" and "npm:scripts" in scripts.reason and "sbox.yaml:3" in scripts.reason
    assert scripts.environ["FIXTURE_OPTION"] == "1" and scripts.environ["A"] == "1"
    assert scripts.network.policy == "off" and scripts.writable == ("node_modules/",)
    assert scripts.limits.pids == 99 and scripts.limits.timeout == 30.0
    assert scripts.declared == ("FIXTURE_OPTION (passed)", "UNSET_ONE (passed; not set)", "A (set)")
    assert not any("network on" in w for w in plan.warnings)


def test_a_scripts_phase_profile_turns_the_network_on_only_explicitly_and_loudly(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path / "sbox.yaml"), str(tmp_path),
                 phases={"npm:scripts": Profile("npm:scripts", network=True, network_allow=("registry.npmjs.org",))})
    plan = build_plan(["npm", "install"], cfg, _host(tmp_path), resolver=fake_resolver, which=which)
    scripts = plan.steps[1]
    assert scripts.network.policy == "proxy" and dict(scripts.network.pins) == {"registry.npmjs.org": ("104.16.0.1",)}
    assert "turns the network on" in scripts.reason
    assert any(w.startswith("npm:scripts: scripts run with the network on") for w in plan.warnings)


def test_env_is_scrubbed_and_home_is_throwaway(tmp_path: Path) -> None:
    host = _host(tmp_path)
    plan = build_plan(["true"], Config(None, str(tmp_path)), host, resolver=fake_resolver, which=which)
    env = plan.steps[0].environ
    assert "NPM_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["LANG"] == "C.UTF-8" and env["HOME"] == host.home and env["SBOX_ACTIVE"] == "1"
    tmpfs = [m for m in plan.steps[0].mounts if m.kind == "tmpfs"]
    assert [m.target for m in tmpfs] == [host.home]
    assert all(not m.source.startswith(host.home) for m in plan.steps[0].mounts if m.kind == "bind")


def test_profile_env_passes_a_named_secret(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path / "sbox.yaml"), str(tmp_path), "docker", {"default": Profile("default", env=("NPM_TOKEN",))})
    plan = build_plan(["true"], cfg, _host(tmp_path), resolver=fake_resolver, which=which)
    assert plan.steps[0].environ["NPM_TOKEN"] == "secret"


def test_protected_paths_are_read_only_mounts(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "sbox.yaml").write_text("version: 1\n")
    plan = build_plan(["true"], _spec_config(tmp_path), _host(tmp_path), resolver=fake_resolver, which=which)
    mounts = {m.target: m for m in plan.steps[0].mounts}
    assert mounts[str(tmp_path)].readonly is False
    assert mounts[str(tmp_path / ".git")].readonly and mounts[str(tmp_path / "sbox.yaml")].readonly
    paths = [m.target for m in plan.steps[0].mounts]
    assert paths.index(str(tmp_path)) < paths.index(str(tmp_path / ".git"))  # parents first


@pytest.mark.parametrize("known", [("registry.npmjs.org",), ("mirror.example",)])
def test_builtin_npm_expansion_is_quiet_when_the_registry_in_use_resolves(tmp_path: Path, known: tuple[str, ...]) -> None:
    """A resolver that knows only the registry itself (issue 11, item 13): no line about the other
    names of the built-in npm table."""
    def resolver(name: str) -> tuple[str, ...]:
        if name in known:
            return ("192.0.2.10",)
        raise OSError(-2, "Name or service not known")

    host = _host(tmp_path)
    if known == ("mirror.example",):
        host = Host(**{**host.__dict__, "env": {**host.env, "npm_config_registry": "https://mirror.example/"}})
    plan = build_plan(["npm", "install"], Config(None, str(tmp_path)), host, resolver=resolver, which=which)
    assert not [w for w in plan.warnings if "did not resolve" in w], plan.warnings


def test_builtin_expansion_that_resolves_nowhere_is_one_line() -> None:
    def resolver(name: str) -> tuple[str, ...]:
        raise OSError(-2, "Name or service not known")

    _, warnings = build_network(True, ["*.npmjs.org", "*.yarnpkg.com"], "proxy", resolver=resolver)
    assert len([w for w in warnings if "did not resolve" in w]) == 1, warnings
    _, warnings = build_network(True, ["*.npmjs.org", "nothere.example"], "proxy", resolver=resolver)
    assert any(w.startswith("nothere.example did not resolve") for w in warnings)
    assert len([w for w in warnings if "did not resolve" in w]) == 2, warnings
