"""git's config files read as text, never by running git (git would run what the config names):
sections, a `[section] key = value` on one line, a byte-order mark, quoted values with escapes,
`#` and `;` comments, lines continued by a backslash. A file is read only if it is a regular file
of at most regular.MAX_BYTES, through links as git reads it: a config or an include a sandbox
made a FIFO, /dev/zero or 50 GB must neither hang nor exhaust the guard that checks it. Lean: the
guard's warm path reads it."""
from __future__ import annotations


def settings(path: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of each setting in the file at `path`, in order; the section as
    written in lower case, subsection included (`includeif "gitdir:~/w/"`). Nothing if it cannot
    be read."""
    from sbox_shim.regular import read_regular

    data = read_regular(path, follow=True)
    if data is None:
        return []
    text = data.decode("utf-8", "replace")
    out = []
    section = ""
    for line in _lines(text.lstrip("\ufeff")):
        line = line.strip()
        if line.startswith("["):
            end = line.find("]")
            section = line[1:end].strip().lower() if end > 0 else ""
            line = line[end + 1:].strip() if end > 0 else ""
        if not line or line.startswith(("#", ";")):
            continue
        name, eq, raw = line.partition("=")
        out.append((section, name.strip().lower(), _value(raw) if eq else "true"))
    return out


def repository_configs(gitdirs: tuple[str, ...]) -> list[str]:
    """A repository's config files in the order git reads them (lean.git_dirs's `gitdirs`: the
    worktree's git directory, then the common one): the common `config`, then the worktree's own
    `config.worktree` (`git config --worktree`, read with extensions.worktreeConfig: taken here
    either way; red team 16 set a worktree's core.hooksPath there, and its planted hook ran)."""
    return [d + "/config" for d in reversed(gitdirs)] + [gitdirs[0] + "/config.worktree"] if gitdirs else []


def _lines(text: str) -> list[str]:
    """The file's lines, each one ended by a backslash joined with the next."""
    lines: list[str] = []
    held = ""
    for raw in text.splitlines():
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            held += raw[:-1]
            continue
        lines.append(held + raw)
        held = ""
    return lines + ([held] if held else [])


def _value(raw: str) -> str:
    """A value as git reads it: quotes removed, escapes undone, a comment outside quotes cut."""
    out = []
    quoted = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(raw[i + 1], raw[i + 1]))
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in "#;" and not quoted:
            break
        else:
            out.append(c)
        i += 1
    return "".join(out).strip()
