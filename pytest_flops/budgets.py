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

from .units import ACCEPTED_FORMS, METRIC_UNITS, OPS_CHOICES, compact_quantity, format_quantity, parse_quantity

if TYPE_CHECKING:  # pragma: no cover
    from .outputs.records import BudgetData, VerdictData

__all__ = ["Budget", "Verdict", "Excess", "parse_budget", "check", "BudgetError", "METRICS", "Tolerance",
           "parse_tolerance", "TOLERANCE_FORMS", "budget_text"]

#: The metrics a budget can limit, with the unit shown in messages.
METRICS = METRIC_UNITS
TOLERANCE_FORMS = "a relative tolerance such as '1%' or '0.5%', or an absolute one such as '10M' or 0"


class BudgetError(ValueError):
    """A malformed ``max_flops`` marker."""


@dataclass(frozen=True)
class Budget:
    flops: int | None = None
    macs: int | None = None
    params: int | None = None
    ops: str | None = None

    def limits(self) -> dict[str, int]:
        return {k: v for k, v in (("flops", self.flops), ("macs", self.macs), ("params", self.params)) if v is not None}

    def describe(self) -> str:
        """``8.3G, 4G MACs, 25M params`` (as the report's budget column)."""
        return budget_text(self.to_dict())

    def to_dict(self) -> BudgetData:
        return {"flops": self.flops, "macs": self.macs, "params": self.params, "ops": self.ops}


def budget_text(budget: Mapping[str, Any] | None) -> str:
    """A budget (``Budget.to_dict()`` data) as the reports show it: ``8.3G, 4G MACs``; ``-`` for none."""
    if not budget:
        return "-"
    parts = [compact_quantity(budget[key]) + ("" if key == "flops" else f" {unit}")
             for key, unit in METRICS.items() if budget.get(key) is not None]
    return ", ".join(parts) if parts else "-"


def parse_budget(args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Budget:
    """Parse ``max_flops(flops=None, *, macs=None, params=None, ops=None)`` arguments.

    Raises :class:`BudgetError` with a one-line message naming the bad value.
    """
    kwargs = dict(kwargs or {})
    if len(args) > 1:
        raise BudgetError(
            f"max_flops takes at most one positional argument (the FLOP budget), got {len(args)}: "
            f"{', '.join(repr(a) for a in args)}; use macs=... or params=... for the others"
        )
    if args:
        if "flops" in kwargs:
            raise BudgetError("max_flops got the FLOP budget twice (positional and flops=)")
        kwargs["flops"] = args[0]
    unknown = set(kwargs) - {"flops", "macs", "params", "ops"}
    if unknown:
        raise BudgetError(
            f"max_flops got unexpected argument(s) {', '.join(sorted(unknown))}; expected flops, macs, params, ops"
        )
    values: dict[str, Any] = {}
    for key in ("flops", "macs", "params"):
        raw = kwargs.get(key)
        if raw is None:
            continue
        try:
            values[key] = parse_quantity(raw)
        except ValueError:
            raise BudgetError(f"max_flops {key}={raw!r} is not a valid quantity: expected {ACCEPTED_FORMS}") from None
    ops = kwargs.get("ops")
    if ops is not None and ops not in OPS_CHOICES:
        raise BudgetError(f"max_flops ops={ops!r} is not valid: expected one of {', '.join(map(repr, OPS_CHOICES))}")
    if not values:
        raise BudgetError("max_flops needs at least one budget: max_flops('8G'), macs='4G' or params='25M'")
    return Budget(ops=ops, **values)


@dataclass(frozen=True)
class Excess:
    metric: str
    used: int
    limit: int

    @property
    def percent_over(self) -> float:
        return 100.0 * (self.used - self.limit) / self.limit if self.limit else float("inf")

    def describe(self, name: str) -> str:
        unit = METRICS[self.metric]
        over = f"+{self.percent_over:.1f}%" if self.limit else "budget 0"
        used = format_quantity(self.used, unit) if self.metric != "params" else f"{format_quantity(self.used)} params"
        limit = format_quantity(self.limit, unit) if self.metric != "params" else f"{format_quantity(self.limit)} params"
        verb = "has" if self.metric == "params" else "used"
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
            "excesses": [{"metric": e.metric, "used": e.used, "limit": e.limit} for e in self.excesses],
        }


def check(measurement: Any, budget: Budget) -> Verdict:
    """Compare a Measurement (anything with flops/macs/params) with a Budget."""
    excesses = []
    usage: dict[str, float] = {}
    for metric, limit in budget.limits().items():
        used = int(getattr(measurement, metric))
        usage[metric] = used / limit if limit else (0.0 if used == 0 else float("inf"))
        if used > limit:
            excesses.append(Excess(metric, used, limit))
    return Verdict(tuple(excesses), usage)


def failure_message(measurement: Any, verdict: Verdict, top: int = 5) -> str:
    """``max_flops: Model used 9.41 GFLOPs, budget 8.30 GFLOPs (+13.4%)`` plus where the FLOPs went."""
    lines = [f"max_flops: {e.describe(measurement.name)}" for e in verdict.excesses]
    modules = measurement.top_modules(top)
    if modules:
        total = measurement.flops or 1
        width = max(len(n) for n, _ in modules)
        lines.append(f"top modules by FLOPs:")
        for name, value in modules:
            kind = measurement.module_types.get(name, "")
            lines.append(f"  {name:<{width}}  {format_quantity(value, 'FLOPs'):>13}  {100 * value / total:5.1f}%  {kind}")
    kinds = measurement.by_module_type()
    if len(kinds) > 1:
        total = measurement.flops or 1
        shares = ", ".join(f"{kind} {100 * value / total:.1f}%" for kind, value in list(kinds.items())[:4])
        lines.append(f"by module type: {shares}")
    if measurement.uncounted:
        from .counting.measurement import uncounted_line

        lines.append(uncounted_line(measurement.uncounted))
    return "\n".join(lines)


# -- tolerance ------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How much a count may grow before it is a regression: ``percent`` of the old value, or ``absolute``."""

    percent: float | None = None
    absolute: int = 0

    def allowance(self, old: int) -> float:
        return old * self.percent / 100.0 if self.percent is not None else float(self.absolute)

    def describe(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return compact_quantity(self.absolute)

    def __str__(self) -> str:
        return self.describe()


_PERCENT = re.compile(r"^\s*\+?(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_tolerance(value: Any) -> Tolerance:
    """``"1%"`` / ``"0.5%"`` (relative) or ``"10M"`` / ``0`` (absolute, parsed with ``parse_quantity``).

    Raises ``ValueError`` naming the bad value and the accepted forms.
    """
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is not None:
            return Tolerance(percent=float(match.group(1)))
        if "%" in value:
            raise ValueError(f"invalid tolerance {value!r}: expected {TOLERANCE_FORMS}")
    try:
        return Tolerance(absolute=parse_quantity(value))
    except ValueError:
        raise ValueError(f"invalid tolerance {value!r}: expected {TOLERANCE_FORMS}") from None
