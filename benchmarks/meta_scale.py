"""3. Scale on meta: LLaMA-7B and -70B shapes, seq 2048, batch 1, counted on ``meta``.

Each (tool, shape) runs in its own process so that peak RSS is per tool: the
child's high-water mark (``VmHWM``; see ``_meta_child.py`` for why not
``ru_maxrss``) minus its baseline right after ``import torch``. The first call in a
process is "cold" (imports, caches); the reported time is the median of the
warm calls that follow, and the cold time is shown beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ._common import CLOCK, INFO, Row, fmt_flops, status, subprocess_env

NAME = "meta"
TIME_TARGET = 1.20
RSS_TARGET_MB = 400.0
CHILD = Path(__file__).with_name("_meta_child.py")


def _child(tool: str, shape: str, reps: int) -> dict:
    proc = subprocess.run([sys.executable, str(CHILD), tool, shape, str(reps), CLOCK["name"]], capture_output=True, text=True,
                          env=subprocess_env(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {shape} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    shapes = ["7B"] if quick else ["7B", "70B"]
    reps = 2 if quick else 4
    for shape in shapes:
        results = {}
        for tool in ("pytest-flops", "FlopCounterMode"):
            try:
                r = results[tool] = _child(tool, shape, reps)
            except Exception as exc:
                emit(Row(NAME, f"llama-{shape} {tool}", "failed", status="SKIP", detail=str(exc)[:160]))
                continue
            warm = statistics.median(r["times"][1:]) if len(r["times"]) > 1 else r["times"][0]
            r["warm"] = warm
            rss_target = tool == "pytest-flops" and shape == "70B"
            emit(Row(NAME, f"llama-{shape} {tool}", f"{warm:.3f} s", f"< {RSS_TARGET_MB:.0f} MB" if rss_target else "-",
                     status(r["peak_mb"] < RSS_TARGET_MB) if rss_target else INFO,
                     f"peak RSS +{r['peak_mb']:.0f} MB over import torch ({r['baseline_mb']:.0f} MB), "
                     f"cold call {r['times'][0]:.3f} s, {fmt_flops(r['flops'])} FLOPs"))
        if len(results) == 2:
            ours, ref = results["pytest-flops"], results["FlopCounterMode"]
            ratio = ours["warm"] / ref["warm"]
            emit(Row(NAME, f"llama-{shape} time vs FlopCounterMode", f"{ratio:.3f}x", f"<= {TIME_TARGET:.2f}x",
                     status(ratio <= TIME_TARGET),
                     f"warm {ours['warm']:.3f} s vs {ref['warm']:.3f} s; cold {ours['times'][0]:.3f} s vs "
                     f"{ref['times'][0]:.3f} s"))
            same = ours["flops"] == ref["flops"]
            emit(Row(NAME, f"llama-{shape} same FLOP total", "yes" if same else "NO", "equal", status(same),
                     f"{ours['flops']} vs {ref['flops']}"))
