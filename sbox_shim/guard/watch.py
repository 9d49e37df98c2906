"""What the persistence guard watches: the names the host runs or reads as code later, and where
they lie: the project's top, each repository, local package and sbox project nested in it, git's
hooks path (the repository's own, the enclosing one's, the user's global one, and what links in
the git directory reach), read from git's config text, never by running git. Pure reading; lean
(posix, no typing at run time): the plan cache's warm path snapshots through it.
"""
from __future__ import annotations

import posix
import stat

from sbox_shim.gitconfig import repository_configs, settings
from sbox_shim.lean import dirname, git_dirs, inside, join, normpath
from sbox_shim.protected import PROTECTED

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import Sequence

    from sbox_shim.plan import Mount

# At the project's top: files the host runs or reads as code later (git hooks and their managers,
# direnv and dotenv, make in all its spellings, editors', dev containers' and agents' tasks).
HOST_EXECUTED = (".husky", ".githooks", ".envrc", ".env", ".env.yarn", ".pre-commit-config.yaml", "Makefile", "makefile",
                 "GNUmakefile", "lefthook.yml", "lefthook.yaml", ".lefthook.yml", ".lefthook.yaml",
                 ".lintstagedrc", ".lintstagedrc.json", ".lintstagedrc.js", ".lintstagedrc.cjs",
                 ".lintstagedrc.mjs", ".lintstagedrc.yaml", ".lintstagedrc.yml", "lint-staged.config.js",
                 "lint-staged.config.cjs", "lint-staged.config.mjs", ".mcp.json", ".devcontainer", ".zed",
                 "mise.toml", ".mise.toml", "mise.local.toml", ".mise.local.toml", ".config/mise.toml",
                 ".config/mise", ".tool-versions", "justfile", "Justfile", ".justfile", "lefthook-local.yml",
                 ".lefthook-local.yml", ".devcontainer.json", ".cursor", ".gemini", ".roo", ".kiro", ".amazonq",
                 ".continue", ".windsurf", "gradlew", "mvnw", ".mvn", "Taskfile.yml", "Taskfile.yaml", "Rakefile",
                 ".bazelrc", "Procfile", ".exrc", ".nvim.lua", ".lazy.lua", ".envrc.local", ".env.local",
                 ".lfsconfig", ".gitconfig", ".gitmodules", "CLAUDE.md", "AGENTS.md", "GEMINI.md", ".clinerules",
                 ".aider.conf.yml", ".pdbrc", ".pdbrc.py", "sitecustomize.py", "usercustomize.py", ".nvimrc",
                 ".vimrc", ".hg", "taskfile.yml", "taskfile.yaml", "Taskfile.dist.yml", "Taskfile.dist.yaml",
                 "taskfile.dist.yml", "taskfile.dist.yaml", ".config/lefthook.yml", ".config/lefthook.yaml",
                 "mise", ".mise", "opencode.json", ".opencode", ".codex", ".qwen", ".crush.json", "crush.json",
                 ".junie", ".augment", ".trae", "flake.nix", "shell.nix", "default.nix", "devenv.nix",
                 "devenv.yaml", "devbox.json", "bunfig.toml", ".sl", ".jj", "opencode.jsonc", ".lvimrc",
                 ".dir-locals.el", ".gdbinit", ".lldbinit",
                 # red team 15's list: Emacs's second locals file, the REPLs that load one from the
                 # working directory (irb, pry), husky 4's config (its hooks run what it names), editors'
                 # and agents' workspace settings that name programs (helix's language servers, Kilo Code)
                 ".dir-locals-2.el", ".irbrc", ".pryrc", ".huskyrc", ".huskyrc.json", ".huskyrc.js",
                 ".huskyrc.yaml", ".huskyrc.yml", "husky.config.js", ".helix", ".kilocode",
                 # run by tools sbox's shims do not front: rustup's proxies (rustc, rustfmt) run the
                 # toolchain a `path` names, rust-analyzer runs `cargo check` with the config's
                 # rustc-wrapper; a config the host made is still held by the trust gate
                 "rust-toolchain.toml", "rust-toolchain", ".cargo/config.toml", ".cargo/config",
                 # red team 23: Python tools' configs that run code or load plugins from the project
                 # (pylint's init-hook and load-plugins, pytest's -p, flake8's local plugins, mypy's
                 # and coverage's plugins) when the host runs the tool, from a hook or by hand
                 ".pylintrc", "pylintrc", ".flake8", "pytest.ini", ".pytest.ini", "mypy.ini", ".mypy.ini",
                 ".coveragerc", "pytest.toml", ".pytest.toml")  # pytest 9's own TOML (red team 31)
# Not here: the tool configs sbox's trust gate holds instead (.yarnrc.yml, .pnpmfile.cjs, .npmrc,
# pip.conf, ...), which only the tools sbox fronts read: one a sandbox wrote is refused, named,
# until `sbox trust`.
# Also at the top, in any spelling of its case (just finds its file so) or by ending: listed names.


# Not here: the tool configs sbox's trust gate holds instead (.cargo/config.toml, .yarnrc.yml,
# .pnpmfile.cjs, .npmrc, pip.conf, ...): one a sandbox wrote is refused, named, until `sbox trust`.
# Also at the top, in any spelling of its case (just finds its file so) or by ending: listed names.
CASELESS = ("justfile", ".justfile")


ENDINGS = (".code-workspace",)
# At any depth: git runs a repository's config (core.fsmonitor, hooks) wherever a `.git` is, and
# direnv loads an `.envrc` in any directory the user enters.


def writable_parts(mounts: Sequence[Mount], root: str) -> list[str]:
    """The parts of the project a step's mounts make writable (empty: the guard has nothing to do)."""
    root = root.rstrip("/") or "/"
    out = []
    for m in mounts:
        if m.readonly or m.kind not in ("bind", "cache"):
            continue
        source = m.source.rstrip("/") or "/"
        if inside(root, source):
            out.append(root)
        elif inside(source, root):
            out.append(source)
    out = list(dict.fromkeys(out))
    # a part inside another (layout.pins: a directory on the way to a repository, bound on itself)
    return [p for p in out if not any(q != p and inside(p, q) for q in out)]


def _git_config(root: str, top: str | None = None) -> tuple[str | None, list[str]]:
    """(core.hooksPath, the project files git includes or runs: command_paths) from
    `<root>/.git/config` and the files its `include.path` / `includeIf.*.path` name, read as text
    (running git would run the config).
    Paths relative to the project's top (`top`, else the root), only those inside it."""
    top = top or root
    gitdirs = git_dirs(join(root, ".git"))  # a `.git` file names its git directory (and the common one)
    commands: list[str] = []
    words: list[str] = []
    hooks, included, _ = _configs(repository_configs(gitdirs), commands, words)
    if gitdirs:  # the programs your global and system configs' settings run here too (red team 22:
        _configs(_global_files(), commands, words)  # nbstripout --global's `python -m nbstripout`)
    # run from the top of the worktree; a directory a command names (`make -C a/b`) is not what runs
    included += [path for c in commands for path in [normpath(join(root, c))] if not _is_dir(path)]
    included += [path for w in words for path in _expanded(normpath(join(root, w))) if _is_file(path)]
    included += [main for path in included if path.endswith("/package.json") for main in _node_main(path)]
    includes = [_relative(path, top) for path in dict.fromkeys(included)
                if inside(path, top) and path != top and not any(inside(path, d) for d in gitdirs)]
    if not hooks and gitdirs:
        hooks = _global_hooks()  # a repository of its own that sets none: the user's global one applies
    if not hooks or hooks.startswith("~/") and not _home():
        return None, includes
    return _in_project(join(_home(), hooks[2:]) if hooks.startswith("~/") else join(root, hooks), top), includes


def _node_main(path: str) -> list[str]:
    """The file a directory's `package.json` names as its `main`, which `node DIR` runs (red team 22:
    `textconv = node tools/nbdiff`, whose `main` is `cli.js`)."""
    import json

    from sbox_shim.regular import read_regular

    try:
        main = json.loads(read_regular(path) or b"{}").get("main")
    except (ValueError, AttributeError, OSError):
        return []
    if not isinstance(main, str) or not main:
        return []
    found = normpath(join(dirname(path), main))
    return [p for p in (found, found + ".js", found + ".node", found + "/index.js", found + "/index.node")
            if _is_file(p)]


def _expanded(path: str) -> list[str]:
    """`path`, or what its last part matches if that is a glob (`tools/fsmo[n]`)."""
    head, _, name = path.rpartition("/")
    if not any(c in name for c in "[*?") or any(c in head for c in "[*?"):
        return [path]
    import fnmatch  # only for a git setting with a glob in it

    try:
        names = [e.name for e in posix.scandir(head or "/")]
    except OSError:
        return []
    return [f"{head}/{n}" for n in fnmatch.filter(names, name)]


def _is_file(path: str) -> bool:
    """A regular file or a link (not followed)."""
    try:
        return stat.S_IFMT(posix.lstat(path).st_mode) in (stat.S_IFREG, stat.S_IFLNK)
    except OSError:
        return False


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(posix.lstat(path).st_mode)
    except OSError:
        return False


def _home() -> str:
    return posix.environ.get(b"HOME", b"").decode("utf-8", "surrogateescape")


# Settings whose value is a command git runs (from the top of the worktree): `section` (a
# subsection's name aside) -> the keys that name one (None: every key of it).
COMMANDS = {"core": ("fsmonitor", "sshcommand", "editor", "pager", "askpass", "gitproxy", "alternaterefscommand"),
            "sequence": ("editor",), "diff": ("external", "textconv", "command"),
            "gpg": ("program", "defaultkeycommand"), "credential": ("helper",), "merge": ("driver",),
            "filter": ("clean", "smudge", "process"), "interactive": ("difffilter",),
            "difftool": ("cmd", "path"), "mergetool": ("cmd", "path"), "alias": None, "pager": None,
            "sendemail": ("smtpserver", "sendmailcmd", "tocmd", "cccmd"), "imap": ("tunnel",), "tar": ("command",),
            "browser": ("cmd", "path"), "man": ("cmd", "path"), "guitool": ("cmd",),
            "remote": ("receivepack", "uploadpack"), "uploadpack": ("packobjectshook",), "submodule": ("update",)}
BOOLEAN = ("true", "false", "yes", "no", "on", "off", "1", "0", "")


INTERPRETERS = ("sh", "bash", "dash", "zsh", "ksh", "fish", "perl", "ruby", "node", "nodejs", "deno", "bun", "php",
                "lua", "tclsh", "Rscript", "pwsh")  # and python*: each runs the script its first word names


def _commands(section: str, key: str, value: str) -> list[list[str]]:
    """The words of each command a git setting runs (split at `;`, `&`, `|`, quotes dropped);
    none when it runs no command."""
    keys = COMMANDS.get(section.split(" ", 1)[0], ())
    if keys is not None and key not in keys:
        return []
    if section.startswith(("alias", "submodule")) and not value.startswith("!"):
        return []  # a git subcommand; a submodule's `update = rebase`
    if section == "core" and key == "fsmonitor" and value.lower() in BOOLEAN:
        return []  # the built-in daemon
    lines = value.lstrip("!").replace(";", "\n").replace("&", "\n").replace("|", "\n").splitlines()
    return [[w.strip("'\"") for w in line.split()] for line in lines if line.split()]


def _from_top(section: str, paths: list[str]) -> list[str]:
    """`paths` relative to the worktree's top: a submodule's `update` command runs in the
    submodule's directory, named as the submodule is by default (`submodule "lib"`)."""
    if not section.startswith('submodule "'):
        return paths
    name = section[len('submodule "'):].rstrip('"')
    return [normpath(f"/{name}/{p}")[1:] for p in paths]


def _plain(word: str) -> bool:
    """A word that may name a path of the project: not absolute, `~`, a variable, an option, git's
    `%f` or a URL."""
    return bool(word) and not word.startswith(("/", "~", "$", "-", "%")) and "://" not in word


def command_paths(section: str, key: str, value: str) -> list[str]:
    """The project-relative paths a git setting's command names, as written: any word with a `/`
    that is not absolute, `~`, a variable or an option (`core.fsmonitor = tools/watch`, `make -C
    a/b`), and the script an interpreter runs, `/` or not (`python3 csv2txt.py`, `sh fsmon`: run
    from the top of the worktree), or the module of `-m pkg.mod` (`-mpkg.mod`), with its packages'
    `__init__`; none when the setting runs no command. A program without a `/` is found on PATH
    (`less`), not in the project. Red teams 16 to 19 had a step write the script a relative
    core.fsmonitor, a textconv, a clean filter, gpg.ssh.defaultKeyCommand or a submodule's
    `update = !…` named, and the host's `git status`, `git diff`, `git commit` and
    `git submodule update` ran it. Other words: command_words."""
    out: list[str] = []
    for words in _commands(section, key, value):
        program = words[0].rsplit("/", 1)[-1]
        script = program in INTERPRETERS or program.startswith("python")  # its first word not an option
        for i, word in enumerate(words):
            module = word[2:] if word.startswith("-m") and len(word) > 2 else words[i - 1] == "-m" and word
            if i and script and module and module.replace(".", "").isidentifier():  # python3 -m tools.conv
                parts = module.split(".")
                out += [f"{'/'.join(parts)}.py", f"{'/'.join(parts)}/__main__.py"]
                out += ["/".join(parts[:n]) + "/__init__.py" for n in range(1, len(parts) + 1)]
                script = False
            elif _plain(word) and ("/" in word or (i and script)):
                out.append(word)
                script = script and not i
            elif i and _plain(word):
                script = False  # an interpreter's script is its first word that is not an option
    return _from_top(section, list(dict.fromkeys(out)))


WRAPPERS = ("env", "exec", "nice", "nohup", "timeout", "stdbuf", "time", "command", "xargs", "cd", "pushd", "setsid",
            "ionice", "chrt", "flock")  # run what follows: command_words reads a command with one
CHDIR = ("cd", "pushd", "C", "chdir", "PYTHONPATH", "NODE_PATH")  # what follows names a directory to run from
# what a directory, or a name without its suffix, runs as: Python's and Node's lookups
RUNS_AS = ("__main__.py", "index.js", "package.json")
SUFFIXES = (".py", ".js", ".cjs", ".mjs", ".sh", ".node")  # .node: a native addon (red team 23)


def command_words(section: str, key: str, value: str) -> list[str]:
    """Every other word of a git setting's commands that may name a file of the project, watched
    where the project holds such a file when the guard looks: a script behind a wrapper or an
    option command_paths cannot parse (`env sh fsmon`, `timeout 5 sh x`, `sh -c 'sh x'`,
    `python3 -X utf8 x.py`: red team 19), a path or module inside code (`-c 'import tools.conv'`,
    `runpy.run_path("tools/conv.py")`, `from tools.conv import main`: red team 20) as its `.py`
    and its packages' `__init__.py`; what follows a `cd DIR`, `env -C DIR`, `PYTHONPATH=DIR` from
    that directory too; a path after a variable or a substitution (`$PWD/tools/x`,
    `"$(git rev-parse --show-toplevel)"/tools/x`) by each of its tails; a name as Node or Python
    finds it (`node tools/conv` runs `tools/conv.js`, `tools/conv.node` or `tools/conv/index.js`,
    `python3 tools/conv` its `__main__.py`); a glob (`tools/fsmo[n]`) by what it matches (red
    team 21). Only the words of a command (a pipeline: `;`, `&`, `&&`, `||` outside quotes part
    them) in which an interpreter or a runner of scripts appears (`timeout 30s python3 x.py`,
    `(python3 x.py)`, `cat x.sh | sh`, `uv run x.py`, `npx tsx x.ts`, `source x.sh`); a shell's
    `-c` code is read as commands again, and the shell's other words count when that code runs
    one (`sh -c 'python3 "$0"' x.py`). So `!make test`, `!npm run build` (red team 22), `!git
    branch --merged main | grep -v main | xargs -n 1 git branch -d` and `!bash -c "git rebase
    origin/main"` (red team 23) watch no `test`, `build` or `main` a step writes; a program named
    by its path behind a wrapper (`env -C tools ./t2`) is watched alone."""
    if section.split(" ", 1)[0] not in COMMANDS or not _commands(section, key, value):
        return []
    out: list[str] = []
    base = ""  # the directory the last `cd` went to
    for text, runs in _simple_commands(value.lstrip("!")):
        tokens = _tokens(text)
        for i, token in enumerate(tokens):
            if runs == text:
                out += _names(token, base)
            if i and tokens[i - 1].lstrip("-") in CHDIR:
                base = token
        if runs and runs != text:  # a program by its path, behind wrappers (`env -C tools ./t2`)
            out += [name for token in _tokens(runs) for name in _names(token, base)]
    return _from_top(section, list(dict.fromkeys(out)))


def _tokens(text: str) -> list[str]:
    """The words of a command and of the code in it that may be paths or modules."""
    return "".join(c if c.isalnum() or c in "_./-[]*?" else " " for c in text).split()


def _names(token: str, base: str) -> list[str]:
    """What a word of a command may run, as Python and Node find it, from the top and from `base`."""
    token = token.strip(".") if not token.startswith(("./", "../")) else token
    tails = [token.lstrip("/")] + [token.split("/", n)[-1] for n in range(1, token.count("/") + 1)]
    out: list[str] = []
    for tail in dict.fromkeys(t for t in tails if _plain(t)):
        names = [tail] + [tail + s for s in SUFFIXES] + [f"{tail}/{r}" for r in RUNS_AS]
        if tail.replace(".", "").isidentifier():  # a module, maybe dotted: tools.conv
            parts = tail.split(".")
            names += ["/".join(parts) + ".py"] + ["/".join(parts[:n]) + "/__init__.py"
                                                 for n in range(1, len(parts) + 1)]
        out += names + [f"{base}/{n}" for n in names if base]
    return out


SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "fish", "busybox")
# what runs a script it is given, besides INTERPRETERS and python*/pypy*: package managers' and
# environment managers' runners, privilege and tracing wrappers, the shell's own ways
RUNNERS = ("uv", "uvx", "poetry", "pipenv", "pdm", "hatch", "rye", "conda", "mamba", "npx", "bunx", "pnpx", "tsx",
           "ts-node", "ipython", "jupyter", "source", "eval", "sudo", "doas", "su", "nix-shell", "nix",
           "direnv", "script", "parallel", "strace", "ltrace", "gdb", "watch", "entr", "exec", "runpy", "pytest",
           "awk", "gawk", "mawk", "nawk", "busybox", "tclsh", "wish", "expect", "guile", "osascript")
SYNTAX = ("{", "}", "(", ")", "!", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for",
          "in", "case", "esac", "function")


def _runs_scripts(word: str) -> bool:
    name = word.rsplit("/", 1)[-1].lstrip("-")  # `${PY:-python3}` reads as `-python3`
    return name in INTERPRETERS or name in RUNNERS or name.startswith(("python", "pypy"))


FILE_PROGRAMS = ("sed", "gsed", "make", "gmake", "bmake", "jq", "gdb")  # run the script their -f names


def _simple_commands(value: str, depth: int = 0) -> list[tuple[str, str | None]]:
    """Each command (a pipeline) of a shell command line, as (its text, what of it may name a
    script: the whole text, a program's path, or None), in order; the code of a shell's `-c`
    after it, parted the same way."""
    out: list[tuple[str, str | None]] = []
    for text, words in _split(value):
        tokens = _tokens(text)
        starts = [i for i, w in enumerate(words) if i == 0 or words[i - 1] == "|"]
        code: list[tuple[str, str | None]] = []
        for i in starts:  # each program of the pipeline: a shell given code
            while i < len(words) and (words[i] in SYNTAX or words[i].endswith("()") or _assignment(words[i])):
                i += 1
            if i < len(words) and words[i].rsplit("/", 1)[-1] in SHELLS and depth < 4:
                given = _shell_code(words[i + 1:])
                code += _simple_commands(given, depth + 1) if given is not None else []
        if code or depth >= 4:
            others = [t for t in tokens if t not in _tokens(" ".join(c for c, _ in code))]
            relevant = any(runs == c for c, runs in code) or any(_runs_scripts(t) for t in others
                                                                  if t.rsplit("/", 1)[-1] not in SHELLS)
            out += [(text, text if relevant else None)] + code
            continue
        files = any(w.rsplit("/", 1)[-1] in FILE_PROGRAMS for w in words) and any(
            w in ("-f", "--file") or w.startswith(("--file=", "--makefile=")) for w in words)  # `sed -f x.sed`
        if any(_runs_scripts(t) for t in tokens) or files or any(words[i] == "." for i in starts):  # `. x.sh`
            out.append((text, text))
            continue
        path = next((w for i in starts for w in [_behind_wrappers(words[i:])] if w), None)
        out.append((text, path))
    return out


def _behind_wrappers(words: list[str]) -> str | None:
    """The program a command runs by its path, directly or behind wrappers (`env -C tools ./t2`,
    `exec ./conv`), if it is one; None otherwise."""
    i = 0
    while i < len(words) and words[i] != "|":
        word = words[i]
        if "/" in word:
            return word
        if word.rsplit("/", 1)[-1] not in WRAPPERS:
            return None
        i += 1  # the wrapper's options, their values (a number, a NAME, an assignment, a directory)
        while i < len(words) and (words[i].startswith("-") or words[i][:1].isdigit() or words[i].isupper()
                                  or _assignment(words[i]) or words[i - 1].lstrip("-") in CHDIR):
            i += 1
    return None


def _assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isidentifier()


def _shell_code(words: list[str]) -> str | None:
    """The code a shell runs with `-c` (`sh -c CODE`, `bash -ec CODE`); None without one."""
    for i, word in enumerate(words):
        if word == "sh" and i == 0:  # busybox sh -c
            continue
        if not word.startswith("-") or word.startswith("--"):
            return None
        if "c" in word[1:] and i + 1 < len(words):
            return words[i + 1]
    return None


def _split(value: str) -> list[tuple[str, list[str]]]:
    """A shell command line's commands (parted at `;`, `&`, `&&`, `||` and line ends outside quotes;
    a pipeline is one, its `|` a word), each as its text and its words with quotes and escapes
    taken out (parentheses part words: `(python3 x.py)`)."""
    out: list[tuple[str, list[str]]] = []
    words: list[str] = []
    word: list[str] = []
    started = False  # a word is begun (`''` is one, empty)
    start, quote, i = 0, "", 0
    while i < len(value):
        c = value[i]
        if quote and c == quote:
            quote = ""
        elif quote == '"' and c == "\\" and i + 1 < len(value) and value[i + 1] in '"\\$`':
            i += 1
            word.append(value[i])
        elif quote:
            word.append(c)
        elif c in "'\"":
            quote, started = c, True
        elif c == "\\" and i + 1 < len(value):
            i += 1
            word.append(value[i])
            started = True
        elif c in " \t;&|\n()":
            if started:
                words.append("".join(word))
                word, started = [], False
            if c == "|" and value[i + 1:i + 2] != "|":
                words.append("|")  # a pipeline stays one command
            elif c in ";&|\n":
                if c in "&|" and value[i + 1:i + 2] == c:
                    i += 1  # && and ||
                if words:
                    out.append((value[start:i + 1], words))
                words, start = [], i + 1
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    if words:
        out.append((value[start:], words))
    return out


def _configs(files: list[str], commands: list[str] | None = None,
             words: list[str] | None = None) -> tuple[str | None, list[str], list[str]]:
    """`core.hooksPath` as git reads it from `files` and the files they include (`include.path`,
    `includeIf.*.path`, each read where it is included, `~/` being HOME), every file included, and
    each of those as written (`.git/../sub/../a.inc`: the kernel goes through `sub`); into
    `commands`, if given, the relative programs their settings run (command_paths)."""
    home = _home()
    hooks = None
    every: list[str] = []
    written: list[str] = []
    seen: set[str] = set()
    while files and len(seen) < 16:
        path = files.pop(0)
        if path in seen:
            continue
        seen.add(path)
        included = []
        for section, key, value in settings(path):
            if commands is not None:
                commands += command_paths(section, key, value)
            if words is not None:
                words += command_words(section, key, value)
            if section == "core" and key == "hookspath" and value:
                hooks = value
            elif section.startswith(("include", "includeif")) and key == "path" and value:
                if value.startswith("~"):
                    if not value.startswith("~/") or not home:
                        continue
                    value = join(home, value[2:])
                written.append(join(dirname(path), value))
                included.append(normpath(written[-1]))
        files[:0] = included
        every += included
    return hooks, every, written


def _in_project(path: str, top: str, written: bool = True) -> str | None:
    """`path` relative to the project's top if it lies there, as written or as it resolves (git
    follows a link on the way: `hooks -> frontend/hk` outside the project still names the project's
    `frontend/hk`); only as it resolves unless `written`; None otherwise."""
    import os  # only for a repository that sets core.hooksPath or links its hooks

    ways = [(os.path.normpath(path), top)] if written else []
    try:
        ways.append((os.path.realpath(path), os.path.realpath(top)))
    except OSError:  # a link changed while it was read (a sandbox racing): as written only
        pass
    for candidate, base in ways:
        if inside(candidate, base) and candidate != base:
            return str(os.path.relpath(candidate, base))
    return None


def _linked_hooks(gitdirs: Sequence[str], top: str) -> list[str]:
    """The project paths a git directory's `hooks/` reaches through links (`.git/hooks ->
    ../githooks`, `.git/hooks/pre-commit -> ../../tools/hooks/pre-commit`): git runs them."""
    found = []
    for gitdir in gitdirs:
        hooks = join(gitdir, "hooks")
        try:
            if stat.S_ISLNK(posix.lstat(hooks).st_mode):
                found.append(_in_project(hooks, top, written=False))
                continue
            with posix.scandir(hooks) as it:
                links = [e.path for e in it if e.is_symlink()]
        except OSError:
            continue
        found += [_in_project(link, top, written=False) for link in links]
    return [rel for rel in found if rel]


def _global_hooks() -> str | None:
    """`core.hooksPath` from git's system and global configs (read as text, last one wins, as git
    reads them): a relative one names a directory in every repository (`git-hooks`)."""
    hooks, _, _ = _configs(_global_files())
    return hooks if hooks and not hooks.startswith(("/", "~")) else None


def _global_files() -> list[str]:
    """git's system and global config files, as git finds them."""
    env = posix.environ
    home = _home()
    xdg = env.get(b"XDG_CONFIG_HOME", b"").decode("utf-8", "surrogateescape") or (home and join(home, ".config"))
    system = env.get(b"GIT_CONFIG_SYSTEM", b"/etc/gitconfig").decode("utf-8", "surrogateescape")
    files = [] if env.get(b"GIT_CONFIG_NOSYSTEM") else [system]
    configured = env.get(b"GIT_CONFIG_GLOBAL")
    if configured is not None:
        files.append(configured.decode("utf-8", "surrogateescape"))
    else:
        files += [p for p in (xdg and join(xdg, "git", "config"), home and join(home, ".gitconfig")) if p]
    return files


def hooks_path(root: str) -> str | None:
    """git's `core.hooksPath`, through the project's `.git/config` and what it includes, relative to
    the root, if it lies in the project."""
    return _git_config(root)[0]


def watched(root: str, ways: list[str] | None = None) -> list[str]:
    """The host-executed names of the project, relative to its root. `ways` (if given) gets the
    directories a path git or make reads climbs out of, and the links on such a path (_climbing):
    the guard watches each for turning into a link."""
    written: list[str] = []
    included = make_includes(root, written=written)
    climbs, landings = _climbing(root, written)
    if ways is not None:
        ways += climbs
    return list(dict.fromkeys([*PROTECTED, *HOST_EXECUTED, *_repository(root, root), *_enclosing(root),
                               *included, *landings]))


def _climbing(root: str, made: list[str]) -> tuple[list[str], list[str]]:
    """The project's directories that a path git or make reads goes into and back out of
    (`include.path = ../sub/../a.inc`, `core.hooksPath = tools/../githooks`, `-include
    build/../local.mk`, the last among `made`, the Makefile includes as written), with the links
    met on the way (`s/../a.inc` with `s -> real/in` climbs out of `real/in`); and where each such
    path really ends, resolved as the kernel resolves it (`real/a.inc`). Read as text such a path
    names the same file whatever `sub` is, but the kernel goes through `sub`: a step that makes it
    a link sends git or make elsewhere. Relative to the root."""
    gitdirs = git_dirs(join(root, ".git"))
    hooks, _, written = _configs(repository_configs(gitdirs))
    paths = written + ([join(root, hooks)] if hooks and not hooks.startswith(("/", "~")) else []) + made
    ways: list[str] = []
    landings: list[str] = []
    top = root.rstrip("/") or "/"
    for path in paths:
        if "/../" not in path + "/" or not inside(path, top):
            continue
        links, climbed, end = _resolve(top, path[len(top):])
        ways += climbed + links
        landings += [end] if end else []
    return list(dict.fromkeys(ways)), list(dict.fromkeys(landings))


def _enclosing(root: str) -> list[str]:
    """What the repository the project lies in (sbox.yaml below its top: a monorepo's `frontend/`)
    makes host-executed inside the project: its hooks directory when `core.hooksPath` points there."""
    here = dirname(root)
    while here:
        if git_dirs(join(here, ".git")):
            return _repository(here, root)
        parent = dirname(here)
        if parent == here:
            break
        here = parent
    return []


def _repository(repo: str, root: str) -> list[str]:
    """What `repo`'s `.git/config` makes host-executed in the project (relative to its root): the
    files it includes (they run like .git/config) and its hooks directory, or, for husky's layout
    (`core.hooksPath = .husky/_`, whose wrappers run `.husky/<hook>`), the directory above it."""
    hooks, includes = _git_config(repo, root)
    paths = includes + _linked_hooks(git_dirs(join(repo, ".git")), root)
    if hooks:
        paths.append(dirname(hooks) if _basename(hooks) == "_" and "/" in hooks else hooks)
    return [anchor(root, p) for p in paths] + resolved(root, paths)


def resolved(root: str, rels: Sequence[str]) -> list[str]:
    """What each of `rels` goes through and lands on in the project when a link is on its way: git,
    make and the rest follow links (`githooks -> tools/hooks` as core.hooksPath, `Makefile ->
    mk/Makefile` with `mk -> tools/mk`, an include under `conf -> settings`), so every link of the
    chain that lies in the project (re-pointed, it sends the host elsewhere) and where the chain
    ends, if in the project, are watched too. What lies outside the project is not: the link
    that leads there is what is watched, and moved."""
    out: list[str] = []
    for rel in rels:
        links, end = _chain(root, rel)
        if links:
            out += links
            if end and end != rel:
                out.append(end)
    return list(dict.fromkeys(out))


def _chain(root: str, rel: str) -> tuple[list[str], str | None]:
    """The links (relative to `root`) that resolving `root/rel` goes through, as the kernel would
    follow them, and where it ends relative to `root` (None outside it, or when it cannot be
    resolved: a loop, a link changed meanwhile)."""
    links, _, end = _resolve(root, rel)
    return links, end


def _resolve(root: str, rel: str, hops: int = 40) -> tuple[list[str], list[str], str | None]:
    """`_chain`, and the directories of the project the way climbs out of (`sub` in
    `sub/../a.inc`, where the kernel goes through `sub`). A component not there (yet) is gone
    through as a directory."""
    top = root.rstrip("/") or "/"
    links: list[str] = []
    climbed: list[str] = []
    here, todo = top, [p for p in rel.split("/") if p]
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if inside(here, top) and here != top:
                climbed.append(_relative(here, top))
            here = dirname(here) or "/"
            continue
        path = join(here, part)
        try:
            if not stat.S_ISLNK(posix.lstat(path).st_mode):
                here = path
                continue
            target = posix.readlink(path)
        except OSError:  # missing (a step may make it), or changed meanwhile
            here = path
            continue
        hops -= 1
        if hops < 0:
            return links, climbed, None
        if inside(path, top) and path != top:
            links.append(_relative(path, top))
        here = "/" if target.startswith("/") else here
        todo = [p for p in target.split("/") if p] + todo
    end = normpath(here)
    return links, climbed, (_relative(end, top) if inside(end, top) and end != top else None)


def anchor(root: str, rel: str) -> str:
    """`rel`, or its first component that is a link: what lies beyond a link is not the
    project's, and the guard never follows one (a planted `tools -> /elsewhere` is itself what
    it moves)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        try:
            if stat.S_ISLNK(posix.lstat(join(root, *parts[:i])).st_mode):
                return "/".join(parts[:i])
        except OSError:
            return rel
    return rel


def present(root: str, names: Sequence[str]) -> list[str]:
    """The names that may exist: those whose first component the root lists (one directory
    read instead of an lstat per name; a name it does not list has nothing for `_tree` to see).
    All of them if the root cannot be listed."""
    try:
        with posix.scandir(root) as it:
            listed = {e.name for e in it}
    except OSError:
        return list(names)
    spelled = [name for name in sorted(listed) if name.lower() in CASELESS or name.endswith(ENDINGS)]
    return list(dict.fromkeys([name for name in names if name.split("/", 1)[0] in listed] + spelled))


def packages_watched(root: str, mounts: Sequence[Mount]) -> list[str]:
    """What `watched` is for the project's top, at the top of each directory in it that is a
    package or repository of its own: a local `file:` dependency npm builds in place (a directory
    of the project a step may write, which every package's scripts in that phase may write: its
    Makefile runs when you `make` there), and each repository nested in the project (a `.git`
    below the top, bound read-only: its hooks and its Makefile run when you work there). Not a
    node_modules or a hidden directory, for a file: dependency; a repository anywhere, one in an
    in-project `.venv/src/` (`pip install -e git+…`) or a node_modules too: package code wrote
    the hooks its `core.hooksPath` names there, and the host's next `git commit` ran them (red
    team 14)."""
    repos = [dirname(m.target) for m in mounts if m.readonly and _basename(m.target) == ".git"
             and inside(m.target, root) and dirname(m.target) != root.rstrip("/")]
    roots = [part for part in writable_parts(mounts, root) if part != root.rstrip("/") and inside(part, root)]
    out = []
    for part in dict.fromkeys(roots + repos):
        rel = _relative(part, root)
        parts = rel.split("/")
        skipped = part not in repos and ("node_modules" in parts or any(p.startswith(".") for p in parts))
        if skipped or not stat.S_ISDIR(_mode(part)):
            continue
        out += [f"{rel}/{name}" for name in (*PROTECTED, *HOST_EXECUTED)] + _repository(part, root)
        out += make_includes(root, rel)
    return out


def _projects_watched(root: str, known: Sequence[str], repos: bool = False) -> list[str]:
    """`watched` at the top of each project nested in this one (a directory below the top with an
    sbox.yaml of its own, as the last walk found them; with `repos`, each nested repository too):
    its Makefile, editors' and agents' settings run when you work there, as the top's do. Not in
    a node_modules or a hidden directory."""
    from sbox_shim.guard.index import PROJECTS

    out: list[str] = []
    for path in known:
        part = dirname(path)
        if part == root.rstrip("/") or not inside(part, root):
            continue
        if _basename(path) not in PROJECTS and not (_basename(path) == "pyproject.toml" and _opts_in(path)) \
                and not (repos and _basename(path) == ".git"):
            continue
        parts = _relative(part, root).split("/")
        if "node_modules" in parts or any(p.startswith(".") for p in parts):
            continue
        rel = "/".join(parts)
        out += [f"{rel}/{name}" for name in (*PROTECTED, *HOST_EXECUTED)] + _repository(part, root)
        out += make_includes(root, rel)
    return out


def git_dirs_watched(root: str, known: Sequence[str]) -> list[str]:
    """The config and hooks of each git directory in the project that is not a `.git` (a bare
    repository kept as a test fixture, `repos/sub.git` that a `.git` file names), found by its
    HEAD among the KEPT entries the last walk found: git runs them when you work there (`git
    branch` in a bare repository reads its `core.pager`). Not in a node_modules or a hidden
    directory; a HEAD beside a config file and an objects directory."""
    out: list[str] = []
    for path in known:
        if _basename(path) != "HEAD" or not inside(path, root):
            continue
        part = dirname(path)
        parts = _relative(part, root).split("/")
        if part == root.rstrip("/") or "node_modules" in parts or any(p.startswith(".") for p in parts):
            continue
        if stat.S_ISREG(_mode(join(part, "config"))) and stat.S_ISDIR(_mode(join(part, "objects"))):
            rel = "/".join(parts)
            out += [f"{rel}/config", f"{rel}/hooks"]
    return out


def _opts_in(pyproject: str) -> bool:
    """A pyproject.toml with a `[tool.sbox]` table (config.py's third opt-in), read as text."""
    text = _text(pyproject)
    return any(line.strip().replace(" ", "").startswith("[tool.sbox") for line in text.splitlines())


def _text(path: str) -> str:
    """regular.read_regular's bytes as text ("" for anything but a regular file)."""
    from sbox_shim.regular import read_regular

    return (read_regular(path) or b"").decode("utf-8", "replace")


MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
GLOB = "*?["


def make_includes(root: str, rel: str = "", written: list[str] | None = None) -> list[str]:
    """What the Makefiles at `root/rel` include (`include`, `-include`, `sinclude`), and what those
    include in turn, relative to `root`: make reads them as its own rules (`$(shell …)` runs at
    parse time). A literal name (one the step may create: `-include local.mk`), or for a pattern
    (`include mk/*.mk`, `$(wildcard mk/*.mk)`) the directory it lies in. Names made of other
    variables are not followed (the README says so); what lies outside the project is not the
    project's. `written` gets each included path as written (`build/../local.mk`)."""
    here = join(root, rel) if rel else root
    out: list[str] = []
    todo = [join(here, name) for name in MAKEFILES]
    while todo and len(out) < 256:
        for word in _included(_text(todo.pop(0))):
            if any(c in word for c in GLOB):
                word = dirname(word[:min(word.index(c) for c in GLOB if c in word)] + "x")
            raw = join(here, word) if not word.startswith("/") else word
            if written is not None:
                written.append(raw)
            path = normpath(raw)
            if inside(path, root) and path != root.rstrip("/") and _relative(path, root) not in out:
                out.append(_relative(path, root))
                todo.append(path)  # make resolves an included file's includes from where it runs
    return out


def _included(text: str) -> list[str]:
    """The words of a Makefile's include lines (a `$(wildcard …)`'s patterns among them), comments
    cut where make cuts them (at a `#` not escaped), lines continued with a backslash joined."""
    words: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        cut = 0
        while (cut := line.find("#", cut)) >= 0 and cut > 0 and line[cut - 1] == "\\":
            cut += 1
        line = line[:cut] if cut >= 0 else line
        parts = line.split()
        if not parts or parts[0] not in ("include", "-include", "sinclude"):
            continue
        rest = " ".join(parts[1:])
        while "$(wildcard " in rest:
            start = rest.index("$(wildcard ")
            end = rest.find(")", start)
            if end < 0:
                break
            words += rest[start + len("$(wildcard "):end].split()
            rest = rest[:start] + " " + rest[end + 1:]
        words += rest.split()
    return [w for w in words if "$" not in w]


def _mode(path: str) -> int:
    try:
        return posix.lstat(path).st_mode
    except OSError:
        return 0


def _basename(path: str) -> str:
    """`os.path.basename`."""
    return path[path.rfind("/") + 1:]


def _relative(path: str, root: str) -> str:
    """`os.path.relpath` of a path found by walking `root` (so below it, joined without `..`)."""
    if inside(path, root) and path != root:
        return path[len(root.rstrip("/")) + 1:]
    import os

    return os.path.relpath(path, root)
