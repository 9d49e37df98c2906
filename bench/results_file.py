"""What every benchmark records beside its figures, and how it writes them."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def write(result: dict[str, Any], output: str) -> Path:
    """Stamp the result with the machine and the time, write it as JSON, say where."""
    result.setdefault("machine", machine())
    result.setdefault("when", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def summary(times: dict[str, list[float]], direct: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each way's median, min, max, runs and ratio to `direct[way]` (the direct median it compares with)."""
    import statistics

    return {way: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3), "max_s": round(max(t), 3),
                  "runs_s": [round(x, 3) for x in t], "ratio_to_direct": round(statistics.median(t) / direct[way], 2)}
            for way, t in times.items()}


def table(title: str, results: dict[str, dict[str, Any]], skipped: dict[str, str], width: int = 15) -> None:
    """The medians (min, max, ratio to direct) as a table under `title`, then the ways skipped."""
    print(title)
    print(f"{'way':<{width}} {'median':>9} {'min':>9} {'max':>9} {'vs direct':>10}")
    for way, r in results.items():
        print(f"{way:<{width}} {r['median_s']:>8.2f}s {r['min_s']:>8.2f}s {r['max_s']:>8.2f}s {r['ratio_to_direct']:>9.2f}x")
    for way, why in skipped.items():
        print(f"{way:<{width}} skipped: {why}")
