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

__all__ = ["rows", "render_table", "totals", "columns", "Column", "used_text", "NUMERIC_COLUMNS", "COLUMN_NAMES",
           "parse_columns", "parse_sort"]

#: An optional column: its header and how to render one row's cell.
Column = tuple[str, Callable[[Row], str]]


def columns(records: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The optional columns the records call for: worker (xdist), rank (torchrun), FLOP/s (timed measurements)."""
    table = rows(records)
    names = []
    if any(r["worker"] for r in table):
        names.append("worker")
    if any(r["rank"] is not None for r in table):
        names.append("rank")
    if any((r["measurement"].get("extra") or {}).get("flops_per_s") is not None for r in table):
        names.append("rate")
    if any(r["measurement"].get("peak_memory") is not None for r in table):  # measured with memory=True
        names += ["peak_memory", "activations", "saved_memory"]
    return [(_COLUMNS[name][0], _COLUMNS[name][1]) for name in names]  # header and cell, as the named columns


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
    """``text`` cut from the left to ``width`` characters (``...`` marks the cut): a test id keeps its name."""
    if len(text) <= width:
        return text
    return "..." + text[-(width - 3):] if width > 3 else text[-width:]


def _sort_figure(key: str) -> Any:
    def value(row: Mapping[str, Any]) -> Any:
        m = row["measurement"]
        return m.get(key, (m.get("extra") or {}).get(key))

    return value


#: The columns of the report, by the name --flops-report-columns and --flops-report-sort take:
#: (header, cell text, sort value or None for the cell text, right-aligned).
_COLUMNS: dict[str, tuple[str, Any, Any, bool]] = {
    "test": ("test", lambda r: r["test"], None, False),
    "model": ("model", lambda r: r["model"] or "-", None, False),
    "flops": ("FLOPs", lambda r: format_quantity(r["flops"]), lambda r: r["flops"], True),
    "macs": ("MACs", lambda r: format_quantity(r["macs"]), lambda r: r["macs"], True),
    "params": ("params", lambda r: format_quantity(r["params"]), lambda r: r["params"], True),
    "peak_memory": ("peak mem", lambda r: _memory_text(r, "peak_memory"), _sort_figure("peak_memory"), True),
    "activations": ("activations", lambda r: _memory_text(r, "activations"), _sort_figure("activations"), True),
    "saved_memory": ("saved", lambda r: _memory_text(r, "saved_memory"), _sort_figure("saved_memory"), True),
    "budget": ("budget", lambda r: budget_text(r["budget"]), None, False),
    "used": ("used", used_text, lambda r: r["usage"], True),
    "device": ("device", lambda r: ",".join(r["devices"]) or "-", None, False),
    "worker": ("worker", lambda r: r.get("worker") or "-", None, False),
    "rank": ("rank", lambda r: "-" if r.get("rank") is None else str(r["rank"]), lambda r: r.get("rank"), True),
    "rate": ("FLOP/s", _rate_text, _sort_figure("flops_per_s"), True),
    "outcome": ("outcome", lambda r: r["outcome"] or "-", None, False),
}
_ALIASES = {"flop/s": "rate", "flops_per_s": "rate", "use": "used", "usage": "used", "devices": "device",
            "peak": "peak_memory", "memory": "peak_memory", "peak_mem": "peak_memory", "saved": "saved_memory",
            "vs_baseline": "baseline", "delta": "baseline",
            "id": "test", "nodeid": "test"}
#: Every name --flops-report-columns and --flops-report-sort accept ("baseline": the delta, with --flops-baseline).
COLUMN_NAMES = tuple(_COLUMNS) + ("baseline",)
_MIN_TEST = 20  # narrower than this, a test id gets a line of its own


def parse_columns(text: str) -> tuple[str, ...]:
    """``"test,flops,outcome"`` -> column names; raises ``ValueError`` saying what would be accepted."""
    names = tuple(_ALIASES.get(n, n) for n in (part.strip().lower() for part in str(text).split(",")) if n)
    bad = [n for n in names if n not in COLUMN_NAMES]
    if bad or not names:
        raise ValueError(f"expected a comma-separated list of {', '.join(COLUMN_NAMES)}")
    return names


def parse_sort(text: str) -> str:
    """A column name to sort the report by (numbers largest first, text A to Z); raises ``ValueError``."""
    name = _ALIASES.get(str(text).strip().lower(), str(text).strip().lower())
    if name not in COLUMN_NAMES:
        raise ValueError(f"expected one of {', '.join(COLUMN_NAMES)}")
    return name


def _layout(names: Sequence[str], extra: Mapping[str, tuple[str, Any]]) -> list[tuple[str, str, Any, Any, bool]]:
    """(name, header, cell, sort value, right) of each shown column; the test id always comes first."""
    out = []
    for name in ["test"] + [n for n in names if n != "test"]:
        if name in extra:
            header, fn = extra[name]
            out.append((name, header, fn, _COLUMNS[name][2] if name in _COLUMNS else None,
                        header in NUMERIC_COLUMNS or header in ("rank", "vs baseline")))
        elif name in _COLUMNS:
            header, fn, key, right = _COLUMNS[name]
            out.append((name, header, fn, key, right))
        elif name == "baseline":
            out.append((name, "vs baseline", lambda r: "-", None, True))
    return out


def _default_names(table: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> list[str]:
    names = ["test", "flops", "macs", "params"]
    if any(r["budget"] for r in table):  # no test has a budget: no budget and use columns of dashes
        names += ["budget", "used"]
    names.append("device")
    return names + list(extra) + ["outcome"]


def _extra_key(header: str) -> str:
    key = header.lower().replace(" ", "_")
    return _ALIASES.get(key, key)


def _sorted(table: list[Row], sort: str, extra: Mapping[str, tuple[str, Any]]) -> list[Row]:
    """The rows ordered by one column: numbers largest first, text A to Z, blanks last."""
    number = _COLUMNS[sort][2] if sort in _COLUMNS else None
    if number is not None:
        return sorted(table, key=lambda r: (number(r) is None, -(number(r) or 0)))
    text = extra[sort][1] if sort in extra else (_COLUMNS[sort][1] if sort in _COLUMNS else None)
    if text is None:
        return table  # "baseline" without a baseline: nothing to sort by
    return sorted(table, key=lambda r: (text(r) in ("", "-"), text(r)))


def render_table(records: Sequence[Mapping[str, Any]], width: int = 120, full: bool = False, top: int = 5,
                 extra_columns: Sequence[tuple[str, Any]] = (), columns: Sequence[str] | None = None,
                 sort: str | None = None) -> list[str]:
    """Aligned lines of the report, at most ``width`` wide: one row per measurement, the totals, and with
    ``full`` the top modules.

    ``extra_columns`` adds (header, fn(row) -> str) columns, e.g. the worker under xdist or the baseline
    delta; ``columns`` picks and orders the columns by name (:data:`COLUMN_NAMES`), ``sort`` orders the rows
    by one (numbers largest first). A row is one line when the numbers leave room for the test ids, cut from
    the left where needed (``...::test_x[param]``) but keeping at least ``_MIN_TEST`` characters and the test's
    name after its last ``::``; else each test id gets a line of its own.
    """
    table = rows(records)
    if not table:
        return ["no measurements"]
    extra = {_extra_key(h): (h, fn) for h, fn in extra_columns}
    layout = _layout(list(columns) if columns else _default_names(table, extra), extra)
    if sort:
        table = _sorted(table, sort, extra)
    headers = [c[1] for c in layout]
    body = [[c[2](r) for c in layout] for r in table]
    n_tests = count_tests(table)
    sums = totals(records)
    total_rows = _total_rows(sums, {c[0]: i for i, c in enumerate(layout)}, len(layout))
    widths = [max(len(h), *(len(c[i]) for c in body + total_rows)) for i, h in enumerate(headers)]
    two_lines = _fit_test_column(widths, body, total_rows, width)
    right = {i for i, c in enumerate(layout) if c[4]}

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            cell = _fit(cell, w)
            parts.append(cell.rjust(w) if i in right else cell.ljust(w))
        return "  ".join(parts).rstrip()

    rule = "-" * min(width, sum(widths) + 2 * (len(widths) - 1))
    lines = [line(headers), rule]
    for cells, r in zip(body, table):
        if two_lines:
            lines.append(_fit(cells[0], width))
            cells = [""] + cells[1:]
        lines.append(line(cells))
        if full:
            lines.extend(_module_lines(r["measurement"], top, width))
    lines.append(rule)
    lines.extend(line(total) for total in total_rows)
    lines.append(f"{n_tests} test{'s' if n_tests != 1 else ''}, {len(table)} measurement{'s' if len(table) != 1 else ''}"
                 + (f" on {len(sums['by_rank'])} ranks" if sums["by_rank"] else ""))
    return lines


def _total_rows(sums: Mapping[str, Any], by_name: Mapping[str, int], n: int) -> list[list[str]]:
    """One total line; under torchrun one per rank and the world's."""
    labelled = [(f"rank {k} total", v) for k, v in sums["by_rank"].items()]
    labelled.append(("world total" if labelled else "total", sums))
    out = []
    for label, v in labelled:
        cells = [""] * n
        cells[0] = label
        for key in ("flops", "macs"):
            if key in by_name:
                cells[by_name[key]] = format_quantity(v[key])
        out.append(cells)
    return out


def _fit_test_column(widths: list[int], body: Sequence[Sequence[str]], total_rows: Sequence[Sequence[str]],
                     width: int) -> bool:
    """Narrow the test column (``widths[0]``) to what the line leaves; True: ids need lines of their own.

    One line per row when every cut id keeps its test name whole (``...::test_x[param]``) and at least
    ``_MIN_TEST`` characters.
    """
    room = width - sum(widths[1:]) - 2 * (len(widths) - 1)
    labels = max(len(c[0]) for c in total_rows)
    two_lines = widths[0] > room and (room < max(_MIN_TEST, labels) or any(
        len(c[0]) > room and len(c[0].rpartition("::")[2]) + 5 > room for c in body))
    widths[0] = labels if two_lines else min(widths[0], room)
    return two_lines


def _module_lines(m: Mapping[str, Any], top: int, width: int) -> list[str]:
    lines = []
    for name, value in _top_modules(m, top):
        share = 100 * value / (m["flops"] or 1)
        lines.append(f"    {_fit(name, max(20, width - 40))}  {format_quantity(value, 'FLOPs')}  {share:.1f}%")
    if m.get("uncounted"):
        lines.append(_fit_right(f"    uncounted: {uncounted_calls(m['uncounted'])}", width))
    return lines


def _fit_right(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _top_modules(m: Mapping[str, Any], n: int) -> list[tuple[str, int]]:
    from ..counting.measurement import Measurement  # no torch there

    return Measurement.from_dict(m).top_modules(n)
