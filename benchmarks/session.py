"""5. Session cost: N tests that each call the ``flops`` fixture on a tiny model,
with and without ``--flops-report --flops-json=PATH``.

The extra cost of reporting is (median with options - median without), shown
as a ratio and per test at two suite sizes; growth is linear when the
per-test extra cost at the larger N is within 1.5x of the smaller N's (a
smaller-N cost under 0.05 ms a test counts as 0.05 ms: noise, not a base).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

from ._common import INFO, SKIP, Row, fmt_ms, status
from ._suite import pytest_run, tail, write_suite

NAME = "session"
LINEAR = 1.5
NEGLIGIBLE_S = 0.05e-3
PER_FILE = 100

HEAD = '''\
import torch

model = torch.nn.Linear(8, 8)
x = torch.randn(1, 8)

'''


def _suite(root: Path, n: int) -> Path:
    files = {}
    for f in range((n + PER_FILE - 1) // PER_FILE):
        tests = range(f * PER_FILE, min(n, (f + 1) * PER_FILE))
        files[f"test_tiny_{f}.py"] = HEAD + "".join(
            f"def test_{i}(flops):\n    m = flops(model, x)\n    assert m.flops > 0\n\n" for i in tests)
    return write_suite(root, files)


def _options(root: Path, json_path: Path) -> tuple[list[str] | None, str, float]:
    """The reporting options this plugin accepts (falling back to --flops-report alone), and that run's time."""
    for extra, note in (([f"--flops-report", f"--flops-json={json_path}"], ""),
                        (["--flops-report"], "--flops-json not available: measured --flops-report alone")):
        elapsed, proc = pytest_run(root, extra)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return extra, note, elapsed
        if "unrecognized arguments" not in out and "no such option" not in out:
            return None, f"rc={proc.returncode}: {tail(proc)}", 0.0
    return None, "plugin options not available", 0.0


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    sizes = (100, 400) if quick else (500, 2000)
    # Quick: the check runs at the first size are its samples and the second size gets one pair, unwarmed.
    reps = 1 if quick else 3
    per_test: dict[int, float] = {}
    extra: list[str] | None = None
    note = ""
    with tempfile.TemporaryDirectory(prefix="flops-bench-session-") as tmp:
        json_path = Path(tmp) / "flops.json"
        for n in sizes:
            root = _suite(Path(tmp) / f"suite{n}", n)
            times: dict[str, list[float]] = {"plain": [], "report": []}
            if extra is None:
                elapsed, proc = pytest_run(root, [])
                if proc.returncode != 0:
                    out = proc.stdout + proc.stderr
                    reason = "plugin not available" if "fixture 'flops' not found" in out else "failed"
                    emit(Row(NAME, f"N={n} extra cost", reason, status=SKIP, detail=tail(proc)))
                    return
                extra, note, elapsed_report = _options(root, json_path)
                if extra is None:
                    emit(Row(NAME, f"N={n} extra cost", "plugin not available", status=SKIP, detail=note))
                    return
                if quick:
                    times["plain"].append(elapsed)
                    times["report"].append(elapsed_report)
            elif not quick:
                pytest_run(root, [])  # warm-up: bytecode for the new suite
            for i in range(reps if not (quick and times["plain"]) else 0):
                order = [("plain", []), ("report", extra)]
                for name, args in (order if i % 2 == 0 else order[::-1]):
                    json_path.unlink(missing_ok=True)
                    elapsed, proc = pytest_run(root, args)
                    times[name].append(elapsed)
            base, rep = statistics.median(times["plain"]), statistics.median(times["report"])
            per_test[n] = (rep - base) / n
            json_note = ""
            if "--flops-json" in " ".join(extra):
                json_note = f", json {json_path.stat().st_size / 1024:.0f} KB" if json_path.exists() else ", NO json"
            emit(Row(NAME, f"N={n} extra cost", f"{rep / base:.3f}x", "-", INFO,
                     f"{per_test[n] * 1e3:+.3f} ms/test; {fmt_ms(base)} plain vs {fmt_ms(rep)} reporting, "
                     f"n={len(times['plain'])} each{json_note}{'; ' + note if note else ''}"))
    small, large = (per_test[n] for n in sizes)
    # End to end, the extra cost is a fraction of a millisecond a test against whole-run noise of a
    # few hundred milliseconds: reported, not judged. Linearity is judged on the reporting work itself.
    emit(Row(NAME, f"end-to-end growth N={sizes[0]}->{sizes[1]}",
             f"{large / small:.2f}x" if small > NEGLIGIBLE_S else "n/a", "-", INFO,
             f"per-test extra {small * 1e3:+.3f} -> {large * 1e3:+.3f} ms (noise-bound: see the next row)"))
    _direct(quick, emit)


def _direct(quick: bool, emit: Callable[[Row], None]) -> None:
    """The session's per-test reporting work, timed in-process: record, terminal table, JSON document."""
    import time

    import torch

    import pytest_flops
    from pytest_flops.outputs.terminal import render_table
    from pytest_flops.outputs.json_results import build_results, dumps

    measurement = pytest_flops.count(torch.nn.Linear(8, 8), torch.randn(1, 8))
    sizes = (500, 2000)
    per_test = {}
    for n in sizes:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            records = [{"nodeid": f"test_tiny.py::test_{i}", "budget": None, "verdicts": None, "worker": None,
                        "measurements": [measurement.to_dict()], "outcome": "passed"} for i in range(n)]
            render_table(records)
            dumps(build_results(records, {}, {}, None, None))
            best = min(best, time.perf_counter() - start)
        per_test[n] = best / n
    growth = per_test[sizes[-1]] / per_test[sizes[0]]
    emit(Row(NAME, f"linear growth N={sizes[0]}->{sizes[-1]}", f"{growth:.2f}x", f"<= {LINEAR:.1f}x",
             status(growth <= LINEAR),
             "reporting work per test (record, table, JSON): "
             + " -> ".join(f"{per_test[n] * 1e6:.0f} us" for n in sizes)))
