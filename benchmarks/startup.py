"""4. Plugin start-up: a 300-test suite that never touches torch, with and without the plugin.

``python -m pytest -q -p no:cacheprovider`` vs the same with ``-p no:flops``
(the plugin is the ``flops`` entry point, ``pytest_flops.plugin``); runs
alternate, the result is the ratio of the medians. A separate untimed run
reports whether loading the plugin imported torch.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

from ._common import INFO, Row, fmt_ms, status
from ._suite import pytest_run, tail, write_suite

NAME = "startup"
TARGET = 1.03
TESTS = 300

CONFTEST = '''\
import os, sys

def pytest_unconfigure(config):
    path = os.environ.get("BENCH_TORCH_FLAG")
    if path:
        with open(path, "w") as f:
            f.write(str("torch" in sys.modules))
'''


def _suite(root: Path) -> Path:
    files = {"conftest.py": CONFTEST}
    per_file = 50
    for f in range(TESTS // per_file):
        files[f"test_plain_{f}.py"] = "".join(
            f"def test_{i}():\n    assert {i} == {i}\n\n" for i in range(f * per_file, (f + 1) * per_file))
    return write_suite(root, files)


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    import os

    reps = 2 if quick else 9
    with tempfile.TemporaryDirectory(prefix="flops-bench-startup-") as tmp:
        root = _suite(Path(tmp) / "suite")
        variants = {"with plugin": [], "-p no:flops": ["-p", "no:flops"]}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for name, extra in variants.items():  # warm-up, and a check that both run
            _, proc = pytest_run(root, extra)
            if proc.returncode != 0:
                emit(Row(NAME, f"{TESTS} tests, torch-free", "failed", status="SKIP",
                         detail=f"{name}: rc={proc.returncode}: {tail(proc)}"))
                return
        for i in range(reps):
            order = list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]
            for name, extra in order:
                elapsed, _ = pytest_run(root, extra)
                times[name].append(elapsed)
        with_plugin = statistics.median(times["with plugin"])
        without = statistics.median(times["-p no:flops"])
        ratio = with_plugin / without
        emit(Row(NAME, f"{TESTS} tests, torch-free", f"{ratio:.3f}x", f"<= {TARGET:.2f}x", status(ratio <= TARGET),
                 f"median {fmt_ms(with_plugin)} with plugin vs {fmt_ms(without)} without, n={reps} each"))
        flag = Path(tmp) / "torch_flag"
        os.environ["BENCH_TORCH_FLAG"] = str(flag)
        try:
            pytest_run(root, [])
        finally:
            del os.environ["BENCH_TORCH_FLAG"]
        imported = flag.read_text() if flag.exists() else "unknown"
        emit(Row(NAME, "plugin imports torch in that suite", {"True": "yes", "False": "no"}.get(imported, imported),
                 "no", status(imported == "False") if imported in ("True", "False") else INFO))
