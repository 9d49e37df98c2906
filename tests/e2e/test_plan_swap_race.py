"""Planning a step while another sandbox swaps a directory of the project for a link.

A sandbox with the project writable (a dev server) swaps `sub/`, which holds a nested repository
whose config carries a credential, and `sub.x`, a link to a HOME-like directory without one, in a
loop, while sbox plans another step. The plan shows each git config of the project redacted in
the sandbox (configs.git_configs); a config the planning walk does not see is shown as it is, in
that step and in every later run of its kept plan. Nothing is mocked: sbox's own functions, a
real concurrent process, the files on disk.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sbox_shim import configs, tree
from sbox_shim.errors import UsageError

FLIP = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
print("flipping", flush=True)
while True:
    libc.renameat2(-100, b"sub", -100, b"sub.x", 2)  # RENAME_EXCHANGE: `sub` is the dir or the link
"""


def test_a_nested_repository_s_config_is_never_left_unredacted_by_a_swap(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)  # the same name, no repository in it
    root = tmp_path / "project"
    repo = root / "sub" / ".git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "config").write_text('[remote "origin"]\n\turl = https://me:SBOX-TOKEN@git.example.test/x.git\n')
    (root / "sub.x").symlink_to(home / "sub")
    config = str(repo / "config")
    gits = tree.inspect(str(root), True).gits  # found before the race, as a plan's first look does
    assert str(repo) in gits
    # The control: unraced, the config is shown redacted.
    assert config in [m.source for m in configs.git_configs(str(root), gits)]
    flipper = subprocess.Popen([sys.executable, "-c", FLIP, str(root)], stdout=subprocess.PIPE, text=True)
    assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
    shown = refused = left = through_link = 0
    try:
        for _ in range(3000):
            through_link += not os.path.isdir(repo)  # live: by path, `sub` is now and then HOME's
            try:
                mounts = configs.git_configs(str(root), gits)
            except UsageError as exc:
                assert "no longer a directory reached without a link" in str(exc)
                refused += 1
                continue
            if config in [m.source for m in mounts if m.kind == "redact"]:
                shown += 1
            else:
                left += 1
    finally:
        flipper.kill()
        flipper.wait()
    assert through_link, "the swap never showed HOME's directory by path: the check would prove nothing"
    assert shown, "the config was never planned redacted: the check would prove nothing"
    assert not left, f"{left} of {shown + left} plans left the nested repository's config unredacted ({refused} refused)"
