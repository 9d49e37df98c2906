"""redact.py: the configs package code reads, without their credentials; and configs.py, which
decides where each one is shown and how."""
from __future__ import annotations

from pathlib import Path

import pytest

from sbox_shim import configs, layout, redact
from sbox_shim.plan import Mount

T = "SECRETVALUE"


def _text(s: str) -> str:
    return redact.text(s.encode()).decode()


# (what a config holds, what package code reads of it): every token goes, every other setting stays
CASES = {
    "npmrc": (f"registry=https://r.example/\n//r.example/:_authToken={T}\n//r.example/:_auth={T}\n"
              f"//r.example/:_password={T}\n//r.example/:username=me\n_authToken={T}\n"
              f"key={T}\n//r.example/:keyfile=/k.pem\nnodedir=/opt/node\n# old: _authToken={T}\n"
              f"@scope:registry=https://u:{T}@s.example/npm/\nfund=false\n",
              "registry=https://r.example/\nnodedir=/opt/node\n@scope:registry=https://s.example/npm/\nfund=false\n"),
    "pip.conf": (f"[global]\nindex-url = https://user:{T}@pypi.example/simple\nextra-index-url =\n"
                 f"    https://u:{T}@x.example/simple\n    https://plain.example/simple\n"
                 f"trusted-host: h.example\nfind-links: https://{T}@f.example/a@b\n[install]\ntimeout = 60\n",
                 "[global]\nindex-url = https://pypi.example/simple\nextra-index-url =\n"
                 "    https://x.example/simple\n    https://plain.example/simple\n"
                 "trusted-host: h.example\nfind-links: https://f.example/a@b\n[install]\ntimeout = 60\n"),
    "gitconfig": (f'[http "https://h.example/"]\n\textraHeader = Authorization: Bearer {T}\n\tsslVerify = true\n'
                  f'[url "https://x-access-token:{T}@github.com/"]\n\tinsteadOf = https://github.com/\n'
                  f'[credential]\n\thelper = "!f() {{ echo password={T}; \\\n\t}}; f"\n\tuseHttpPath = true\n'
                  f'[core]\n\tsshCommand = ssh\n\ttoken = {T}\n[user]\n\temail = me@example.com\n\tsigningKey = ABC\n',
                  '[http "https://h.example/"]\n\tsslVerify = true\n[url "https://github.com/"]\n'
                  '\tinsteadOf = https://github.com/\n[credential]\n\tuseHttpPath = true\n[core]\n\tsshCommand = ssh\n'
                  '[user]\n\temail = me@example.com\n\tsigningKey = ABC\n'),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tokens_go_and_every_other_setting_stays(name: str) -> None:
    """npm's tokens and their kin, pip's URL passwords (continuation lines too), git's headers,
    helpers and rewrites; a comment goes too; git's user.email stays."""
    held, shown = CASES[name]
    assert _text(held) == shown


def test_a_removed_setting_takes_its_continuation_lines() -> None:
    out = _text(f"[global]\npassword =\n    {T}\n    more{T}\ntimeout = 60\n")
    assert out == "[global]\ntimeout = 60\n"


def test_git_lines_the_red_team_wrote_lose_their_secrets() -> None:
    """A section and a setting on one line, smtpPass, a credential split by a backslash."""
    out = _text(f'[http "https://h3/"] extraHeader = X-Api-Key: {T}\n[http] extraHeader = Authorization: Bearer {T}\n'
                f"[credential] helper = !echo password={T}\n[sendemail]\n\tsmtpPass = {T}\n"
                f"[http]\n\tproxy = http://u:{T}\\\n@proxy:3128\n\tsslVerify = false\n"
                f'[url "https://{T}@h6/"]insteadOf=https://h6/\n')
    assert T not in out
    assert out == ('[http "https://h3/"]\n[http]\n[credential]\n[sendemail]\n[http]\n\tproxy = http://proxy:3128\n'
                   '\tsslVerify = false\n[url "https://h6/"]insteadOf=https://h6/\n')


def test_bytes_that_are_not_utf8_pass_through() -> None:
    assert redact.text(b"a=\xff\n//h/:_authToken=x\n") == b"a=\xff\n"


def test_configs_are_redacted_copies_but_in_a_download_phase() -> None:
    present = {"/etc/npmrc", "/etc/pip.conf", "/usr/local/etc/npmrc", "/opt/node/etc/npmrc", "/usr/etc/gitconfig",
               "/srv/p/etc/npmrc"}
    links = {"/usr/etc/gitconfig": "/etc/gitconfig", "/usr/local/etc/npmrc": "/usr/local/lib/npmrc"}

    def real(p: str) -> str:
        return links.get(p, p)

    offline = configs.system_configs("/opt/node", (), "/srv/p", present.__contains__, real, lambda p: [])
    assert offline == [Mount("/etc/npmrc", "/etc/npmrc", kind="redact"), Mount("/etc/pip.conf", "/etc/pip.conf", kind="redact"),
                       Mount("/usr/local/lib/npmrc", "/usr/local/lib/npmrc", kind="redact"),
                       Mount("/opt/node/etc/npmrc", "/opt/node/etc/npmrc", kind="redact")]
    # a link to /etc/gitconfig shows /etc/gitconfig, which is not there; the project's own is the project's
    assert configs.system_configs("/srv/p", (), "/srv/p", present.__contains__, real, lambda p: []) == offline[:3]
    npm = configs.system_configs("/opt/node", ("npmrc", "gitconfig"), "/srv/p", present.__contains__, real, lambda p: [])
    assert npm == [Mount("/etc/npmrc", "/etc/npmrc", kind="copy"), Mount("/etc/pip.conf", "/etc/pip.conf", kind="redact")]
    pip = configs.system_configs("/opt/node", ("pip.conf", "gitconfig"), "/srv/p", present.__contains__, real, lambda p: [])
    assert pip == [Mount("/etc/npmrc", "/etc/npmrc", kind="redact"), Mount("/etc/pip.conf", "/etc/pip.conf", kind="copy"),
                   *offline[2:]]


def test_a_tool_prefix_s_builtin_and_site_configs_are_redacted_where_they_are() -> None:
    present = {"/usr/lib/node_modules/npm/npmrc", "/usr/pip.conf", "/home/u/.pyenv/versions/3.12.1/pip.conf",
               "/home/u/.pyenv/pip.conf"}

    def expand(pattern: str) -> list[str]:
        return ["/home/u/.pyenv/versions/3.12.1/pip.conf"] if pattern == "/home/u/.pyenv/versions/*/pip.conf" else []

    got = configs.system_configs("/home/u/.pyenv", (), "/srv/p", present.__contains__, lambda p: p, expand)
    assert [m.target for m in got] == ["/usr/pip.conf", "/usr/lib/node_modules/npm/npmrc", "/home/u/.pyenv/pip.conf",
                                       "/home/u/.pyenv/versions/3.12.1/pip.conf"]
    assert {m.kind for m in got} == {"redact"}


def test_no_private_key_directory_is_in_the_toolchain() -> None:
    for path in layout.ETC:
        assert not path.startswith(("/etc/ssl/private", "/etc/pki/tls/private", "/etc/pki/nssdb"))
        assert path not in ("/etc/ssl", "/etc/pki", "/etc/pki/tls")


def test_a_file_a_phase_names_under_etc_is_mounted_unless_every_sandbox_has_it() -> None:
    """A pip client certificate in /etc/ssl/private, a PIP_CONFIG_FILE in /etc/pip/: no longer in
    every sandbox (/etc/ssl is not bound whole), so the phase that names them mounts them."""
    assert layout.in_toolchain("/etc/ssl/certs/ca-certificates.crt") and layout.in_toolchain("/usr/share/x")
    assert not layout.in_toolchain("/etc/ssl/private/client.pem")
    assert not layout.in_toolchain("/etc/pip/pip.conf") and not layout.in_toolchain("/etc/pip.conf")
    assert not layout.in_toolchain("/etc/ssl") and not layout.in_toolchain("/usrx/y")


def test_a_quoted_section_name_with_an_escaped_quote_stays_one_name() -> None:
    """Red team 2: `[http "a\\"b"] extraHeader = ...` was cut at the escaped quote."""
    out = _text(f'[http "a\\"b]"] extraHeader = Authorization: Basic {T}\n\tsslVerify = true\n')
    assert out == '[http "a\\"b]"]\n\tsslVerify = true\n'


def test_query_tokens_oauth_and_bearer_go_red_team_3() -> None:
    out = _text(f"@s:registry=https://r3/?auth={T}&x=1\n[remote \"o\"]\n\turl = https://gitlab.com/o/r.git?private_token={T}\n"
                f"[github]\n\toauth = {T}\n\tuser = me\nheader = Bearer {T}\nindex = https://h/p?q=1&sig={T}#f\n")
    assert T not in out
    assert out == ("@s:registry=https://r3/?x=1\n[remote \"o\"]\n\turl = https://gitlab.com/o/r.git\n[github]\n"
                   "\tuser = me\nindex = https://h/p?q=1#f\n")


def test_a_submodule_git_directory_without_head_still_has_its_config_redacted(tmp_path: Path) -> None:
    """Red team 3: modules/X/config was shown as it is when modules/X held no HEAD."""
    root = tmp_path / "p"
    (root / ".git" / "modules" / "x").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".git" / "modules" / "x" / "config").write_text("[core]\n")
    shown = [m.target for m in configs.git_configs(str(root))]
    assert shown == [str(root / ".git" / "config"), str(root / ".git" / "modules" / "x" / "config")]


def test_a_project_config_is_never_read_through_a_directory_swapped_for_a_link(tmp_path: Path) -> None:
    """Another sandbox writing the project swaps `sub` (a nested repository sbox planned to show
    redacted) for a link to a repository outside it between the plan and the read: nothing is
    shown, not that repository's config (its remotes, its user) without the credentials."""
    other = tmp_path / "other-repo" / ".git"
    other.mkdir(parents=True)
    (other / "config").write_text('[remote "origin"]\n\turl = https://git.example/private/other.git\n')
    root = tmp_path / "project"
    (root / "sub" / ".git").mkdir(parents=True)
    (root / "sub" / ".git" / "config").write_text("[core]\n\tbare = false\n")
    config = str(root / "sub" / ".git" / "config")
    assert b"bare = false" in redact.read(config, str(root))
    (root / "sub").rename(root / "sub.was")
    (root / "sub").symlink_to(tmp_path / "other-repo")
    # The live control: by its path, the config is the other repository's now.
    assert b"private/other.git" in redact.read(config)
    assert redact.read(config, str(root)) == b""
    assert redact.read(config, str(root) + "/") == b""


def test_a_user_part_with_quotes_in_it_goes_red_team_11() -> None:
    """git drops quotes inside a value: `https://u:"TOKEN"@h/` is `https://u:TOKEN@h/` to it, and
    `git config remote.s.url 'https://u:TO"KEN@h/'` writes `\\"` into the file."""
    out = _text(f'[remote "c"]\n\turl = https://u:"{T}"@github.com/o/r\n\turl = https://u:{T}\\"X@github.com/x\n'
                f'\turl = "https://u:{T}@h/q"\n[url "https://github.com"] insteadOf = git@github.com:\n')
    assert T not in out
    assert out == ('[remote "c"]\n\turl = https://github.com/o/r\n\turl = https://github.com/x\n'
                   '\turl = "https://h/q"\n[url "https://github.com"] insteadOf = git@github.com:\n')


def test_a_user_part_with_an_apostrophe_or_a_comma_goes_red_team_12() -> None:
    out = _text(f"[remote \"a\"]\n\turl = https://u:{T}'x@h/x\n\turl = https://u:{T},x@h/y\n"
                f"index-url = 'https://u:{T}@h/simple'\n")
    assert T not in out
    assert out == "[remote \"a\"]\n\turl = https://h/x\n\turl = https://h/y\nindex-url = 'https://h/simple'\n"
