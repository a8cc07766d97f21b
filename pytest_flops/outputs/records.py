"""The typed records every writer reads: what one test measured (:class:`TestRecord`) and the report row (:class:`Row`).

A :class:`TestRecord` is plain JSON-safe data, so that it travels unchanged
with an xdist report (``report.flops``), through the torchrun gather, and into
the JSON results file (``docs/json-schema.md``). The plugin makes it once
(:func:`make_record`); the session adds the outcome (:func:`with_outcome`), the
torchrun gather the rank (:func:`with_rank`). Writers (terminal, Markdown,
JSON, flame graphs, baseline) and the console script read records through
:func:`rows` and :func:`totals`, never by reshaping the dict themselves.

No pytest and no torch here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, TypedDict

__all__ = ["MeasurementData", "BudgetData", "VerdictData", "TestRecord", "Row", "Totals", "make_record",
           "with_outcome", "with_rank", "rows", "totals", "count_tests", "measurement_label"]

#: ``Measurement.to_dict()``: flops, macs, params, by_module, stacks, ... (see docs/json-schema.md).
MeasurementData = dict[str, Any]


class _MemoryLimits(TypedDict, total=False):
    """Memory limits of a budget, present only when the marker sets them."""

    peak_memory: int
    activations: int
    saved_memory: int


class BudgetData(_MemoryLimits):
    """``Budget.to_dict()``: the marker's limits (None: not limited) and its ``ops``."""

    flops: int | None
    macs: int | None
    params: int | None
    ops: str | None


class VerdictData(TypedDict):
    """``Verdict.to_dict()``: whether the measurement fits, the share of each limit used, the excesses."""

    ok: bool
    usage: dict[str, float]
    excesses: list[dict[str, Any]]


class _RecordFields(TypedDict):
    nodeid: str
    budget: BudgetData | None
    measurements: list[MeasurementData]
    verdicts: list[VerdictData] | None  # one per measurement when there is a budget
    worker: str | None  # the xdist worker id, None in the main process


class TestRecord(_RecordFields, total=False):
    """What one measured test recorded; ``outcome`` once its report arrived, ``rank`` under torchrun."""

    outcome: str
    rank: int


class Row(TypedDict):
    """One measurement of one test, as every table shows it."""

    test: str  # the nodeid, with `` [2]`` ... when the test made several measurements
    nodeid: str
    index: int  # the measurement's index in its test (with the nodeid, the baseline's key)
    model: str
    flops: int
    macs: int
    params: int
    budget: BudgetData | None
    usage: float | None  # the largest share of a budget limit used
    devices: list[str]
    outcome: str
    worker: str | None
    rank: int | None
    measurement: MeasurementData


class _Sums(TypedDict):
    flops: int
    macs: int
    measurements: int


class Totals(_Sums):
    """FLOPs, MACs and measurements summed over a run; ``by_rank`` per torchrun rank (empty otherwise)."""

    by_rank: dict[int, _Sums]


def make_record(nodeid: str, measurements: list[MeasurementData], budget: BudgetData | None = None,
                verdicts: list[VerdictData] | None = None, worker: str | None = None,
                rank: int | None = None) -> TestRecord:
    """The record of one measured test (``rank`` only under torchrun)."""
    record: TestRecord = {"nodeid": nodeid, "budget": budget, "measurements": measurements, "verdicts": verdicts,
                          "worker": worker}
    if rank is not None:
        record["rank"] = rank
    return record


def with_outcome(record: TestRecord, outcome: str) -> TestRecord:
    """A copy of ``record`` with the test's outcome (passed, failed, skipped)."""
    out: TestRecord = {**record}
    out["outcome"] = outcome
    return out


def with_rank(record: Mapping[str, Any], rank: int) -> TestRecord:
    """A copy of ``record`` (as sent between ranks) with the torchrun rank that measured it."""
    out: TestRecord = {**record}  # type: ignore[typeddict-item]
    out["rank"] = rank
    return out


def measurement_label(nodeid: str, index: int, count: int) -> str:
    """How tables name a measurement: the nodeid, with `` [2]`` ... when its test made several."""
    return nodeid + (f" [{index + 1}]" if count > 1 else "")


def rows(records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """One row per measurement of each record, in order."""
    out: list[Row] = []
    for record in records:
        measurements = record.get("measurements", [])
        verdicts = record.get("verdicts") or [None] * len(measurements)
        for i, (m, verdict) in enumerate(zip(measurements, verdicts)):
            usage = max(verdict["usage"].values()) if verdict and verdict.get("usage") else None
            out.append({
                "test": measurement_label(record["nodeid"], i, len(measurements)),
                "nodeid": record["nodeid"],
                "index": i,
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


def count_tests(table: Sequence[Row]) -> int:
    """Distinct tests among the rows (a test with several measurements, or run on several ranks, counts once)."""
    return len({r["nodeid"] for r in table})


def totals(records: Iterable[Mapping[str, Any]]) -> Totals:
    """FLOPs and MACs summed over all measurements, and per rank when the records come from torchrun ranks.

    ``{"flops", "macs", "measurements", "by_rank": {rank: {"flops", "macs", "measurements"}}}``;
    ``by_rank`` is empty in a single-process run (xdist included).
    """
    out: Totals = {"flops": 0, "macs": 0, "measurements": 0, "by_rank": {}}
    for record in records:
        rank = record.get("rank")
        for m in record.get("measurements", []):
            targets: list[Any] = [out]
            if rank is not None:
                targets.append(out["by_rank"].setdefault(rank, {"flops": 0, "macs": 0, "measurements": 0}))
            for t in targets:
                t["flops"] += m["flops"]
                t["macs"] += m["macs"]
                t["measurements"] += 1
    out["by_rank"] = dict(sorted(out["by_rank"].items()))
    return out
