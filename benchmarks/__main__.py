"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME ...] [--list]``.

Prints one table row per measurement (benchmark, measured ratio or time,
target, PASS/MISS, detail) as it completes, then the whole table. It never
fails on a missed target: the exit status is non-zero only for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
import traceback

from . import compute_free, gpt, meta_scale, overhead, session, startup
from ._common import MISS, PASS, Row, format_row, header, use_clock, version

BENCHMARKS = {m.NAME: m for m in (overhead, gpt, compute_free, meta_scale, startup, session)}


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (under a minute): fewer repetitions, "
                        "batch 1 only, a 4-layer BERT, the 7B shape only, smaller suites")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these benchmarks (repeat or comma-separate): {', '.join(BENCHMARKS)}")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time "
                        "(CPU time, the default, is steadier when other work shares the machine)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, module in BENCHMARKS.items():
            print(f"{name:14} {module.__doc__.strip().splitlines()[0]}")
        return 0
    selected = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    use_clock("wall" if args.wall else "cpu")
    import torch

    print(f"pytest-flops benchmarks{' (quick)' if args.quick else ''}: {datetime.date.today()}, "
          f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
          + ", ".join(f"{d} {version(d) or '-'}" for d in ("fvcore", "ultralytics-thop", "thop", "ptflops"))
          + f"; clock: {'wall' if args.wall else 'CPU time'}")
    print(header(), flush=True)
    rows: list[Row] = []

    def emit(row: Row) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    start = time.perf_counter()
    for name in selected:
        began, cpu = time.perf_counter(), _cpu()
        try:
            BENCHMARKS[name].run(args.quick, emit)
        except Exception as exc:  # one broken benchmark does not stop the others
            emit(Row(name, "error", "error", status="SKIP", detail=f"{type(exc).__name__}: {exc}"[:200]))
            traceback.print_exc(file=sys.stderr)
        print(f"  ({name}: {time.perf_counter() - began:.0f} s wall, {_cpu() - cpu:.0f} s CPU)", flush=True)
    print()
    print(header())
    for row in rows:
        print(format_row(row))
    passed = sum(r.status == PASS for r in rows)
    missed = [f"{r.bench}: {r.name}" for r in rows if r.status == MISS]
    print(f"\ntargets: {passed} PASS, {len(missed)} MISS{' (' + '; '.join(missed) + ')' if missed else ''}; "
          f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
