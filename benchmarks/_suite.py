"""Generated pytest suites and timed pytest runs for the plugin benchmarks."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from ._common import CLOCK, subprocess_env

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def write_suite(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    # An ini file of its own: the suite must not pick up the project's pytest settings.
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pytest_run(root: Path, extra: list[str], timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    """Run pytest in ``root``; the time is the child's CPU time (user + sys) or wall time, per the clock."""
    cpu, wall = _children_cpu(), time.perf_counter()
    proc = subprocess.run(PYTEST + extra, cwd=root, capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)
    cpu, wall = _children_cpu() - cpu, time.perf_counter() - wall
    return (cpu if CLOCK["name"] == "cpu" else wall), proc


def tail(proc: subprocess.CompletedProcess, n: int = 1) -> str:
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[:160]
