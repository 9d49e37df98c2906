"""`sbox activate`: the emitted code, run for real in each shell that is installed, twice."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sbox_shim import activate, cli, shims

POSIX_SHELLS = [s for s in ("bash", "sh", "dash", "zsh") if shutil.which(s)]
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture
def shims_dir(tmp_path: Path) -> Path:
    d = tmp_path / "my shims 'quoted'"
    shims.install(str(d), ["npm"], "/x/sbox")
    return d


def _run(shell: str, code: str, body: str, path: str, extra: dict[str, str] | None = None) -> str:
    env = {"PATH": path, "HOME": os.environ["HOME"], **(extra or {})}
    if shell == "fish":
        argv = ["fish", "--no-config", "-c", f"{code}\n{code}\n{body}"]
    else:
        argv = [shell, "-c", f'eval "$1"\neval "$1"\n{body}', shell, code]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("shell", POSIX_SHELLS)
def test_sourcing_twice_leaves_one_entry_first(shell: str, shims_dir: Path) -> None:
    code = activate.script("zsh" if shell == "zsh" else "bash" if shell == "bash" else "sh", str(shims_dir))
    start = f"{shims_dir}:/opt/a::/usr/bin:{shims_dir}:/bin:{shims_dir}"
    out = _run(shell, code, 'printf "%s\\n" "$PATH" "$SBOX_SHIM_DIRS"', start, {"SBOX_SHIM_DIRS": "/other"})
    path, dirs = out.splitlines()
    assert path == f"{shims_dir}:/opt/a::/usr/bin:/bin"
    assert dirs == f"{shims_dir}:/other"


@pytest.mark.parametrize("shell", POSIX_SHELLS)
def test_empty_path_and_no_shim_dirs(shell: str, shims_dir: Path) -> None:
    code = activate.script("sh", str(shims_dir))
    body = 'printf "%s\\n" "$PATH" "$SBOX_SHIM_DIRS"'
    argv = [shutil.which(shell) or shell, "-c", f'eval "$1"\n{body}', shell, code]
    proc = subprocess.run(argv, env={"PATH": ""}, capture_output=True, text=True, timeout=30)
    path, dirs = proc.stdout.splitlines()
    # zsh replaces an empty PATH with its built-in default before any code runs
    assert path == str(shims_dir) or (shell == "zsh" and path.split(":")[0] == str(shims_dir))
    assert path.split(":").count(str(shims_dir)) == 1 and dirs == str(shims_dir)


@pytest.mark.parametrize("shell", [s for s in ("bash", "zsh") if shutil.which(s)])
def test_the_shim_wins_over_a_command_already_hashed(shell: str, shims_dir: Path) -> None:
    code = activate.script(shell, str(shims_dir))
    body = "command -v npm"
    env = {"PATH": BASE_PATH, "HOME": os.environ["HOME"]}
    script = f'hash npm 2>/dev/null; command -v npm >/dev/null; eval "$1"\n{body}'
    proc = subprocess.run([shell, "-c", script, shell, code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == str(shims_dir / "npm")


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish(shims_dir: Path) -> None:
    code = activate.script("fish", str(shims_dir))
    out = _run("fish", code, 'string join : $PATH; echo $SBOX_SHIM_DIRS', f"/usr/bin:{shims_dir}:/bin")
    assert out.splitlines() == [f"{shims_dir}:/usr/bin:/bin", str(shims_dir)]


def test_the_command_prints_code_for_the_chosen_shell(shims_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["activate", "bash", "--dir", str(shims_dir)]) == 0
    out = capsys.readouterr()
    assert "hash -r" in out.out and "export PATH SBOX_SHIM_DIRS" in out.out
    assert out.err == ""
    assert cli.main(["activate", "zsh", "--dir", str(shims_dir)]) == 0
    assert "rehash" in capsys.readouterr().out
    assert cli.main(["activate", "fish", "--dir", str(shims_dir)]) == 0
    assert "set -gx PATH" in capsys.readouterr().out


def test_warns_when_no_shims_are_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["activate", "sh", "--dir", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr()
    assert "sbox shims install" in out.err
    assert str(tmp_path / "empty") in out.out


def test_default_dir_comes_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "custom"
    assert cli.main(["activate", "bash"], env={"SBOX_SHIMS_DIR": str(d)}) == 0
    assert f"PATH={d}$" in capsys.readouterr().out


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv (its own activate scripts); its `pip` a stand-in: only which one runs matters."""
    base = tmp_path_factory.mktemp("venv")
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(base / ".venv")], check=True, timeout=120)
    pip = base / ".venv" / "bin" / "pip"
    pip.write_text("#!/bin/sh\necho venv pip\n")
    pip.chmod(0o755)
    return base


@pytest.mark.parametrize("shell", [s for s in ("bash", "zsh") if shutil.which(s)])
def test_the_prompt_hook_puts_the_shims_back_before_an_activated_venv(shell: str, shims_dir: Path,
                                                                       venv: Path) -> None:
    """Issue 11, item 9: `source .venv/bin/activate` after `sbox activate` put the venv's pip
    first; at the next prompt of an interactive shell the shims are in front again."""
    shims.install(str(shims_dir), ["pip"], "/x/sbox")
    (venv / "sbox-activate").write_text(activate.script(shell, str(shims_dir)))
    lines = ['. "$PWD/sbox-activate"', ". .venv/bin/activate", 'printf "%s\\n" "$PATH"', "command -v pip",
             ". .venv/bin/activate", "command -v pip", "deactivate", "command -v pip"]
    argv = [shell, "--norc", "--noprofile", "-i"] if shell == "bash" else [shell, "-f", "-i"]
    proc = subprocess.run(argv, input="\n".join(lines) + "\n", cwd=venv, capture_output=True, text=True,
                          timeout=30, env={"PATH": BASE_PATH, "HOME": str(venv), "TERM": "dumb"})
    path, *found = proc.stdout.splitlines()
    assert path.split(":")[:2] == [str(shims_dir), str(venv / ".venv" / "bin")], proc.stdout + proc.stderr
    assert found == [str(shims_dir / "pip")] * 3, proc.stdout + proc.stderr


@pytest.mark.parametrize("shell", [s for s in ("bash", "zsh") if shutil.which(s)])
def test_the_hook_leaves_a_path_without_the_shims_alone(shell: str, shims_dir: Path) -> None:
    code = activate.script(shell, str(shims_dir))
    body = {"bash": 'PATH=/opt/x:/usr/bin; eval "$PROMPT_COMMAND"; echo "$PATH"',
            "zsh": 'PATH=/opt/x:/usr/bin; for f in $precmd_functions; do $f; done; echo "$PATH"'}[shell]
    assert _run(shell, code, body, BASE_PATH).strip() == "/opt/x:/usr/bin"
    body = body.replace("PATH=/opt/x:/usr/bin", "PATH=" + shlex.quote(f"/opt/x:{shims_dir}:/usr/bin"))
    assert _run(shell, code, body, BASE_PATH).strip() == f"{shims_dir}:/opt/x:/usr/bin"


def test_bash_registers_its_hook_once_after_the_existing_prompt_command(shims_dir: Path) -> None:
    code = activate.script("bash", str(shims_dir))
    out = _run("bash", code, 'printf "%s|" "$PROMPT_COMMAND"', BASE_PATH, {"PROMPT_COMMAND": "history -a;"})
    assert out == "history -a;\n_sbox_hook|"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_puts_the_shims_back_before_an_activated_venv_at_the_next_prompt(shims_dir: Path, venv: Path) -> None:
    shims.install(str(shims_dir), ["pip"], "/x/sbox")
    code = activate.script("fish", str(shims_dir))
    body = ("source .venv/bin/activate.fish; command -v pip; emit fish_prompt; command -v pip; "
            "string join : $PATH[1..2]")
    proc = subprocess.run(["fish", "--no-config", "-c", f"{code}\n{code}\n{body}"], cwd=venv, capture_output=True,
                          text=True, timeout=30, env={"PATH": BASE_PATH, "HOME": str(venv)})
    assert proc.stdout.splitlines() == [str(venv / ".venv" / "bin" / "pip"), str(shims_dir / "pip"),
                                        f"{shims_dir}:{venv / '.venv' / 'bin'}"], proc.stderr
