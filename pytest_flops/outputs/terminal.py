"""Rendering of the session report (terminal). Works on records, never counts.

Records and rows are the typed ones of :mod:`pytest_flops.outputs.records`
(``rows`` and ``totals`` are re-exported here for the callers that import them
from this module).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..budgets import budget_text
from ..units import format_bytes, format_quantity
from ..counting.measurement import uncounted_calls
from .records import Row, count_tests, rows, totals

__all__ = ["rows", "render_table", "totals", "columns", "Column", "used_text", "NUMERIC_COLUMNS"]

#: An optional column: its header and how to render one row's cell.
Column = tuple[str, Callable[[Row], str]]


def columns(records: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The optional columns the records call for: worker (xdist), rank (torchrun), FLOP/s (timed measurements)."""
    table = rows(records)
    out: list[Column] = []
    if any(r["worker"] for r in table):
        out.append(("worker", lambda row: row.get("worker") or "-"))
    if any(r["rank"] is not None for r in table):
        out.append(("rank", lambda row: "-" if row.get("rank") is None else str(row["rank"])))
    if any((r["measurement"].get("extra") or {}).get("flops_per_s") is not None for r in table):
        out.append(("FLOP/s", _rate_text))
    if any(r["measurement"].get("peak_memory") is not None for r in table):  # measured with memory=True
        out.append(("peak mem", lambda row: _memory_text(row, "peak_memory")))
        out.append(("activations", lambda row: _memory_text(row, "activations")))
        out.append(("saved", lambda row: _memory_text(row, "saved_memory")))
    return out


#: The optional columns that hold numbers (right-aligned in Markdown).
NUMERIC_COLUMNS = frozenset({"FLOP/s", "peak mem", "activations", "saved"})


def _memory_text(row: Row, key: str) -> str:
    value = row["measurement"].get(key)  # type: ignore[misc]
    if value is None:
        return "-"
    return format_quantity(value) if key == "activations" else format_bytes(value)


def _rate_text(row: Row) -> str:
    rate = (row["measurement"].get("extra") or {}).get("flops_per_s")
    return "-" if rate is None else format_quantity(int(rate))


def used_text(row: Row) -> str:
    """The share of the budget a row used: ``93.1%``; ``-`` without a budget."""
    return f"{100 * row['usage']:.1f}%" if row["usage"] is not None else "-"


def _fit(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):]


def render_table(records: Sequence[Mapping[str, Any]], width: int = 120, full: bool = False, top: int = 5,
                 extra_columns: Sequence[Column] = ()) -> list[str]:
    """Aligned lines of the report: one row per measurement, a total line, and with ``full`` the top modules.

    ``extra_columns`` adds (header, fn(row) -> str) columns, e.g. the worker under xdist.
    """
    table = rows(records)
    if not table:
        return ["no measurements"]
    headers = ["test", "FLOPs", "MACs", "params", "budget", "used", "device"] + [h for h, _ in extra_columns] + ["outcome"]
    body = []
    for r in table:
        cells = [r["test"], format_quantity(r["flops"]), format_quantity(r["macs"]), format_quantity(r["params"]),
                 budget_text(r["budget"]), used_text(r), ",".join(r["devices"]) or "-"]
        cells += [fn(r) for _, fn in extra_columns]
        cells.append(r["outcome"] or "-")
        body.append(cells)
    n_tests = count_tests(table)
    # One total line; under torchrun one per rank and the world's.
    sums = totals(records)
    labelled = [(f"rank {k} total", v) for k, v in sums["by_rank"].items()]
    labelled.append(("world total" if labelled else "total", sums))
    total_rows = [[label, format_quantity(v["flops"]), format_quantity(v["macs"]), "", "", "", ""]
                  + ["" for _ in extra_columns] + [""] for label, v in labelled]
    widths = [max(len(h), *(len(c[i]) for c in body + total_rows)) for i, h in enumerate(headers)]
    fixed = sum(widths[1:]) + 2 * (len(headers) - 1)
    # Too narrow for the test ids: give each row's test id a line of its own.
    two_lines = widths[0] + fixed > width
    if two_lines:
        widths[0] = max(len(c[0]) for c in total_rows)
    right = {1, 2, 3, 5}

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            cell = _fit(cell, w)
            parts.append(cell.rjust(w) if i in right else cell.ljust(w))
        return "  ".join(parts).rstrip()

    lines = [line(headers), "-" * min(width, sum(widths) + 2 * (len(widths) - 1))]
    for cells, r in zip(body, table):
        if two_lines:
            lines.append(cells[0])
            cells = [""] + cells[1:]
        lines.append(line(cells))
        if full:
            m = r["measurement"]
            tops = _top_modules(m, top)
            for name, value in tops:
                share = 100 * value / (m["flops"] or 1)
                lines.append(f"    {_fit(name, max(20, width - 40))}  {format_quantity(value, 'FLOPs')}  {share:.1f}%")
            if m.get("uncounted"):
                lines.append(f"    uncounted: {uncounted_calls(m['uncounted'])}")
    lines.append("-" * min(width, sum(widths) + 2 * (len(widths) - 1)))
    lines.extend(line(total) for total in total_rows)
    lines.append(f"{n_tests} test{'s' if n_tests != 1 else ''}, {len(table)} measurement{'s' if len(table) != 1 else ''}"
                 + (f" on {len(sums['by_rank'])} ranks" if sums["by_rank"] else ""))
    return lines


def _top_modules(m: Mapping[str, Any], n: int) -> list[tuple[str, int]]:
    from ..counting.measurement import Measurement  # no torch there

    return Measurement.from_dict(m).top_modules(n)
