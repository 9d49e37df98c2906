"""The host's system-wide tool configuration, as a sandbox without credentials reads it.

/etc/npmrc, /etc/pip.conf, /etc/gitconfig and their kin (configs.py) configure every npm, pip and git
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
  SECRET, PASS, COOKIE, ... in it) is removed, with its continuation lines (an indented ini line;
  git's trailing backslash joins the lines first), also after a section name on the same line
  (`[http] extraHeader = ...`); so is any line that carries an `Authorization` header, and every
  comment (a commented-out token is still one).

The same for the project's git configs (configs.git_configs): `actions/checkout` leaves the CI
job's token in .git/config (`http.https://github.com/.extraheader = AUTHORIZATION: basic ...`),
and a clone over https with a token keeps it in the remote's URL.

Lean: it runs on the warm path, with built-in modules only.
"""
from __future__ import annotations

import posix

_WORDS = ("token", "secret", "pass", "credential", "apikey", "api_key", "api-key", "private", "_auth", "auth_",
          "auth-", "otp", "cookie", "session", "oauth", "signature")
# A URL's query parameter that carries a credential (`?private_token=`, `?auth=`, `?sig=`)
_QUERY_NAMES = {"auth", "key", "sig", "code", "access_token", "id_token"}
_NAMES = {"_auth", "username", "key", "keyfile", "certfile", "extraheader", "helper", "auth"}


def read(path: str, root: str = "") -> bytes:
    """The file at `path` without its credentials, read now: a regular file only, its last
    component not a link (a project's .git/config could be one), at most regular.MAX_BYTES; empty
    for anything else. Below `root` (the project, which another sandbox may be writing), each
    directory on the way is opened without following a link: one swapped for a link meanwhile
    (`sub` -> `~/other-repo`) shows nothing, never what it leads to."""
    from sbox_shim.regular import read_regular

    top = root.rstrip("/")
    if not top or not path.startswith(top + "/"):
        return text(read_regular(path) or b"")
    from sbox_shim.lean import open_along

    head, _, name = path[len(top) + 1:].rpartition("/")
    try:
        fd = open_along(top, head)
    except OSError:
        return b""
    try:
        return text(read_regular(name, dir_fd=fd) or b"")
    finally:
        posix.close(fd)


def text(data: bytes) -> bytes:
    """`data` (a config file's bytes) without its credentials."""
    out: list[str] = []
    dropping = -1  # the indentation of a removed setting whose continuation lines go with it
    for line in _logical(data.decode("utf-8", "surrogateescape")):
        body = line.rstrip("\r\n")
        indent = len(body) - len(body.lstrip())
        if dropping >= 0 and body.strip() and indent > dropping:
            continue  # an ini value's continuation line, part of a removed setting
        dropping = -1
        if body.lstrip().startswith(("#", ";")):
            continue  # a comment configures nothing, and may hold an old token
        header, setting = _split_header(body)
        if _credential(setting):
            if header:  # git's `[http] extraHeader = ...` on one line: the section stays
                out.append(_strip_userinfo(header) + line[len(body):])
            else:
                dropping = indent
            continue
        out.append(_strip_userinfo(line))
    return "".join(out).encode("utf-8", "surrogateescape")


def _logical(text: str) -> list[str]:
    """The lines, each joined with the next where it ends in a backslash (git's continuation;
    the joined line means the same to git, and a credential cannot hide across the break)."""
    lines: list[str] = []
    pending = ""
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if (len(body) - len(body.rstrip("\\"))) % 2:
            pending += body[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _split_header(line: str) -> tuple[str, str]:
    """(`[section "sub"]`, what follows it on the line) for a section line, else ("", line)."""
    stripped = line.lstrip()
    if not stripped.startswith("["):
        return "", line
    quoted = escaped = False
    for i, c in enumerate(stripped):
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True  # `[http "a\"b"]`: the quote is part of the name
        elif c == '"':
            quoted = not quoted
        elif c == "]" and not quoted:
            cut = len(line) - len(stripped) + i + 1
            return line[:cut], line[cut:]
    return line, ""


def _credential(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    lowered = stripped.lower()
    if "authorization" in lowered or "bearer " in lowered:
        return True
    eq = stripped.find("=")
    colon = stripped.find(":")
    if eq < 0 and colon > 0 and "//" not in stripped[:colon + 3]:
        eq = colon  # pip's ini also takes `name: value`
    if eq < 0:
        return False  # not a setting: a value's continuation line, or a bare git boolean
    name = stripped[:eq].strip().strip("\"'").lower()
    name = name.rsplit(":", 1)[-1]  # npm's `//host/path/:_authToken`
    return _names_credential(name)


def _names_credential(name: str) -> bool:
    """A setting's or parameter's name (lower case) that says it holds a credential."""
    return name in _NAMES or any(word in name for word in _WORDS)


def _strip_userinfo(line: str) -> str:
    """Every `scheme://userinfo@host/path?query` in the line as `scheme://host/path?query`, the
    query without a parameter that names a credential (`private_token`, `auth`, `sig`). Not a
    user part with a space, `#` or `;` in it (git would take one between quotes), or a `]`."""
    out, at = [], 0
    while True:
        found = line.find("://", at)
        if found < 0:
            out.append(line[at:])
            return "".join(out)
        start = found + 3
        end = start
        # nor does a quote or a comma: git drops double quotes inside a value, and `u:"TOKEN"@host`,
        # `u:TOK\"EN@host`, `u:TO'KEN@host`, `u:TO,KEN@host` are URLs whose user part holds the
        # token (red teams 11 and 12)
        while end < len(line) and line[end] not in "/ \t\r\n?#;]":
            end += 1
        authority = line[start:end]
        out.append(line[at:start])
        out.append(authority.rsplit("@", 1)[-1] if "@" in authority else authority)
        at = end
        rest = end
        while rest < len(line) and line[rest] not in " \t\r\n\"'#;,]":
            rest += 1
        path, mark, query = line[at:rest].partition("?")
        if mark:
            kept = [p for p in query.split("&") if not _secret_parameter(p.partition("=")[0])]
            out.append(path + ("?" + "&".join(kept) if kept else ""))
            at = rest


def _secret_parameter(name: str) -> bool:
    name = name.lower()
    return name in _QUERY_NAMES or _names_credential(name)
