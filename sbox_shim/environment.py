"""The sandbox's environment: the caller's, scrubbed to an allowlist."""
from __future__ import annotations

import re

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Iterable, Mapping

PASSTHROUGH = (
    "LANG", "LANGUAGE", "TERM", "COLORTERM", "TZ", "COLUMNS", "LINES", "NO_COLOR",
    "FORCE_COLOR", "CI", "SOURCE_DATE_EPOCH", "DEBIAN_FRONTEND",
)
PASSTHROUGH_PREFIXES = ("LC_",)
# A package's own install switches (PUPPETEER_SKIP_DOWNLOAD, ELECTRON_SKIP_BINARY_DOWNLOAD,
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD, ...): set on the command line, they reach every phase, as they
# would reach the script directly. Never a credential (see SECRET).
SWITCH = re.compile(r"(^|_)SKIP(_|$)|^CYPRESS_INSTALL_BINARY$|^HUSKY$")
# Names that look like credentials never pass, whatever the allowlist says.
# `npm_config_key` (a client certificate's private key), `npm_config_otp`, `GPG_KEY`: a name ending
# in KEY or KEYFILE, or an OTP, is one too.
SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|_AUTH|AUTH_|CREDENTIAL|API_?KEY|PRIVATE|SESSION|"
                    r"COOKIE|ACCESS_?KEY|_KEY$|_KEYFILE$|(^|_)OTP$|(^|_)PAT$|(^|_)PASS$|(^|_)PW$)", re.I)


_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]+@", re.I)


def has_url_credentials(value: str) -> bool:
    """`https://user:token@host/…`: a URL carrying credentials, anywhere in the value."""
    return bool(_URL_CREDENTIALS.search(value))


def is_secret(name: str) -> bool:
    return bool(SECRET.search(name))


def scrub(
    env: Mapping[str, str],
    *,
    extra: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    allow_secrets: Iterable[str] = (),
) -> dict[str, str]:
    """Keep only allowlisted variables; credential-like names only when named in allow_secrets."""
    names = set(PASSTHROUGH) | set(extra)
    starts = tuple(PASSTHROUGH_PREFIXES) + tuple(prefixes)
    secrets = set(allow_secrets)
    out = {}
    for name, value in env.items():
        if name not in names and not name.startswith(starts) and not SWITCH.search(name):
            continue
        if is_secret(name) and name not in secrets:
            continue
        out[name] = value
    return out
