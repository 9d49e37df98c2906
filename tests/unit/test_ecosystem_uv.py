"""The built-in uv policy, pure: config in temp files, no sandbox (the real uv: e2e/test_ecosystem_uv.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sbox_shim import ecosystems, shims
from sbox_shim.ecosystems import Context, Phase
from sbox_shim.errors import UsageError
from sbox_shim.trust import Input, decisive
from sbox_shim.trust.gate import classify


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("project", "home", "cache")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def ctx(where: dict[str, Path], env: dict[str, str] | None = None) -> Context:
    return Context(cwd=str(where["project"]), project_root=str(where["project"]), home=str(where["home"]),
                   env=env or {}, cache_dir=str(where["cache"]), real_tool="/usr/bin/uv")


def phases(argv: str, c: Context) -> tuple[Phase, ...]:
    found = ecosystems.phases(argv.split(), c)
    assert found is not None
    return found


@pytest.fixture
def venv(where: dict[str, Path]) -> Path:
    path = where["project"] / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path


def test_uv_has_a_policy_and_keeps_its_shim() -> None:
    assert "uv" in ecosystems.tools() and "uv" in shims.tools()


def test_pip_install_one_step_through_the_users_index_into_the_venv(where: dict[str, Path], venv: Path) -> None:
    c = ctx(where, {"UV_INDEX_URL": "https://user:pw@mirror.example:8443/simple", "UV_INDEX_MIRROR_PASSWORD": "pw",
                    "VIRTUAL_ENV": str(venv)})
    (step,) = phases("uv pip install requests", c)
    assert step.label == "download" and step.network and step.argv == ("uv", "pip", "install", "requests")
    assert "mirror.example:8443" in step.allow and "*.pypi.org" in step.allow
    assert step.writable == (".venv/",)
    assert step.env["VIRTUAL_ENV"] == str(venv) and step.env["UV_LINK_MODE"] == "copy"
    assert step.env["UV_PYTHON_DOWNLOADS"] == "never"
    assert "UV_INDEX_MIRROR_PASSWORD" in step.secrets  # the index's credentials: this step has the network
    cache = [m for m in step.mounts if m.kind == "cache"]
    assert [m.readonly for m in cache] == [False]


def test_pip_install_without_a_venv_is_refused_before_anything_runs(where: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="uv venv"):
        phases("uv pip install requests", ctx(where))
    with pytest.raises(UsageError, match="virtual environment only"):
        phases("uv pip install --system requests", ctx(where))
    with pytest.raises(UsageError, match="virtual environment only"):
        phases("uv pip install --python 3.12 requests", ctx(where))


def test_pip_install_into_the_venv_python_names(where: dict[str, Path], venv: Path) -> None:
    (step,) = phases("uv pip install --python .venv/bin/python requests", ctx(where))
    assert step.env["VIRTUAL_ENV"] == str(venv) and step.writable == (".venv/",)


def test_project_settings_are_implied_and_need_trust(where: dict[str, Path]) -> None:
    project = where["project"]
    (project / "pyproject.toml").write_text('[project]\nname = "a"\n\n[tool.uv]\nindex-url = "https://corp.example/simple"\n'
                                           '[[tool.uv.index]]\nurl = "https://other.example/simple"\n'
                                           '[tool.uvicorn]\nurl = "https://not-uv.example"\n')
    (project / "uv.toml").write_text('extra-index-url = ["https://third.example/simple"]\n')
    c = ctx(where)
    (step,) = phases("uv sync", c)
    assert {"corp.example", "other.example"} <= set(step.implied) and "corp.example" not in step.allow
    assert "not-uv.example" not in step.implied
    assert step.writable is True  # uv replaces uv.lock and pyproject.toml through a temporary file beside them
    kinds = {(Path(p).name, part) for p, _, part in ecosystems.inputs(("uv", "sync"), c)}
    assert kinds == {("pyproject.toml", "tool.uv"), ("uv.toml", "all")}
    text = (project / "pyproject.toml").read_bytes()
    assert "corp.example" in decisive(text, "tool.uv") and "not-uv" not in decisive(text, "tool.uv")
    assert classify(str(project / "pyproject.toml")) == Input(str(project / "pyproject.toml"),
                                                              "uv settings ([tool.uv])", "tool.uv")


def test_run_syncs_online_then_runs_offline_without_index_credentials(where: dict[str, Path]) -> None:
    (where["project"] / "pyproject.toml").write_text('[project]\nname = "a"\n')
    c = ctx(where, {"UV_INDEX_URL": "https://mirror.example/simple", "UV_INDEX_X_PASSWORD": "pw", "UV_COMPILE_BYTECODE": "1"})
    sync, run = phases("uv run --frozen --extra cli -- pytest -x", c)
    assert sync.argv == ("uv", "sync", "--inexact", "--frozen", "--extra", "cli") and sync.network
    assert run.argv == ("uv", "run", "--no-sync", "--offline", "--frozen", "--extra", "cli", "--", "pytest", "-x")
    assert not run.network and run.env["UV_OFFLINE"] == "1"
    assert run.secrets == ("UV_COMPILE_BYTECODE",)
    assert [m.kind for m in run.mounts if m.target == sync.env["UV_CACHE_DIR"]] == ["tmpfs"]
    (only,) = phases("uv run --no-sync python x.py", c)
    assert only.label == "scripts"


def test_other_subcommands_pass_through(where: dict[str, Path]) -> None:
    c = ctx(where)
    for argv in ("uv --version", "uv venv", "uv pip list", "uv tool install ruff", "uv cache clean"):
        assert ecosystems.phases(argv.split(), c) is None, argv
