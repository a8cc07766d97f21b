"""Budgets: marker arguments parsed once, and the one function that judges a measurement.

No torch and no pytest here: a Budget is parsed at collection time, and
:func:`check` gives the verdict that the failure message, the report's
"% of budget" column and the exit status all use. A :class:`Tolerance` is the
other limit: how much a count may grow against its baseline
(``--flops-tolerance``), parsed once with the other settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .units import (ACCEPTED_FORMS, BYTES_FORMS, MEMORY_METRICS, METRIC_UNITS, OPS_CHOICES, compact_quantity,
                    format_bytes, format_quantity, parse_bytes, parse_quantity, quantity_unit)

if TYPE_CHECKING:  # pragma: no cover
    from .outputs.records import BudgetData, VerdictData


__all__ = ["Budget", "Verdict", "Excess", "parse_budget", "merge_markers", "check", "BudgetError", "METRICS", "format_metric", "Tolerance",
           "parse_tolerance", "TOLERANCE_FORMS", "budget_text"]

#: The metrics a budget can limit, with the unit shown in messages.
METRICS = {**METRIC_UNITS, **MEMORY_METRICS}
_ACTIVATION_FORMS = "a count of elements such as 40_000_000, '40M' or '1.2G' (no unit: activations are elements)"


def format_metric(metric: str, value: int) -> str:
    """``9.41 GFLOPs``, ``25.60M params``, ``12.00 GiB``, ``40.00M activations``."""
    if MEMORY_METRICS.get(metric) == "bytes":
        return format_bytes(value)
    if metric in ("params", "activations"):
        return f"{format_quantity(value)} {METRICS[metric]}"
    return format_quantity(value, METRICS[metric])
TOLERANCE_FORMS = "a relative tolerance such as '1%' or '0.5%', or an absolute one such as '10M' or 0"


class BudgetError(ValueError):
    """A malformed ``max_flops`` marker.

    For one bad value, ``reason`` is what is wrong with the value alone (``expected ...``), without the
    marker's wording, and ``metric`` the metric whose unit the value names instead, if it does: what a
    caller that is not a marker (the ``flops_max_*`` ini keys) words its own message from.
    """

    def __init__(self, message: str, reason: str | None = None, metric: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metric = metric


def _bad_value(key: str, raw: Any, what: str, reason: str, metric: str | None = None) -> BudgetError:
    """``max_flops key=raw <what>: <reason>``."""
    return BudgetError(f"max_flops {key}={raw!r} {what}: {reason}", reason, metric)


@dataclass(frozen=True)
class Budget:
    flops: int | None = None
    macs: int | None = None
    params: int | None = None
    ops: str | None = None
    peak_memory: int | None = None
    activations: int | None = None
    saved_memory: int | None = None

    def limits(self) -> dict[str, int]:
        return {k: v for k in METRICS if (v := getattr(self, k)) is not None}

    @property
    def needs_memory(self) -> bool:
        """Whether a limit is on a memory figure: the measurement must then count with ``memory=True``."""
        return any(getattr(self, k) is not None for k in MEMORY_METRICS)

    def describe(self) -> str:
        """``8.3G, 4G MACs, 25M params, peak 11.18 GiB`` (as the report's budget column)."""
        return budget_text(self.to_dict())

    def to_dict(self) -> BudgetData:
        data: BudgetData = {"flops": self.flops, "macs": self.macs, "params": self.params, "ops": self.ops}
        for key in MEMORY_METRICS:  # only when limited: records of budgets without them keep their shape
            value = getattr(self, key)
            if value is not None:
                data[key] = value  # type: ignore[literal-required]
        return data


def budget_text(budget: Mapping[str, Any] | None) -> str:
    """A budget (``Budget.to_dict()`` data) as the reports show it: ``8.3G, 4G MACs``; ``-`` for none."""
    if not budget:
        return "-"
    labels = {"peak_memory": "peak ", "saved_memory": "saved "}
    parts = [f"{labels[key]}{format_bytes(budget[key])}" if key in labels  # type: ignore[literal-required]
             else compact_quantity(budget[key]) + ("" if key == "flops" else f" {unit}")  # type: ignore[literal-required]
             for key, unit in METRICS.items() if budget.get(key) is not None]
    return ", ".join(parts) if parts else "-"


def _budget_values(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One marker's arguments as ``{key: raw value}``: the positional budget goes to the metric its unit
    names (``"300K MACs"`` is a MACs budget; FLOPs without a unit); a unit that contradicts its keyword
    (``params="1G FLOPs"``) is a :class:`BudgetError`."""
    kwargs = dict(kwargs)
    if len(args) > 1:
        raise BudgetError(
            f"max_flops takes at most one positional argument (the FLOP budget), got {len(args)}: "
            f"{', '.join(repr(a) for a in args)}; use macs=... or params=... for the others"
        )
    unknown = set(kwargs) - {"flops", "macs", "params", "ops", *MEMORY_METRICS}
    if unknown:
        raise BudgetError(
            f"max_flops got unexpected argument(s) {', '.join(sorted(unknown))}; expected flops, macs, params, ops, "
            f"{', '.join(MEMORY_METRICS)}"
        )
    for key in METRIC_UNITS:
        unit = quantity_unit(kwargs.get(key))
        if unit is not None and unit != key:
            raise _bad_value(key, kwargs[key], f"names {METRICS[unit]}, not {METRICS[key]}",
                             f"write {unit}={kwargs[key]!r}, or drop the unit", metric=unit)
    if args:
        key = quantity_unit(args[0]) or "flops"
        if key in kwargs:
            what = "FLOP" if key == "flops" else METRIC_UNITS[key][:-1]
            raise BudgetError(f"max_flops got the {what} budget twice: {args[0]!r} and {key}={kwargs[key]!r}")
        kwargs[key] = args[0]
    return kwargs


def parse_budget(args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Budget:
    """Parse ``max_flops(flops=None, *, macs=None, params=None, ops=None, peak_memory=None, activations=None,
    saved_memory=None)`` arguments (memory figures in bytes with a unit: ``"12GB"``, ``"4GiB"``).

    A unit word in a string says which metric it limits: ``max_flops("300K MACs")`` is a MACs budget,
    ``params="1G FLOPs"`` a :class:`BudgetError`. Raises :class:`BudgetError` with a one-line message
    naming the bad value.
    """
    return _budget_from(_budget_values(args, kwargs or {}))


def merge_markers(levels: Sequence[Sequence[tuple[Sequence[Any], Mapping[str, Any]]]]) -> Budget:
    """The Budget of stacked ``max_flops`` markers: ``levels`` lists, nearest first (the test, then its
    class, its module...), the ``(args, kwargs)`` of the markers at each level.

    Markers at one level merge, each key (flops, macs, params, ops, the memory figures) given at most once, else a
    :class:`BudgetError` naming both values; a nearer level overrides a farther one key by key (a module's
    ``max_flops("1G")`` still limits a test that adds ``max_flops(params="1M")``).
    """
    merged: dict[str, Any] = {}
    for markers in levels:
        level: dict[str, Any] = {}
        for args, kwargs in markers:
            for key, value in _budget_values(args, kwargs).items():
                if key in level:
                    raise BudgetError(f"stacked max_flops markers set {key} twice: {level[key]!r} and {value!r}; "
                                      "keep one, or merge them into one marker")
                level[key] = value
        for key, value in level.items():
            merged.setdefault(key, value)
    return _budget_from(merged)


def _budget_from(kwargs: Mapping[str, Any]) -> Budget:
    values: dict[str, Any] = {}
    for key in ("flops", "macs", "params"):
        raw = kwargs.get(key)
        if raw is None:
            continue
        try:
            values[key] = parse_quantity(raw)
        except ValueError:
            if isinstance(raw, str) and _is_bytes(raw):  # a memory figure given where a count is expected
                memory = f"a memory budget is peak_memory={raw!r} or saved_memory={raw!r}"
                raise BudgetError(f"max_flops {key}={raw!r} is a byte quantity: {memory}",
                                  f"a byte quantity: {memory}") from None
            raise _bad_value(key, raw, "is not a valid quantity", f"expected {ACCEPTED_FORMS}") from None
    for key in MEMORY_METRICS:
        raw = kwargs.get(key)
        if raw is not None:
            values[key] = _parse_memory_limit(key, raw)
    ops = kwargs.get("ops")
    if ops is not None and ops not in OPS_CHOICES:
        raise BudgetError(f"max_flops ops={ops!r} is not valid: expected one of {', '.join(map(repr, OPS_CHOICES))}")
    if not values:
        raise BudgetError("max_flops needs at least one budget: max_flops('8G'), macs='4G', params='25M', "
                          "peak_memory='12GB', activations='40M' or saved_memory='4GB'")
    return Budget(ops=ops, **values)


def _is_bytes(text: str) -> bool:
    try:
        parse_bytes(text)
    except ValueError:
        return False
    return not text.strip().replace("_", "").isdigit()


def _parse_memory_limit(key: str, raw: Any) -> int:
    """A byte quantity for peak_memory/saved_memory, an element count for activations; a wrong unit is an error."""
    if MEMORY_METRICS[key] == "bytes":
        try:
            return parse_bytes(raw)
        except ValueError:
            raise _bad_value(key, raw, "is not a valid byte quantity", f"expected {BYTES_FORMS}") from None
    if isinstance(raw, str) and re.search(r"flop|mac|param|b\s*$|bytes?", raw, re.IGNORECASE):
        raise _bad_value(key, raw, "has the wrong unit", f"expected {_ACTIVATION_FORMS}")
    try:
        return parse_quantity(raw)
    except ValueError:
        raise _bad_value(key, raw, "is not a valid quantity", f"expected {_ACTIVATION_FORMS}") from None


@dataclass(frozen=True)
class Excess:
    metric: str
    used: int
    limit: int
    measured: bool = True  # False: a memory limit on a measurement counted without memory=True

    @property
    def percent_over(self) -> float:
        return 100.0 * (self.used - self.limit) / self.limit if self.limit else float("inf")

    def describe(self, name: str) -> str:
        if not self.measured:
            return (f"{name}: {self.metric} was not measured (budget {format_metric(self.metric, self.limit)}): "
                    "count with memory=True")
        over = f"+{self.percent_over:.1f}%" if self.limit else "budget 0"
        used, limit = format_metric(self.metric, self.used), format_metric(self.metric, self.limit)
        verb = {"params": "has", "peak_memory": "peaked at", "activations": "output", "saved_memory": "saved"}.get(
            self.metric, "used")
        return f"{name} {verb} {used}, budget {limit} ({over})"


@dataclass(frozen=True)
class Verdict:
    """Whether a measurement fits its budget, with the share of each limit used."""

    excesses: tuple[Excess, ...]
    usage: Mapping[str, float]  # metric -> used / limit

    @property
    def ok(self) -> bool:
        return not self.excesses

    def to_dict(self) -> VerdictData:
        return {
            "ok": self.ok,
            "usage": dict(self.usage),
            "excesses": [{"metric": e.metric, "used": e.used if e.measured else None, "limit": e.limit}
                         for e in self.excesses],
        }


def check(measurement: Any, budget: Budget) -> Verdict:
    """Compare a Measurement (anything with flops/macs/params) with a Budget."""
    excesses = []
    usage: dict[str, float] = {}
    for metric, limit in budget.limits().items():
        value = getattr(measurement, metric, None)
        if value is None:  # a memory figure the measurement did not count: an excess, no share of it
            excesses.append(Excess(metric, 0, limit, measured=False))
            continue
        used = int(value)
        usage[metric] = used / limit if limit else (0.0 if used == 0 else float("inf"))
        if used > limit:
            excesses.append(Excess(metric, used, limit))
    return Verdict(tuple(excesses), usage)


def own_params(measurement: Any) -> dict[str, int]:
    """Parameters each module holds itself (its ``module_params`` less its direct children's), root excluded
    when it holds none of its own: the modules a params budget is spent on."""
    totals: Mapping[str, int] = getattr(measurement, "module_params", {}) or {}
    root = measurement.name

    def parent(name: str) -> str:
        return name.rpartition(".")[0] or root

    own = dict(totals)
    for name, value in totals.items():
        if name != root and parent(name) in own:
            own[parent(name)] -= value
    return {name: value for name, value in own.items() if value > 0}


def _module_lines(title: str, rows: list[tuple[str, int]], total: int, unit: str, types: Mapping[str, str]) -> list[str]:
    width = max(len(n) for n, _ in rows)
    lines = [title]
    for name, value in rows:
        shown = format_quantity(value, unit) if unit != "params" else f"{format_quantity(value)} params"
        lines.append(f"  {name:<{width}}  {shown:>13}  {100 * value / (total or 1):5.1f}%  {types.get(name, '')}")
    return lines


def failure_message(measurement: Any, verdict: Verdict, top: int = 5, index: int | None = None) -> str:
    """``max_flops: Model used 9.41 GFLOPs, budget 8.30 GFLOPs (+13.4%)`` plus where the budget went: the
    modules by FLOPs for a FLOP or MAC excess, the modules holding the parameters for a params one.
    ``index``: the measurement's place among the test's several (named ``measurement 2 of the test``)."""
    label = measurement.name if index is None else f"measurement {index + 1} ({measurement.name})"
    lines = [f"max_flops: {e.describe(label)}" for e in verdict.excesses]
    if any(e.metric == "peak_memory" and e.measured for e in verdict.excesses):
        lines.extend(_peak_lines(measurement, top))
    if any(e.metric == "activations" and e.measured for e in verdict.excesses):
        lines.extend(_activation_lines(measurement, top))
    if all(e.metric in MEMORY_METRICS for e in verdict.excesses):
        return "\n".join(lines)
    metrics = {e.metric for e in verdict.excesses}
    modules = measurement.top_modules(top)
    if modules and metrics - {"params"}:
        lines += _module_lines("top modules by FLOPs:", modules, measurement.flops, "FLOPs", measurement.module_types)
        kinds = measurement.by_module_type()
        if len(kinds) > 1:
            total = measurement.flops or 1
            shares = ", ".join(f"{kind} {100 * value / total:.1f}%" for kind, value in list(kinds.items())[:4])
            lines.append(f"by module type: {shares}")
    holders = sorted(own_params(measurement).items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if holders and "params" in metrics:
        lines += _module_lines("modules holding the parameters:", holders, measurement.params, "params",
                               measurement.module_types)
    if measurement.uncounted:
        from .counting.measurement import uncounted_line

        lines.append(uncounted_line(measurement.uncounted))
    return "\n".join(lines)


def _peak_lines(measurement: Any, top: int) -> list[str]:
    """The modules that were running when the peak was reached (innermost first), as a FLOP failure lists its top."""
    modules = measurement.peak_modules(top)
    if not modules:
        return ["peak reached outside any module (optimizer step or code between modules)"]
    width = max(len(n) for n, _ in modules)
    lines = ["modules at the peak (innermost first):"]
    for name, value in modules:
        kind = measurement.module_types.get(name, "")
        lines.append(f"  {name:<{width}}  {format_bytes(value):>12}  {kind}")
    return lines


def _activation_lines(measurement: Any, top: int) -> list[str]:
    per_module = measurement.activations_by_module()
    names = [n for n in per_module if n != measurement.name]
    leaves = [(n, per_module[n]) for n in names if not any(o.startswith(n + ".") for o in names)]
    leaves.sort(key=lambda kv: -kv[1])
    if not leaves:
        return []
    total = measurement.activations or 1
    width = max(len(n) for n, _ in leaves[:top])
    lines = ["top modules by activations:"]
    for name, value in leaves[:top]:
        lines.append(f"  {name:<{width}}  {format_quantity(value):>10}  {100 * value / total:5.1f}%  "
                     f"{measurement.module_types.get(name, '')}")
    return lines


# -- tolerance ------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How much a count may grow before it is a regression: ``percent`` of the old value, or ``absolute``.

    ``per_metric`` holds tolerances for single metrics (``flops=2%,peak_memory=5%``); a metric not
    named there takes this one.
    """

    percent: float | None = None
    absolute: int = 0
    per_metric: tuple[tuple[str, "Tolerance"], ...] = ()

    def for_metric(self, metric: str | None) -> "Tolerance":
        for name, tolerance in self.per_metric:
            if name == metric:
                return tolerance
        return Tolerance(self.percent, self.absolute)

    def allowance(self, old: int, metric: str | None = None) -> float:
        if self.per_metric and metric is not None:
            return self.for_metric(metric).allowance(old)
        return old * self.percent / 100.0 if self.percent is not None else float(self.absolute)

    def describe(self) -> str:
        base = f"{self.percent:g}%" if self.percent is not None else compact_quantity(self.absolute)
        if not self.per_metric:
            return base
        named = ",".join(f"{name}={tolerance.describe()}" for name, tolerance in self.per_metric)
        return named if base == "0" and self.percent is None else f"{base},{named}"

    def __str__(self) -> str:
        return self.describe()


_PERCENT = re.compile(r"^\s*\+?(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_tolerance(value: Any) -> Tolerance:
    """``"1%"`` / ``"0.5%"`` (relative) or ``"10M"`` / ``0`` (absolute, parsed with ``parse_quantity``), or per
    metric: ``"flops=2%,peak_memory=5%"`` (a bare entry, ``"1%,peak_memory=5%"``, covers the metrics not named).

    Raises ``ValueError`` naming the bad value and the accepted forms.
    """
    if isinstance(value, str) and "=" in value:
        base = Tolerance()
        named: dict[str, Tolerance] = {}
        for part in (p.strip() for p in value.split(",")):
            metric, sep, text = part.partition("=")
            if not sep:
                base = _one_tolerance(part, value)
                continue
            metric = metric.strip()
            if metric not in METRICS:
                raise ValueError(f"invalid tolerance {value!r}: unknown metric {metric!r}; expected one of "
                                 f"{', '.join(METRICS)}, as in 'flops=2%,peak_memory=5%'")
            named[metric] = _one_tolerance(text.strip(), value)
        return Tolerance(base.percent, base.absolute, tuple(named.items()))
    return _one_tolerance(value, value)


def _one_tolerance(value: Any, whole: Any) -> Tolerance:
    forms = TOLERANCE_FORMS + ", or per metric such as 'flops=2%,peak_memory=5%'"
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is not None:
            return Tolerance(percent=float(match.group(1)))
        if "%" in value:
            raise ValueError(f"invalid tolerance {whole!r}: expected {forms}")
    try:
        return Tolerance(absolute=parse_quantity(value))
    except ValueError:
        raise ValueError(f"invalid tolerance {whole!r}: expected {forms}") from None
