"""The self-contained HTML report (``--flops-html``, ``pytest-flops count --html``).

One file, nothing fetched: the template ``assets/report.html`` (with its CSS)
and its script ``assets/report.js`` are package data, filled with the run's
data as one JSON document. The page draws a sortable, filterable table of the
measurements, the session totals, and for the selected test an icicle chart
of its module tree sized by FLOPs, params, or the memory figures a
measurement carries, with zoom and hover; with a baseline, each test's delta
and a per-module diff. Works on the records the plugin passes to every
writer; counts nothing. No pytest and no torch import here.

Size: module trees are sent once per distinct tree (parametrized tests of
one model share theirs), each node as ``[name below its parent, type index,
[values per metric], [children]]``; nodes where every metric is zero are
left out.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..budgets import budget_text
from .io import write_text_atomic

__all__ = ["METRICS", "report_data", "render_html", "write_html", "module_tree"]

#: (key, label, unit, per-module source, additive): the figures a chart can be sized by, when a measurement has
#: them. A source ``memory_by_module:k1,k2`` reads ``m["memory_by_module"][module][k]`` (the largest of the keys).
#: Memory figures come from the memory counting when it ran; the report shows whatever is present.
METRICS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("flops", "FLOPs", "FLOPs", "by_module", True),
    ("params", "params", "", "module_params", True),
    ("peak_memory", "peak memory", "B", "memory_by_module:peak_forward,peak_backward", False),
    ("activations", "activations", "", "memory_by_module:activations", True),
    ("saved_memory", "saved for backward", "B", "memory_by_module:saved", False),
    ("memory_traffic", "memory traffic", "B", "memory_by_module:traffic", True),
)
#: Columns of the table beyond the chart metrics: (key, label, unit).
_COLUMNS = (("macs", "MACs", "MACs"),)
_MAX_NODES = 3000  # above this, a tree drops the nodes below _TINY of its root in every metric
_TINY = 1e-4


def _figure(m: Mapping[str, Any], key: str) -> Any:
    """A measurement's figure, from its own fields or ``extra`` (where new figures may start out)."""
    value = m.get(key)
    if value is None:
        value = (m.get("extra") or {}).get(key)
    return value


def _per_module(m: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    """``{module: value}`` of one metric (empty when the measurement does not have it per module)."""
    field_name, _, subkeys = source.partition(":")
    found = _figure(m, field_name)
    if not isinstance(found, Mapping):
        return {}
    if not subkeys:
        return found
    keys = subkeys.split(",")
    out = {}
    for name, row in found.items():
        values = [row[k] for k in keys if isinstance(row, Mapping) and row.get(k) is not None]
        if values:
            out[name] = max(values)
    return out


def _parent_finder(names: Iterable[str], root: str) -> Any:
    known = set(names)

    def parent(name: str) -> str:
        while "." in name:
            name = name.rsplit(".", 1)[0]
            if name in known:
                return name
        return root

    return parent


def module_tree(m: Mapping[str, Any], metrics: Sequence[str], types: dict[str, int]) -> list[Any]:
    """The measurement's module tree: ``[name, type index, [value per metric], children...]`` nested lists.

    A child's name is given below its parent (``attn`` under ``layers.0``), a
    top-level module's in full; ``types`` interns the type names (updated).
    """
    maps = {key: _per_module(m, key, per) for key, _, _, per, _ in METRICS if key in metrics}
    root = str(m.get("name", "model"))
    names = list(dict.fromkeys(name for key in metrics for name in maps[key]))
    parent = _parent_finder(names, root)
    children: dict[str, list[str]] = {}
    for name in names:
        if name != root:
            children.setdefault(parent(name), []).append(name)

    def values(name: str) -> list[int]:
        out = []
        for key in metrics:
            v = maps[key].get(name)
            if v is None and name == root and name not in maps[key]:
                v = _figure(m, key)  # no module of that name (several roots): the measurement's total
            out.append(int(v or 0))
        return out

    keep = (lambda vs, top: any(vs)) if len(names) <= _MAX_NODES else \
        (lambda vs, top: any(v > _TINY * t for v, t in zip(vs, top)))
    top = values(root)

    def build(name: str, parent_name: str) -> list[Any] | None:
        vs = values(name)
        if name != root and not keep(vs, top):
            return None
        kind = str((m.get("module_types") or {}).get(name, ""))
        label = name[len(parent_name) + 1:] if parent_name != root and name.startswith(parent_name + ".") else name
        node: list[Any] = [label, types.setdefault(kind, len(types)), vs]
        for child in children.get(name, []):
            built = build(child, name)
            if built is not None:
                node.append(built)
        return node

    built = build(root, "")
    assert built is not None
    return built


def _budget_text(budget: Mapping[str, Any] | None) -> str:
    text = budget_text(budget)
    return "" if text == "-" else text


def _usage(verdict: Mapping[str, Any] | None) -> Any:
    usage = (verdict or {}).get("usage") or {}
    if not usage:
        return None
    worst = max(usage.values())
    return worst if math.isfinite(worst) else "inf"


def _as_dict(record: Any) -> Mapping[str, Any]:
    return record if isinstance(record, Mapping) else record.to_dict()


def _old_values(tree: list[Any], old: Mapping[str, Any]) -> list[Any]:
    """The baseline's FLOPs of each node of ``tree`` in pre-order (``None``: not in the baseline)."""
    modules = old.get("by_module") or {}
    out: list[Any] = []

    def walk(node: list[Any], qualified: str, is_root: bool) -> None:
        out.append(old.get("flops") if is_root else modules.get(qualified))
        for child in node[3:]:
            walk(child, child[0] if is_root else f"{qualified}.{child[0]}", False)

    walk(tree, tree[0], True)
    return out


def _delta(comparison: Mapping[str, Any] | None, index: int, old: Mapping[str, Any] | None,
           tree: list[Any]) -> dict[str, Any] | None:
    if comparison is None:
        return None
    item = next((c for c in comparison.get("measurements", []) if c.get("index") == index), None)
    if item is None:
        return {"status": comparison.get("status", "new"), "text": comparison.get("status", "new")}
    out: dict[str, Any] = {"status": item["status"], "text": item.get("delta", ""), "failed": item.get("failed", False),
                           "changes": item.get("changes", {}), "modules": item.get("modules", [])}
    if old is not None:
        out["old"] = {k: old.get(k) for k in ("flops", "macs", "params")}
        if item["status"] != "equal":
            out["nodes"] = _old_values(tree, old)
    return out


def _row(record: Mapping[str, Any], index: int, m: Mapping[str, Any], many: bool, tree: int, metrics: list[str],
         comparison: Any, old: Any, trees: list[Any]) -> dict[str, Any]:
    verdicts = record.get("verdicts") or []
    verdict = verdicts[index] if index < len(verdicts) else None
    values = {key: _figure(m, key) for key, *_ in METRICS + _COLUMNS}
    extra = m.get("extra") or {}
    row: dict[str, Any] = {
        "test": record["nodeid"] + (f" [{index + 1}]" if many else ""),
        "nodeid": record["nodeid"],
        "index": index,
        "model": m.get("name", ""),
        "outcome": record.get("outcome") or "",
        "worker": record.get("worker"),
        "rank": record.get("rank"),
        "budget": _budget_text(record.get("budget")),
        "usage": _usage(verdict),
        "over": bool(verdict and verdict.get("excesses")),
        "v": {k: v for k, v in values.items() if v is not None},
        "forward": m.get("forward_flops"),
        "backward": m.get("backward_flops"),
        "devices": list(m.get("devices", [])),
        "uncounted": dict(m.get("uncounted") or {}),
        "rate": extra.get("flops_per_s"),
        "tree": tree,
        "metrics": metrics,
    }
    if comparison is not None and record.get("rank") in (None, 0):
        row["delta"] = _delta(_as_dict(comparison), index, old, trees[tree])
    return row


def report_data(records: Iterable[Any], *, environment: Mapping[str, Any] | None = None,
                comparisons: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
                baseline_summary: str | None = None, settings: Mapping[str, Any] | None = None,
                title: str = "pytest-flops report", created: str | None = None,
                incomplete: str | None = None) -> dict[str, Any]:
    """The JSON document the page reads: rows (one per measurement), distinct module trees, totals, environment.

    ``comparisons``: nodeid -> ``TestComparison`` (or its ``to_dict()``) when a
    baseline was compared; ``baseline``: nodeid -> baseline entry (its
    per-module FLOPs feed the diff view); ``incomplete``: why the run's
    results are not whole (shown first, in red).
    """
    types: dict[str, int] = {}
    trees: list[Any] = []
    tree_index: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for record in map(_as_dict, records):
        measurements = list(record.get("measurements", []))
        entry = (baseline or {}).get(record["nodeid"]) or {}
        for i, m in enumerate(measurements):
            metrics = [key for key, _, _, per, _ in METRICS if key == "flops" or _per_module(m, key, per)]
            tree = module_tree(m, metrics, types)
            key = json.dumps(tree, separators=(",", ":"))
            if key not in tree_index:
                tree_index[key] = len(trees)
                trees.append(tree)
            olds = entry.get("measurements") or []
            rows.append(_row(record, i, m, len(measurements) > 1, tree_index[key], metrics,
                             (comparisons or {}).get(record["nodeid"]), olds[i] if i < len(olds) else None, trees))
    present = {k for row in rows for k in row["v"]}
    return {
        "title": title,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": dict(environment or {}),
        "settings": dict(settings or {}),
        "metrics": [{"key": k, "label": label, "unit": unit, "additive": add}
                    for k, label, unit, _, add in METRICS if k in present],
        "columns": [{"key": k, "label": label, "unit": unit} for k, label, unit in _COLUMNS if k in present],
        "baseline": baseline_summary if comparisons is not None else None,
        "incomplete": incomplete,
        "types": list(types),
        "trees": trees,
        "rows": rows,
    }


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def render_html(records: Iterable[Any], **options: Any) -> str:
    """The report as one HTML document (see :func:`report_data` for the options)."""
    import re
    from html import escape

    data = report_data(records, **options)
    # "<" only occurs inside JSON strings: as \u003c no text of the data can close the <script> element
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    script = _asset("report.js")
    if "</script" in script.lower():
        raise ValueError("assets/report.js must not contain '</script'")
    parts = {"<!--FLOPS_TITLE-->": escape(data["title"]), "/*FLOPS_DATA*/": payload, "/*FLOPS_SCRIPT*/": script}
    return re.sub("|".join(re.escape(k) for k in parts), lambda match: parts[match.group(0)], _asset("report.html"))


def write_html(path: str | Path, records: Iterable[Any], **options: Any) -> Path:
    """Write the report to ``path`` (atomically); returns the path."""
    path = Path(path)
    write_text_atomic(path, render_html(records, **options))
    return path
