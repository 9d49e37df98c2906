"""Real packages installed directly and through sbox (bwrap, docker), trees compared byte for byte.

    python bench/compat.py [--only TEXT]... [--ecosystem npm|pip|cargo|go]... [--ways direct,bwrap,docker]
                           [--timeout 420] [--cases bench/compat_cases.toml] [--output bench/results/compat.json]

The cases are in `compat_cases.toml` (what each one installs and how it is judged). Each case
runs directly first, then through `sbox run --backend bwrap` and `--backend docker`, one at a
time, always in a fresh project at the same path, with a bounded time each (`--timeout`, per case
and way). "ok" means the command exited 0 and left what the case checks for; "identical" compares
the project tree with the direct run's (`compat_tree.py`: byte for byte but Python's bytecode
caches). When sbox fails or differs, the table shows sbox's own line about it.

This is the one bench that talks to the real registries, and only through npm's, pip's, cargo's
and go's ordinary clients with this machine's default configuration: a temporary HOME gets a copy
of the user's tool configuration files (never printed), nothing else is configured. When a
registry does not answer, its cases are skipped; when none does, the script says so in one line
and exits 0. Writes `results/compat.json` and prints a markdown table the README quotes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

import compat_redact  # noqa: E402
import compat_run  # noqa: E402
import compat_tree  # noqa: E402
import results_file  # noqa: E402

WAYS = ("direct", "bwrap", "docker")
# the user's tool configuration that lets the clients reach their registries (relative to HOME)
CONFIG_FILES = (".npmrc", ".config/pip/pip.conf", ".pip/pip.conf", ".cargo/config.toml",
                ".cargo/config", ".config/go/env")
PROBE_TIMEOUT = 60


def fake_home(home: Path) -> None:
    real = Path.home()
    for rel in CONFIG_FILES:
        if (real / rel).is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real / rel, home / rel)


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SBOX_") and not k.lower().startswith("npm_config_") and k != "VIRTUAL_ENV"}
    home = work / "home"
    home.mkdir()
    fake_home(home)
    if "RUSTUP_HOME" not in env and (Path.home() / ".rustup").is_dir():
        env["RUSTUP_HOME"] = str(Path.home() / ".rustup")  # rustup's toolchains stay where they are
    env.update(HOME=str(home), SBOX_STATE_DIR=str(work / "sbox-state"), SBOX_CACHE_DIR=str(work / "sbox-cache"),
               SBOX_USER_CONFIG=str(work / "no-user-config.yaml"), npm_config_update_notifier="false")
    return env


def probe(ecosystem: str, work: Path, env: dict[str, str], python: str) -> str | None:
    """None when the ecosystem's registry answers its own client directly, else why not."""
    tool = {"npm": "npm", "pip": python, "cargo": "cargo", "go": "go"}[ecosystem]
    if not shutil.which(tool):
        return f"{tool} is not installed"
    where = work / f"probe-{ecosystem}"
    where.mkdir()
    argv = {
        "npm": ["npm", "view", "is-number", "version"],
        "pip": [python, "-m", "pip", "download", "--no-deps", "--dest", str(where), "six"],
        "cargo": ["cargo", "search", "--limit", "1", "itoa"],
        "go": ["go", "mod", "download", "golang.org/x/text@v0.14.0"],
    }[ecosystem]
    try:
        proc = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"registry did not answer `{' '.join(argv[:3])}` within {PROBE_TIMEOUT} s"
    if proc.returncode != 0:
        last = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:] or [""]
        return f"registry unreachable (`{' '.join(argv[:3])}` exited {proc.returncode}: {last[0][:120]})"
    return None


def sbox_command() -> str:
    beside = Path(sys.executable).parent / "sbox"
    return str(beside) if beside.exists() else shutil.which("sbox") or "sbox"


def select(cases: list[dict[str, Any]], only: list[str], ecosystems: list[str]) -> list[dict[str, Any]]:
    return [c for c in cases
            if (not only or any(o.lower() in c["name"].lower() for o in only))
            and (not ecosystems or c["ecosystem"] in ecosystems)]


def judge(record: dict[str, Any], outcomes: dict[str, compat_run.Outcome]) -> None:
    direct = outcomes.get("direct")
    for way, outcome in outcomes.items():
        record[way] = {k: getattr(outcome, k) for k in ("ok", "status", "seconds", "explanation", "sbox_lines")}
        if way != "direct" and not outcome.ok:
            record[way]["stderr_tail"] = outcome.stderr_tail
        if way != "direct" and direct and direct.ok and outcome.ok:
            diff = compat_tree.differences(direct.manifest, outcome.manifest)
            record[way]["identical"] = not diff
            record[way]["differences"] = diff[:50]
            record[way]["difference_count"] = len(diff)


def cell(record: dict[str, Any], way: str) -> str:
    r = record.get(way)
    if r is None:
        return "—"
    return f"ok {r['seconds']:.0f}s" if r["ok"] else f"**{r['status']}**"


def identical_cell(record: dict[str, Any], ways: list[str]) -> str:
    parts = []
    for way in ways:
        r = record.get(way, {})
        if "identical" in r:
            parts.append(f"{way}: " + ("yes" if r["identical"] else compat_tree.summary(r["differences"],
                                                                                         r["difference_count"])))
    return "; ".join(parts) or "—"


def says_cell(record: dict[str, Any], ways: list[str]) -> str:
    lines = {w: str(record[w]["explanation"]) for w in ways if w in record and record[w]["explanation"]
             and (not record[w]["ok"] or not record[w].get("identical", True))}
    if len(set(lines.values())) == 1:
        return next(iter(lines.values())).replace("|", "\\|")
    return " / ".join(f"{w}: {t}" for w, t in lines.items()).replace("|", "\\|")


def table(records: list[dict[str, Any]], ways: list[str]) -> str:
    sboxed = [w for w in ways if w != "direct"]
    rows = ["| package | eco | " + " | ".join(ways) + " | identical to direct | sbox says |",
            "|---|---|" + "---|" * len(ways) + "---|---|"]
    for r in records:
        if "skipped" in r:
            rows.append(f"| {r['name']} | {r['ecosystem']} | " + " | ".join("skipped" for _ in ways)
                        + f" | — | {r['skipped']} |")
            continue
        rows.append(f"| {r['name']} | {r['ecosystem']} | " + " | ".join(cell(r, w) for w in ways)
                    + f" | {identical_cell(r, sboxed)} | {says_cell(r, sboxed)} |")
    return "\n".join(rows)


def merge(records: list[dict[str, Any]], output: Path, cases_file: str) -> list[dict[str, Any]]:
    """These records, and the output's earlier ones for every other case, in the cases' order."""
    earlier = compat_redact.deep(json.loads(output.read_text())["cases"]) if output.is_file() else []
    by_name = {r["name"]: r for r in earlier} | {r["name"]: r for r in records}
    with open(cases_file, "rb") as f:
        order = [c["name"] for c in tomllib.load(f)["case"]]
    return [by_name[n] for n in order if n in by_name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=str(Path(__file__).parent / "compat_cases.toml"))
    parser.add_argument("--only", action="append", default=[], help="run cases whose name contains this")
    parser.add_argument("--ecosystem", action="append", default=[], choices=["npm", "pip", "cargo", "go"])
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds per case and way")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "compat.json"))
    parser.add_argument("--update", action="store_true",
                        help="keep the output's earlier results for the cases not run now (with --only)")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if not ways or ways[0] != "direct" or any(w not in WAYS for w in ways):
        parser.error(f"--ways must start with direct and name only {', '.join(WAYS)}")
    with open(args.cases, "rb") as f:
        cases = select(tomllib.load(f)["case"], args.only, args.ecosystem)
    if not cases:
        parser.error("no case matches the filters")
    python = shutil.which("python3") or sys.executable
    sbox = sbox_command()

    with tempfile.TemporaryDirectory(prefix="sbox-compat-") as tmp:
        work = Path(tmp)
        env = base_env(work)
        needed = sorted({c["ecosystem"] for c in cases if "skip" not in c})
        down = {e: why for e in needed if (why := probe(e, work, env, python))}
        if needed and len(down) == len(needed):
            print(compat_redact.text(f"compat: skipped, no registry reachable "
                                     f"({'; '.join(f'{e}: {w}' for e, w in down.items())})"))
            return 0
        records: list[dict[str, Any]] = []
        started = time.time()
        for n, case in enumerate(cases, 1):
            steps = case.get("steps") or [case["command"]]
            record: dict[str, Any] = {"name": case["name"], "ecosystem": case["ecosystem"],
                                      "command": " && ".join(" ".join(s) for s in steps), "env": case.get("env", {})}
            skip = case.get("skip") or down.get(case["ecosystem"])
            if skip:
                record["skipped"] = compat_redact.text(skip)
                records.append(record)
                print(f"[{n}/{len(cases)}] {case['name']}: skipped ({skip})", file=sys.stderr)
                continue
            outcomes = {}
            for way in ways:
                outcomes[way] = compat_run.run_case(case, way, work / "area", env, sbox, python, args.timeout)
                o = outcomes[way]
                print(f"[{n}/{len(cases)}] {case['name']} {way}: {o.status} {o.seconds:.1f}s"
                      + (f" — {compat_redact.text(o.explanation)}" if o.explanation else ""), file=sys.stderr)
            judge(record, outcomes)
            records.append(compat_redact.deep(record))
        elapsed = time.time() - started

    versions = {tool: subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
                for tool in ("node", "npm", "cargo", "go") if shutil.which(tool) and tool != "go"}
    if shutil.which("go"):
        versions["go"] = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    if args.update:
        records = merge(records, Path(args.output), args.cases)
    rendered = table(records, ways)
    ran = [r for r in records if "skipped" not in r]
    alike = [r for r in ran if all(r.get(w, {}).get("identical") for w in ways if w != "direct")]
    results_file.write({
        "benchmark": "real packages from the real registries, directly and through sbox, trees compared",
        "ways": ways, "timeout_s": args.timeout, "elapsed_s": round(elapsed, 1),
        "machine": {**results_file.machine(), **versions},
        "registries_unreachable": compat_redact.deep(down), "volatile_ignored": list(compat_tree.VOLATILE),
        "summary": {"cases": len(records), "ran": len(ran), "direct_ok": sum(r["direct"]["ok"] for r in ran),
                    "ok_and_identical_on_every_sandbox": len(alike)},
        "cases": records, "table_markdown": rendered,
    }, args.output)
    print(rendered)
    print(f"\n{len(alike)} of {len(ran)} cases run behave as directly on every backend "
          f"({sum(r['direct']['ok'] for r in ran)} succeeded directly); {len(records) - len(ran)} skipped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
