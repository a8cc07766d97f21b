"""The Markdown report (``--flops-markdown``, and ``$GITHUB_STEP_SUMMARY`` in GitHub Actions).

Works on records and baseline comparisons, like the terminal report; no
pytest and no torch import here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..budgets import budget_text
from ..units import format_quantity
from .baseline import RunSummary, TestComparison
from .records import Row, count_tests, rows, totals
from .terminal import NUMERIC_COLUMNS, columns, used_text

__all__ = ["render_markdown"]

_STATUS_MARK = {"regressed": "🔺 ", "improved": "🔽 ", "new": "🆕 "}


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def render_markdown(records: Sequence[Mapping[str, Any]], comparisons: Mapping[str, TestComparison] | None = None,
                    summary: RunSummary | None = None, baseline: str | None = None,
                    notes: Sequence[str] = (), title: str = "pytest-flops", incomplete: str | None = None) -> str:
    """A heading, one table row per measurement (with the baseline delta when there is one), and the regressions.

    ``incomplete``: why the run's results are not whole; said first, under the heading.
    """
    lines = [f"### {title}", ""]
    if incomplete:
        lines += [f"> **Incomplete run:** {_cell(incomplete)}. The table holds what was measured before it stopped.",
                  ""]
    table = rows(records)
    if not table:
        lines.append("No measurements.")
    else:
        headers = ["test", "model", "FLOPs", "MACs", "params", "budget", "used"]
        align = ["---", "---", "---:", "---:", "---:", "---", "---:"]
        extra = columns(records)  # worker (xdist), rank (torchrun), FLOP/s (timed)
        headers += [h for h, _ in extra]
        align += ["---:" if h in NUMERIC_COLUMNS else "---" for h, _ in extra]
        if comparisons is not None:
            headers.append("vs baseline")
            align.append("---:")
        headers.append("outcome")
        align.append("---")
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join(align) + "|")
        for r in table:
            cells = [f"`{_cell(r['test'])}`", _cell(r["model"] or "-"), format_quantity(r["flops"]),
                     format_quantity(r["macs"]), format_quantity(r["params"]), _cell(budget_text(r["budget"])),
                     used_text(r)]
            cells += [_cell(fn(r)) for _, fn in extra]
            if comparisons is not None:
                cells.append(_delta_cell(comparisons, r))
            cells.append(r["outcome"] or "-")
            lines.append("| " + " | ".join(cells) + " |")
        total_flops = sum(r["flops"] for r in table)
        n_tests = count_tests(table)
        lines.append("")
        lines.append(f"{n_tests} test{'s' if n_tests != 1 else ''}, {len(table)} "
                     f"measurement{'s' if len(table) != 1 else ''}, {format_quantity(total_flops, 'FLOPs')} in total"
                     + "".join(f"; rank {k}: {format_quantity(v['flops'], 'FLOPs')}"
                               for k, v in totals(records)["by_rank"].items()) + ".")
    if summary is not None:
        lines.append("")
        where = f" `{_cell(baseline)}`" if baseline else ""
        lines.append(f"**Baseline**{where}: {summary.headline()}.")
        for nodeid, c in sorted(summary.comparisons.items()):
            if not c.failed and c.status != "regressed":
                continue
            lines += ["", f"<details><summary>{_STATUS_MARK.get(c.status, '')}<code>{_html(nodeid)}</code> "
                          f"{c.status}</summary>", "", "```"]
            lines += c.failure_message(baseline or "baseline").splitlines()
            lines += ["```", "", "</details>"]
        if summary.removed:
            lines += ["", "Removed (no longer collected): " + ", ".join(f"`{_cell(n)}`" for n in summary.removed)]
    for note in notes:
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _delta_cell(comparisons: Mapping[str, TestComparison], row: Row) -> str:
    c = comparisons.get(row["nodeid"])
    if c is None:
        return "-"
    m = c.measurement(row["index"])
    text = m.delta_text() if m is not None else c.status
    mark = _STATUS_MARK.get(m.status if m is not None else c.status, "")
    return mark + _cell(text)
