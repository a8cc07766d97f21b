"""Rendering of the session report (terminal). Works on records, never counts.

A record is the JSON-safe dict the plugin attaches to each measured test's
report: ``{"nodeid", "outcome", "worker", "budget", "measurements": [...],
"verdicts": [...]}`` with one verdict per measurement when there is a budget.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ..units import format_quantity

__all__ = ["rows", "render_table", "totals", "columns"]


def rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per measurement: a test with several measurements gets ``[2]``, ``[3]`` ... suffixes."""
    out: list[dict[str, Any]] = []
    for record in records:
        measurements = record.get("measurements", [])
        verdicts = record.get("verdicts") or [None] * len(measurements)
        for i, (m, verdict) in enumerate(zip(measurements, verdicts)):
            test = record["nodeid"] + (f" [{i + 1}]" if len(measurements) > 1 else "")
            usage = max(verdict["usage"].values()) if verdict and verdict.get("usage") else None
            out.append({
                "test": test,
                "nodeid": record["nodeid"],
                "index": i,  # the measurement's index in its test (the baseline's key with the nodeid)
                "model": m.get("name", ""),
                "flops": m["flops"],
                "macs": m["macs"],
                "params": m["params"],
                "budget": record.get("budget"),
                "usage": usage,
                "devices": m.get("devices", []),
                "outcome": record.get("outcome", ""),
                "worker": record.get("worker"),
                "rank": record.get("rank"),
                "measurement": m,
            })
    return out


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """FLOPs and MACs summed over all measurements, and per rank when the records come from torchrun ranks.

    ``{"flops", "macs", "measurements", "by_rank": {rank: {"flops", "macs", "measurements"}}}``;
    ``by_rank`` is empty in a single-process run (xdist included).
    """
    out: dict[str, Any] = {"flops": 0, "macs": 0, "measurements": 0, "by_rank": {}}
    for record in records:
        rank = record.get("rank")
        for m in record.get("measurements", []):
            targets = [out]
            if rank is not None:
                targets.append(out["by_rank"].setdefault(rank, {"flops": 0, "macs": 0, "measurements": 0}))
            for t in targets:
                t["flops"] += m["flops"]
                t["macs"] += m["macs"]
                t["measurements"] += 1
    out["by_rank"] = dict(sorted(out["by_rank"].items()))
    return out


def columns(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """The optional columns the records call for: worker (xdist), rank (torchrun), FLOP/s (timed measurements)."""
    table = rows(records)
    out: list[tuple[str, Any]] = []
    if any(r["worker"] for r in table):
        out.append(("worker", lambda row: row.get("worker") or "-"))
    if any(r["rank"] is not None for r in table):
        out.append(("rank", lambda row: "-" if row.get("rank") is None else str(row["rank"])))
    if any((r["measurement"].get("extra") or {}).get("flops_per_s") is not None for r in table):
        out.append(("FLOP/s", _rate_text))
    return out


def _rate_text(row: Mapping[str, Any]) -> str:
    rate = (row["measurement"].get("extra") or {}).get("flops_per_s")
    return "-" if rate is None else format_quantity(int(rate))


def _compact(n: int) -> str:
    text = format_quantity(n)
    if "." in text:
        number, suffix = text[:-1], text[-1]
        if suffix.isdigit():
            number, suffix = text, ""
        text = number.rstrip("0").rstrip(".") + suffix
    return text


def _budget_text(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return "-"
    parts = []
    for key, unit in (("flops", ""), ("macs", " MACs"), ("params", " params")):
        if budget.get(key) is not None:
            parts.append(f"{_compact(budget[key])}{unit}")
    return ", ".join(parts) if parts else "-"


def _fit(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):]


def render_table(records: Sequence[Mapping[str, Any]], width: int = 120, full: bool = False, top: int = 5,
                 extra_columns: Sequence[tuple[str, Any]] = ()) -> list[str]:
    """Aligned lines of the report: one row per measurement, a total line, and with ``full`` the top modules.

    ``extra_columns`` adds (header, fn(row) -> str) columns, e.g. the worker under xdist.
    """
    table = rows(records)
    if not table:
        return ["no measurements"]
    headers = ["test", "FLOPs", "MACs", "params", "budget", "used", "device"] + [h for h, _ in extra_columns] + ["outcome"]
    body = []
    for r in table:
        used = f"{100 * r['usage']:.1f}%" if r["usage"] is not None else "-"
        cells = [r["test"], format_quantity(r["flops"]), format_quantity(r["macs"]), format_quantity(r["params"]),
                 _budget_text(r["budget"]), used, ",".join(r["devices"]) or "-"]
        cells += [fn(r) for _, fn in extra_columns]
        cells.append(r["outcome"] or "-")
        body.append(cells)
    n_tests = len({r["test"].split(" [", 1)[0] for r in table})
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
                calls = ", ".join(f"{op} x{n}" for op, n in sorted(m["uncounted"].items()))
                lines.append(f"    uncounted: {calls}")
    lines.append("-" * min(width, sum(widths) + 2 * (len(widths) - 1)))
    lines.extend(line(total) for total in total_rows)
    lines.append(f"{n_tests} test{'s' if n_tests != 1 else ''}, {len(table)} measurement{'s' if len(table) != 1 else ''}"
                 + (f" on {len(sums['by_rank'])} ranks" if sums["by_rank"] else ""))
    return lines


def _top_modules(m: Mapping[str, Any], n: int) -> list[tuple[str, int]]:
    from ..counting.measurement import Measurement

    return Measurement.from_dict(m).top_modules(n)
