"""Allowlist patterns: validation and the built-in wildcard expansion tables."""
from __future__ import annotations

import re
from dataclasses import dataclass

# `*.<domain>` expands to these names: the registry hosts and CDNs that serve each family.
EXPANSIONS: dict[str, tuple[str, ...]] = {
    # npm / yarn
    "npmjs.org": ("registry.npmjs.org", "npmjs.org", "www.npmjs.org"),
    "npmjs.com": ("registry.npmjs.com", "npmjs.com", "www.npmjs.com"),
    "yarnpkg.com": ("registry.yarnpkg.com", "yarnpkg.com", "repo.yarnpkg.com"),
    # PyPI
    "pypi.org": ("pypi.org", "www.pypi.org", "test.pypi.org"),
    "pythonhosted.org": ("files.pythonhosted.org", "test-files.pythonhosted.org"),
    "python.org": ("pypi.python.org", "www.python.org"),
    # crates.io
    "crates.io": ("crates.io", "index.crates.io", "static.crates.io"),
    "rust-lang.org": ("static.rust-lang.org", "crates-io.s3-us-west-1.amazonaws.com"),
    # Go
    "golang.org": ("proxy.golang.org", "sum.golang.org", "index.golang.org", "golang.org"),
    "go.dev": ("go.dev", "proxy.golang.org", "sum.golang.org"),
    # RubyGems
    "rubygems.org": ("rubygems.org", "index.rubygems.org", "api.rubygems.org"),
    # Maven / Gradle
    "maven.org": ("repo1.maven.org", "repo.maven.org", "search.maven.org", "central.maven.org"),
    "apache.org": ("repo.maven.apache.org", "repository.apache.org"),
    "gradle.org": ("plugins.gradle.org", "services.gradle.org", "downloads.gradle.org"),
    # GitHub
    "github.com": ("github.com", "api.github.com", "codeload.github.com", "objects.githubusercontent.com"),
    "githubusercontent.com": (
        "raw.githubusercontent.com",
        "objects.githubusercontent.com",
        "codeload.githubusercontent.com",
        "pkg-containers.githubusercontent.com",
    ),
    # OCI registries
    "docker.io": ("registry-1.docker.io", "auth.docker.io", "index.docker.io", "docker.io"),
    "docker.com": ("production.cloudflare.docker.com", "registry.docker.com", "hub.docker.com"),
    "ghcr.io": ("ghcr.io", "pkg-containers.githubusercontent.com"),
    "gcr.io": ("gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io", "mirror.gcr.io"),
    "quay.io": ("quay.io", "cdn.quay.io", "cdn01.quay.io", "cdn02.quay.io", "cdn03.quay.io"),
    "ecr.aws": ("public.ecr.aws",),
    "mcr.microsoft.com": ("mcr.microsoft.com", "eastus.data.mcr.microsoft.com", "westus.data.mcr.microsoft.com"),
}

# Each ecosystem's allowlist, as the spec's table gives it.
ECOSYSTEM_ALLOW: dict[str, tuple[str, ...]] = {
    "npm": ("*.npmjs.org", "*.yarnpkg.com"),
    "pip": ("*.pypi.org", "files.pythonhosted.org"),
    "cargo": ("*.crates.io", "static.crates.io"),
    "go": ("proxy.golang.org", "sum.golang.org"),
}

# A wildcard under one of these admits hosts anyone can register or publish on.
OPEN_SUFFIXES = frozenset(
    """
    co.uk org.uk ac.uk gov.uk com.au net.au org.au co.jp ne.jp com.br com.cn com.tw co.nz co.za
    co.in co.kr com.mx com.ar com.tr com.sg com.hk
    github.io gitlab.io pages.dev workers.dev vercel.app netlify.app herokuapp.com fly.dev
    appspot.com web.app firebaseapp.com azurewebsites.net cloudfront.net amazonaws.com
    s3.amazonaws.com blob.core.windows.net ngrok.io ngrok-free.app trycloudflare.com
    repl.co glitch.me onrender.com railway.app surge.sh deno.dev
    """.split()
)

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Entry:
    """One validated `network_allow` entry."""

    pattern: str  # as written, normalised
    host: str  # the name or IP without port; for a wildcard the domain after `*.`
    port: int | None
    wildcard: bool
    is_ip: bool


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in {text!r}")
        return host, int(port)
    return text, None


_DOTTED = frozenset("0123456789.")


def is_ip(text: str) -> bool:
    if ":" not in text and not _DOTTED.issuperset(text):
        return False  # a name (an IPv6 address has a colon, an IPv4 one only digits and dots): no ipaddress to load
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_entry(raw: str) -> Entry:
    """Validate one allowlist entry; ValueError says what is wrong and what is accepted."""
    text = raw.strip().lower().rstrip(".")
    if not text:
        raise ValueError("empty entry; expected a host name such as registry.npmjs.org")
    if text in ("*", "*.*") or text.startswith("*:"):
        raise ValueError(f"{raw!r} would allow every host; name the registries instead, e.g. \"*.npmjs.org\"")
    host, port = _split_port(text)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if "*" in name:
        raise ValueError(f"{raw!r}: '*' is only accepted as a leading '*.' label, e.g. \"*.npmjs.org\"")
    if is_ip(name):
        if wildcard:
            raise ValueError(f"{raw!r}: a wildcard cannot apply to an IP address; list the address itself")
        return Entry(text, name, port, False, True)
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{raw!r} is not a valid host name")
    if wildcard and (len(labels) < 2 or name in OPEN_SUFFIXES):
        raise ValueError(
            f"{raw!r} would allow every site under a public suffix; name the registry's own domain"
        )
    return Entry(text, name, port, wildcard, False)


def expand(entry: Entry) -> tuple[str, ...]:
    """The names an entry admits: a wildcard through the tables, else the bare domain."""
    if not entry.wildcard:
        return (entry.host,)
    return EXPANSIONS.get(entry.host, (entry.host,))


def is_known_wildcard(entry: Entry) -> bool:
    return entry.wildcard and entry.host in EXPANSIONS
