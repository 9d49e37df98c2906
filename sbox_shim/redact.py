"""The host's system-wide tool configuration, as a sandbox without credentials reads it.

/etc/npmrc, /etc/pip.conf, /etc/gitconfig and their kin (CONFIGS) configure every npm, pip and git
on the machine, and a machine set up for a private registry often keeps its token there: npm's
`//host/:_authToken=`, an index URL `https://user:token@host/simple`, git's `http.extraHeader =
Authorization: ...` or `url."https://token@host/".insteadOf`. Package code runs in sandboxes
that get no credentials, so it reads these files with the credentials taken out; every other
setting stays, so npm, pip and git behave as they do on the host. Only the built-in download
phases, which talk to the registry themselves, get the files as they are.

Line by line, without a parser (a config file sbox cannot parse must still lose its token):
- a URL's user information (`scheme://user:secret@`) is removed, in values and section names;
- a setting whose name says credential (`_authToken`, `_auth`, `_password`, `username`, npm's
  `key`/`keyfile`/`certfile`, git's `extraHeader` and credential `helper`, anything with TOKEN,
  SECRET, PASSWORD, ... in it) is removed, with its continuation lines; so is any line that
  carries an `Authorization` header, and every comment (a commented-out token is still one).

Lean: it runs on the warm path, with built-in modules only.
"""
from __future__ import annotations

# The system's: npm's global config ($PREFIX/etc/npmrc for the prefixes npm is installed under),
# pip's site-wide configs, git's system config (/etc, or $PREFIX/etc for a git built elsewhere).
# A mounted tool prefix's etc/npmrc is one too (layout.system_configs).
CONFIGS = ("/etc/npmrc", "/etc/pip.conf", "/etc/gitconfig", "/etc/xdg/pip/pip.conf",
           "/usr/etc/npmrc", "/usr/etc/gitconfig", "/usr/local/etc/npmrc", "/usr/local/etc/gitconfig")

_WORDS = ("token", "secret", "password", "passwd", "passphrase", "credential", "apikey", "api_key",
          "api-key", "private", "_auth", "auth_", "auth-", "otp")
_NAMES = {"_auth", "username", "key", "keyfile", "certfile", "extraheader", "helper", "email", "auth"}


def text(data: bytes) -> bytes:
    """`data` (a config file's bytes) without its credentials."""
    out: list[str] = []
    dropping = -1  # the indentation of a removed setting whose continuation lines go with it
    continued = False  # the line before ended with a backslash (git's continuation)
    for line in data.decode("utf-8", "surrogateescape").splitlines(keepends=True):
        body = line.rstrip("\r\n")
        indent = len(body) - len(body.lstrip())
        ends = body.endswith("\\")
        if continued or (dropping >= 0 and body.strip() and indent > dropping):
            continued = ends
            continue  # part of a removed setting
        dropping, continued = -1, False
        if body.lstrip().startswith(("#", ";")):
            continue  # a comment configures nothing, and may hold an old token
        if _credential(body):
            dropping, continued = indent, ends
            continue
        out.append(_strip_userinfo(line))
    return "".join(out).encode("utf-8", "surrogateescape")


def _credential(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped[0] == "[":
        return False
    if "authorization" in stripped.lower():
        return True
    eq = stripped.find("=")
    colon = stripped.find(":")
    if eq < 0 and colon > 0 and "//" not in stripped[:colon + 3]:
        eq = colon  # pip's ini also takes `name: value`
    if eq < 0:
        return False  # not a setting: a value's continuation line, or a bare git boolean
    name = stripped[:eq].strip().strip("\"'").lower()
    name = name.rsplit(":", 1)[-1]  # npm's `//host/path/:_authToken`
    return name in _NAMES or any(word in name for word in _WORDS)


def _strip_userinfo(line: str) -> str:
    """Every `scheme://userinfo@host` in the line as `scheme://host`."""
    out, at = [], 0
    while True:
        found = line.find("://", at)
        if found < 0:
            out.append(line[at:])
            return "".join(out)
        start = found + 3
        end = start
        while end < len(line) and line[end] not in "/ \t\r\n\"'?#;,]":
            end += 1
        authority = line[start:end]
        out.append(line[at:start])
        out.append(authority.rsplit("@", 1)[-1] if "@" in authority else authority)
        at = end
