"""Shared pieces: result rows, the table printer, paired timing, peer loading."""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.metadata as md
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

PASS, MISS, INFO, SKIP = "PASS", "MISS", "-", "SKIP"


@dataclass
class Row:
    bench: str
    name: str
    measured: str
    target: str = "-"
    status: str = INFO
    detail: str = ""


_COLS = (("benchmark", 46), ("measured", 13), ("target", 10), ("status", 6))


def header() -> str:
    head = "  ".join(f"{title:<{width}}" for title, width in _COLS) + "  detail"
    return head + "\n" + "-" * (len(head) + 40)


def format_row(row: Row) -> str:
    cells = (f"{row.bench}: {row.name}", row.measured, row.target, row.status)
    return "  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, _COLS)) + "  " + row.detail


def status(ok: bool) -> str:
    return PASS if ok else MISS


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def fmt_flops(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3f}{unit}"
    return f"{value:g}"


def subprocess_env() -> dict[str, str]:
    """Children import this checkout's pytest_flops first, whatever is installed, with bytecode caching on."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTEST_ADDOPTS", None)
    # An installed package has its bytecode compiled; without it every child recompiles pytest_flops
    # (about 40 ms for the plugin's modules), which is not a cost users see.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# -- timing -----------------------------------------------------------------
#: What "time" means: CPU time of this process (default; steadier on a shared
#: machine, and with one torch thread it is the forward's time) or wall time.
CLOCK = {"name": "cpu"}


def use_clock(name: str) -> None:
    CLOCK["name"] = name


def clock() -> float:
    return time.process_time() if CLOCK["name"] == "cpu" else time.perf_counter()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = clock()
    result = fn()
    return clock() - start, result


def paired(plain: Callable[[Any], Any], counted: Callable[[Any], Any], reps: int,
           setup: Callable[[], Any] | None = None) -> tuple[list[float], list[float], list[float], Any]:
    """Interleaved A/B timing in ABBA order: per-pair ratios counted/plain.

    ``setup()`` (untimed) returns the object both calls of one pair get; the
    default passes ``None``. Returns (ratios, plain times, counted times, last result).
    """
    ratios, plains, counteds, result = [], [], [], None
    for i in range(reps):
        target = setup() if setup is not None else None
        if i % 2 == 0:
            tp, _ = timed(lambda: plain(target))
            tc, result = timed(lambda: counted(target))
        else:
            tc, result = timed(lambda: counted(target))
            tp, _ = timed(lambda: plain(target))
        del target
        ratios.append(tc / tp)
        plains.append(tp)
        counteds.append(tc)
    return ratios, plains, counteds, result


median = statistics.median


# -- peers ------------------------------------------------------------------
def _drop_modules(name: str) -> dict[str, Any]:
    found = {k: v for k, v in sys.modules.items() if k == name or k.startswith(name + ".")}
    for key in found:
        del sys.modules[key]
    return found


def import_isolated(name: str, path: str | None) -> Any:
    """Import package ``name`` (from ``path`` first when given) without leaving it in sys.modules.

    Two distributions install a top-level ``thop`` (thop and ultralytics-thop);
    each benchmark gets its own module objects, so both can be compared in one run.
    """
    saved = _drop_modules(name)
    if path:
        sys.path.insert(0, path)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        if path:
            sys.path.remove(path)
        _drop_modules(name)
        sys.modules.update(saved)


def _dist_files_thop(dist: md.Distribution) -> bool:
    return any(str(f).startswith("thop/") for f in (dist.files or ()))


def load_thop(variant: str) -> tuple[Any, str]:
    """``(profile function, where)`` for ``variant`` "thop" or "ultralytics-thop", or ``(None, reason)``.

    The original thop may live in the environment (if ultralytics-thop is not
    installed there) or in a ``pip install --target DIR thop`` directory named by
    ``BENCH_THOP_PATH`` (default ``/tmp/thop_orig``).
    """
    try:
        env_dist = md.distribution(variant)
    except md.PackageNotFoundError:
        env_dist = None
    if variant == "thop":
        other = None
        with contextlib.suppress(md.PackageNotFoundError):
            other = md.distribution("ultralytics-thop")
        if env_dist is not None and other is None:
            module = import_isolated("thop", None)
            return _checked(module, env_dist.version, "thop")
        target = os.environ.get("BENCH_THOP_PATH", "/tmp/thop_orig")
        dists = [d for d in md.distributions(path=[target]) if d.metadata["Name"] == "thop"]
        if dists and (Path(target) / "thop").is_dir():
            module = import_isolated("thop", target)
            return _checked(module, dists[0].version, "thop", f" from {target}")
        return None, "not installed"
    if env_dist is None:
        return None, "not installed"
    module = import_isolated("thop", None)
    return _checked(module, env_dist.version, "ultralytics-thop")


def _checked(module: Any, expected: str, label: str, where: str = "") -> tuple[Any, str]:
    # Both distributions write thop/: if both went into one environment, the files are a mix.
    found = str(getattr(module, "__version__", ""))
    if not found or not (expected.startswith(found) or found.startswith(expected)):
        return None, f"conflict: module thop is {found}, not {label} {expected}"
    return module.profile, f"{label} {expected}{where}"


def version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        pass
    if dist == "thop":  # the original thop, installed beside ultralytics-thop with pip --target
        target = os.environ.get("BENCH_THOP_PATH", "/tmp/thop_orig")
        for found in md.distributions(path=[target]):
            if found.metadata["Name"] == "thop":
                return f"{found.version} (in {target})"
    return None
