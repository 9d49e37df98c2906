"""Helpers for the trust-boundary tests: a canary secret, the real `sbox` run as a user would,
hostile files planted by a sandboxed run, and the checks made on the host afterwards."""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .sboxcli import run_sbox


@dataclass(frozen=True)
class Canary:
    """A secret file on the host that no sandbox, and no refused run, may read."""

    path: Path
    token: str

    @classmethod
    def plant(cls, path: Path) -> "Canary":
        token = "SBOX-CANARY-" + secrets.token_hex(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token + "\n")
        return cls(path, token)

    def assert_unread(self, *outputs: str, trees: Iterable[Path] = ()) -> None:
        """The token appears in no output and in no file under `trees` (but the canary itself)."""
        for out in outputs:
            assert self.token not in out, f"canary leaked into output:\n{out[-3000:]}"
        for tree in trees:
            for path in _files(tree):
                if path == self.path:
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                assert self.token.encode() not in data, f"canary leaked into {path}"


def _files(tree: Path) -> Iterable[Path]:
    for dirpath, _, names in os.walk(tree):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


class Sbox:
    """The real `sbox` command, with the environment of the test (fake HOME, state, caches)."""

    def __init__(self, sbox_bin: str, env: Mapping[str, str] | None = None) -> None:
        self.bin = sbox_bin
        self.env = dict(os.environ if env is None else env)

    def __call__(self, cwd: Path, *args: str, env: Mapping[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_sbox(self.bin, list(args), cwd, env=dict(env if env is not None else self.env), timeout=timeout)

    def run(self, cwd: Path, *command: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self(cwd, "run", "--", *command, **kw)  # type: ignore[arg-type]

    def plant(self, cwd: Path, script: str, env: Mapping[str, str] | None = None) -> None:
        """What an install script does: a sandboxed run writes hostile files into the project."""
        result = self.run(cwd, "sh", "-c", script, env=env)
        assert result.returncode == 0, f"the planting run failed:\n{result.stdout}\n{result.stderr}"

    def trust(self, cwd: Path, *paths: str | Path) -> None:
        """`sbox trust PATH…` as the user types it."""
        result = self(cwd, "trust", *map(str, paths))
        assert result.returncode == 0, result.stdout + result.stderr


def config(root: Path, backend: str, extra: str = "", name: str = "sbox.yaml") -> Path:
    """An opt-in file for this backend, trusted as its user would."""
    from .trust import trust

    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(f"version: 1\nbackend: {backend}\n{extra}")
    trust(path)
    return path


def refused(result: subprocess.CompletedProcess[str], *paths: Path, words: str = "sbox trust") -> None:
    """Exit 2, nothing run: exactly one stderr line per file, naming it and the remedy."""
    out = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, out
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(paths), out
    for path in paths:
        assert len([ln for ln in lines if str(path) in ln]) == 1, out
    assert all(words in ln for ln in lines), out
    assert result.stdout == "", out
