"""Baselines: the counts of a previous run, merged on save and compared on the next run.

No pytest and no torch here. A baseline file holds, per test nodeid and per
measurement index, the FLOPs, MACs, params, forward/backward split and the
FLOPs of the modules that matter (see :data:`MODULE_MIN_SHARE`), with the
torch version that produced them. :func:`compare` is the one comparison:
the plugin uses it to fail a test in its call phase, and the summary, the
JSON and the Markdown report use it to show deltas. The file format is
documented in ``docs/json-schema.md``.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..budgets import TOLERANCE_FORMS, Tolerance, parse_tolerance
from ..units import MEMORY_METRICS, METRIC_UNITS, align_columns, format_bytes, format_quantity
from .records import TestRecord
from .io import DocumentError, bad_number_path, read_json_document, write_text_atomic

__all__ = [
    "BASELINE_FORMAT",
    "BASELINE_SCHEMA_VERSION",
    "MODULE_MIN_SHARE",
    "GATED_METRICS",
    "TOLERANCE_FORMS",
    "BaselineError",
    "Tolerance",
    "parse_tolerance",
    "Baseline",
    "load_baseline",
    "measurement_problem",
    "record_problem",
    "document_problem",
    "results_problem",
    "MAX_COUNT",
    "entry_from_record",
    "merge",
    "dump",
    "save",
    "SaveResult",
    "file_lock",
    "MetricChange",
    "ModuleChange",
    "MeasurementComparison",
    "TestComparison",
    "compare",
    "torch_note",
    "RunSummary",
    "missing_entries",
    "summarize",
]

BASELINE_FORMAT = "pytest-flops-baseline"
BASELINE_SCHEMA_VERSION = 1
#: A module is stored in the baseline when it spends at least this share of its measurement's FLOPs.
MODULE_MIN_SHARE = 0.001
#: The metrics a baseline gates; forward/backward FLOPs are stored and shown, not gated on their own.
#: Gated: a growth past the tolerance fails the test (the memory figures where both runs measured them).
GATED_METRICS = {**METRIC_UNITS, "peak_memory": "bytes", "activations": "activations"}
_STORED = ("name", "flops", "macs", "params", "forward_flops", "backward_flops")
#: Stored when measured (``memory=True``), with each module's peak as ``peak_by_module``.
_STORED_MEMORY = tuple(MEMORY_METRICS)


class BaselineError(ValueError):
    """An unreadable, corrupt or future-schema baseline file (one line: path and problem)."""


# -- the file -------------------------------------------------------------------
@dataclass
class Baseline:
    """A loaded baseline: ``tests`` maps nodeids to entries ``{"torch", "measurements": [...]}``."""

    path: Path
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    torch: str | None = None

    def entry(self, nodeid: str) -> dict[str, Any] | None:
        return self.tests.get(nodeid)

    def torch_versions(self) -> set[str]:
        return {e["torch"] for e in self.tests.values() if e.get("torch")}


def load_baseline(path: str | Path) -> Baseline | None:
    """Read a baseline file; ``None`` when there is none at ``path``.

    Raises :class:`BaselineError` (one line: the path, the entry and the
    field) when the file cannot be read, is larger than
    :data:`~pytest_flops.outputs.io.MAX_DOCUMENT_BYTES` or nested too deeply,
    is not a baseline, has a newer schema, or holds a field that is not what
    the schema says (a count that is not a non-negative integer up to
    :data:`MAX_COUNT`, NaN, Infinity, a string where a number belongs, ...).
    """
    path = Path(path)
    try:
        data = read_json_document(path)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise BaselineError(f"flops baseline {path} is a directory, not a baseline file") from None
    except DocumentError as exc:
        raise BaselineError(f"flops baseline {path} {exc}") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"flops baseline {path} is not a pytest-flops baseline (no \"format\": "
                            f"\"{BASELINE_FORMAT}\" at the top)")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BaselineError(f"flops baseline {path} is corrupt: schema_version {version!r} is not a positive integer")
    if version > BASELINE_SCHEMA_VERSION:
        raise BaselineError(
            f"flops baseline {path} has schema version {version}, newer than this pytest-flops reads "
            f"({BASELINE_SCHEMA_VERSION}): upgrade pytest-flops"
        )
    problem = document_problem(data)
    if problem:
        raise BaselineError(f"flops baseline {path} is corrupt: {problem}")
    return Baseline(path, dict(data["tests"]), data.get("torch"))


#: The largest count a file may hold (10**30: far beyond any model, small enough to format and compare).
MAX_COUNT = 10**30
_COUNTS = ("flops", "macs", "params")
_OPTIONAL_COUNTS = ("forward_flops", "backward_flops", *MEMORY_METRICS)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _show(value: Any) -> str:
    try:
        text = repr(value) if isinstance(value, str) and not type(value) is str else json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:30] + f"...({len(text)} characters)"


def measurement_problem(m: Any, optional: Sequence[str] = _OPTIONAL_COUNTS) -> str | None:
    """Why ``m`` is not a valid stored measurement (``field is ...: expected ...``), or None.

    Used for baselines, ``--flops-json`` files read back by ``pytest-flops compare``, and the records
    other torchrun ranks send.
    """
    if not isinstance(m, dict):
        return f"is {_show(m)}, not an object"
    expected = "expected a non-negative integer up to 10**30"
    for key in _COUNTS:
        if key not in m:
            return f"has no valid {key!r} count"
        if not _is_count(m[key]):
            return f"field {key!r} is {_show(m[key])}: {expected}"
    for key in optional:
        if m.get(key) is not None and not _is_count(m[key]):
            return f"field {key!r} is {_show(m[key])}: {expected} (or null)"
    if "name" in m and not isinstance(m["name"], str):
        return f"field 'name' is {_show(m['name'])}: expected a string"
    modules = m.get("by_module", {})
    if not isinstance(modules, dict):
        return f"field 'by_module' is {_show(modules)}: expected an object of module name -> FLOPs"
    for name, value in modules.items():
        if not _is_count(value):
            return f"field 'by_module'[{name!r}] is {_show(value)}: {expected}"
    peaks = m.get("peak_by_module", {})
    if not isinstance(peaks, dict) or not all(_is_count(v) for v in peaks.values()):
        return f"field 'peak_by_module' is {_show(peaks)}: expected an object of module name -> bytes"
    bad = bad_number_path(m)
    return f"field {bad}: not a number pytest-flops writes" if bad else None


def record_problem(record: Any) -> str | None:
    """Why ``record`` (one test's record, as a torchrun rank sends it) is not valid, or None."""
    if not isinstance(record, dict):
        return f"a record is {_show(record)}, not an object"
    nodeid = record.get("nodeid")
    if not isinstance(nodeid, str) or not nodeid:
        return f"a record has no nodeid (got {_show(nodeid)})"
    measurements = record.get("measurements")
    if not isinstance(measurements, list):
        return f"record {nodeid!r} field 'measurements' is {_show(measurements)}: expected a list"
    problem = measurements_problem(f"record {nodeid!r}", measurements)
    if problem:
        return problem
    if record.get("outcome") is not None and not isinstance(record["outcome"], str):
        return f"record {nodeid!r} field 'outcome' is {_show(record['outcome'])}: expected a string"
    bad = bad_number_path(record)
    return f"record {nodeid!r} field {bad}: not a number pytest-flops writes" if bad else None


def document_problem(data: Mapping[str, Any]) -> str | None:
    """Why a baseline document (already known to have the format and version) is invalid, or None."""
    if data.get("torch") is not None and not isinstance(data["torch"], str):
        return f"\"torch\" is {_show(data['torch'])}: expected a version string or null"
    tests = data.get("tests")
    if not isinstance(tests, dict):
        return f"\"tests\" is {_show(tests)}: expected an object of nodeid -> entry"
    for nodeid, entry in tests.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("measurements"), list):
            return f"entry {nodeid!r} has no \"measurements\" list"
        if entry.get("torch") is not None and not isinstance(entry["torch"], str):
            return f"entry {nodeid!r} field 'torch' is {_show(entry['torch'])}: expected a version string or null"
        problem = measurements_problem(f"entry {nodeid!r}", entry["measurements"])
        if problem:
            return problem
    return numbers_problem(data)


def measurements_problem(where: str, measurements: Sequence[Any]) -> str | None:
    """The first invalid measurement of one test (baseline entry or results record), named by ``where``."""
    for i, m in enumerate(measurements):
        problem = measurement_problem(m)
        if problem:
            return f"{where} measurement {i} {problem}"
    return None


def numbers_problem(data: Any) -> str | None:
    """A number anywhere in the document that pytest-flops never writes (NaN, Infinity, a huge integer)."""
    bad = bad_number_path(data)
    return f"field {bad}: not a number pytest-flops writes" if bad else None


def results_problem(data: Mapping[str, Any]) -> str | None:
    """Why a ``--flops-json`` results document (already known to have its format) is invalid, or None."""
    env = data.get("environment")
    if env is not None and not (isinstance(env, dict) and isinstance(env.get("torch"), (str, type(None)))):
        return "\"environment\" is not an object with a \"torch\" version"
    if not isinstance(data.get("complete", True), bool):
        return "\"complete\" is not true or false"
    incomplete = data.get("incomplete")
    if incomplete is not None and not (isinstance(incomplete, dict) and isinstance(incomplete.get("why"), str)):
        return "\"incomplete\" is not an object with a \"why\" string"
    if not isinstance(data.get("tests"), list):
        return "\"tests\" is not a list"
    for i, test in enumerate(data["tests"]):
        if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str):
            return f"test {i} has no nodeid"
        if not isinstance(test.get("measurements"), list):
            return f"test {test['nodeid']!r} has no \"measurements\" list"
        problem = measurements_problem(f"test {test['nodeid']!r}", test["measurements"])
        if problem:
            return problem
    return numbers_problem(data)


def entry_from_record(record: TestRecord, torch: str | None) -> dict[str, Any]:
    """The baseline entry of one test record: its counts and the modules above :data:`MODULE_MIN_SHARE`."""
    measurements = []
    for m in record.get("measurements", []):
        stored = {key: m.get(key) for key in _STORED}
        limit = m["flops"] * MODULE_MIN_SHARE
        stored["by_module"] = {name: value for name, value in sorted(m.get("by_module", {}).items())
                               if value > 0 and value >= limit}
        for key in _STORED_MEMORY:
            if m.get(key) is not None:
                stored[key] = m[key]
        if m.get("peak_memory") is not None:  # each module's peak, forward or backward
            stored["peak_by_module"] = {name: max(v for k, v in row.items() if k.startswith("peak_"))
                                        for name, row in sorted(m.get("memory_by_module", {}).items())
                                        if any(k.startswith("peak_") for k in row)}
        measurements.append(stored)
    return {"torch": torch, "measurements": measurements}


def merge(existing: Mapping[str, Mapping[str, Any]] | None, records: Iterable[TestRecord],
          removed: Iterable[str] = (), torch: str | None = None) -> dict[str, Any]:
    """The baseline document after a run: tests that ran replace their entries, ``removed`` ones go, the rest stay."""
    tests: dict[str, Any] = dict(existing or {})
    for nodeid in removed:
        tests.pop(nodeid, None)
    for record in records:
        tests[record["nodeid"]] = entry_from_record(record, torch)
    return {
        "format": BASELINE_FORMAT,
        "schema_version": BASELINE_SCHEMA_VERSION,
        "torch": torch,
        "module_min_share": MODULE_MIN_SHARE,
        "tests": {k: tests[k] for k in sorted(tests)},
    }


def dump(document: Mapping[str, Any]) -> str:
    """Stable text (sorted, indented) so that baseline updates read well in a pull request's diff."""
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True)
class SaveResult:
    """What :func:`save` did: tests updated from this run, entries kept, entries removed (no longer collected)."""

    updated: int
    kept: list[str]
    removed: list[str]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive OS lock (``fcntl.flock``) on ``<path>.lock`` beside ``path``, held for the block.

    The lock file is left in place (removing it would race with a waiting
    writer). Where ``fcntl`` is missing (Windows) the block runs unlocked:
    concurrent saves there can lose each other's entries.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def save(path: str | Path, records: Sequence[TestRecord], collected: Mapping[str, Iterable[str]] | None,
         torch: str | None, overwrite: bool = False) -> SaveResult:
    """Merge this run's ``records`` into the baseline at ``path`` without losing another writer's entries.

    Under :func:`file_lock`, the file is read again (another run may have
    saved since this one started), this run's tests replace their entries,
    entries whose test is no longer collected go (see :func:`missing_entries`),
    the rest stay, and the result is written atomically (through a symlink
    to its target, keeping the file's mode). A file that is not a readable
    baseline is replaced only with ``overwrite``; else :class:`BaselineError`.
    """
    target = Path(os.path.realpath(path))
    with file_lock(target):
        try:
            current = load_baseline(target)
        except BaselineError as exc:
            if not overwrite:
                raise BaselineError(f"{exc}; not overwritten (pass --flops-baseline-overwrite to replace it)") from None
            current = None
        existing = current.tests if current is not None else {}
        removed, kept = missing_entries(existing, [r["nodeid"] for r in records], collected)
        write_text_atomic(target, dump(merge(existing, records, removed, torch)))
    return SaveResult(len(records), kept, removed)


# -- comparison -----------------------------------------------------------------
def torch_note(old: str, new: str, recorded: str = "the baseline", current: str = "this run uses") -> str:
    """Why counts recorded under another torch release may differ (the one wording of that note)."""
    return (f"{recorded} was recorded with torch {old}, {current} torch {new}: "
            "op decompositions can change counts between torch releases")


def _signed(n: float, unit: str = "") -> str:
    text = format_quantity(n, unit)
    return text if text.startswith("-") else "+" + text


def _signed_bytes(n: float) -> str:
    text = format_bytes(n)
    return text if text.startswith("-") else "+" + text


def _percent(old: int, new: int) -> str:
    if old == 0:
        return "new" if new else "="
    return f"{100.0 * (new - old) / old:+.1f}%"


@dataclass(frozen=True)
class MetricChange:
    metric: str
    old: int
    new: int

    RIGHT = frozenset({1, 3, 4, 5})  # the columns of cells() aligned right: the numbers

    @property
    def delta(self) -> int:
        return self.new - self.old

    def cells(self) -> list[str]:
        if MEMORY_METRICS.get(self.metric) == "bytes":
            return [_METRIC_LABELS[self.metric], format_bytes(self.old), "->", format_bytes(self.new),
                    _signed_bytes(self.delta), _percent(self.old, self.new)]
        unit = "" if self.metric in ("params", "activations") else METRIC_UNITS.get(self.metric, "FLOPs")
        return [_METRIC_LABELS[self.metric], format_quantity(self.old, unit), "->", format_quantity(self.new, unit),
                _signed(self.delta, unit), _percent(self.old, self.new)]

    def describe(self) -> str:
        label, old, _, new, delta, pct = self.cells()
        return f"{label} {old} -> {new} ({delta}, {pct})"

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "delta": self.delta}


@dataclass(frozen=True)
class ModuleChange:
    name: str
    old: int | None  # None: not in the baseline (absent, or below MODULE_MIN_SHARE there)
    new: int | None  # None: not in this run
    kind: str = ""  # the module's type, when this run knows it
    metric: str = "flops"  # or "peak_memory": the module's peak, in bytes
    RIGHT = frozenset({2, 4, 5, 6})  # the columns of cells() aligned right: the numbers

    @property
    def delta(self) -> int:
        return (self.new or 0) - (self.old or 0)

    def cells(self) -> list[str]:
        show = format_bytes if self.metric == "peak_memory" else (lambda n: format_quantity(n, "FLOPs"))
        signed = _signed_bytes if self.metric == "peak_memory" else (lambda n: _signed(n, "FLOPs"))
        old = "-" if self.old is None else show(self.old)
        new = "-" if self.new is None else show(self.new)
        pct = _percent(self.old, self.new or 0) if self.old else "new"
        return [self.name, self.kind, old, "->", new, signed(self.delta), pct]

    def describe(self) -> str:
        name, kind, old, _, new, delta, pct = self.cells()
        return f"{name}{f' ({kind})' if kind else ''}: {old} -> {new} ({delta}, {pct})"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.name, "type": self.kind or None, "old": self.old, "new": self.new, "delta": self.delta}


@dataclass(frozen=True)
class MeasurementComparison:
    """One measurement against its baseline entry.

    ``status``: ``new`` (no entry), ``equal``, ``regressed`` (a gated count grew
    beyond the tolerance), ``improved`` (a count shrank, none regressed),
    ``within`` (grew within the tolerance) or ``removed`` (in the baseline,
    not measured now). ``failed``: the test fails on it.
    """

    index: int
    name: str
    status: str
    changes: tuple[MetricChange, ...] = ()  # every metric that differs, gated or not
    modules: tuple[ModuleChange, ...] = ()  # the modules whose FLOPs changed most
    failed: bool = False
    old_name: str | None = None
    peak_modules: tuple[ModuleChange, ...] = ()  # the modules whose peak memory changed most

    def change(self, metric: str) -> MetricChange | None:
        return next((c for c in self.changes if c.metric == metric), None)

    def change_lines(self, top: int = 5, indent: str = "  ", modules_indent: str = "",
                     before_after: str = "baseline -> now") -> list[str]:
        """The counts that changed (old -> new), then the ``top`` modules whose FLOPs changed most: aligned lines."""
        lines = align_columns([c.cells() for c in self.changes], right=MetricChange.RIGHT, indent=indent)
        if self.modules[:top]:
            lines.append(f"{modules_indent}modules whose FLOPs changed most ({before_after}):")
            lines += align_columns([c.cells() for c in self.modules[:top]], right=ModuleChange.RIGHT,
                                   indent=modules_indent + indent)
        if self.peak_modules[:top]:
            lines.append(f"{modules_indent}modules whose peak memory changed most ({before_after}):")
            lines += align_columns([c.cells() for c in self.peak_modules[:top]], right=ModuleChange.RIGHT,
                                   indent=modules_indent + indent)
        return lines

    def delta_text(self) -> str:
        """The report cell: ``new``, ``=``, ``+12.5%`` (FLOPs), or the first other count that changed."""
        if self.status in ("new", "removed"):
            return self.status
        for metric in ("flops", "macs", "params"):
            c = self.change(metric)
            if c is not None:
                text = _percent(c.old, c.new)
                if text == "new":
                    text = _signed(c.delta)
                return text if metric == "flops" else f"{text} {GATED_METRICS[metric]}"
        return "="

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "status": self.status,
            "failed": self.failed,
            "delta": self.delta_text(),
            "changes": {c.metric: c.to_dict() for c in self.changes},
            "modules": [m.to_dict() for m in self.modules],
            **({"peak_modules": [m.to_dict() for m in self.peak_modules]} if self.peak_modules else {}),
        }


@dataclass(frozen=True)
class TestComparison:
    """A test against its baseline entry: the one verdict the plugin, the summary and the files use."""

    nodeid: str
    status: str  # new, equal, regressed, improved, within, changed (number of measurements differs)
    measurements: tuple[MeasurementComparison, ...]
    failed: bool
    tolerance: Tolerance
    strict: bool
    baseline_torch: str | None = None

    def measurement(self, index: int) -> MeasurementComparison | None:
        """The comparison of measurement ``index`` (None: the test has no such measurement now or before)."""
        return next((m for m in self.measurements if m.index == index), None)

    def delta_text(self, index: int) -> str:
        """The report's "vs baseline" cell for measurement ``index``."""
        m = self.measurement(index)
        return m.delta_text() if m is not None else self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "failed": self.failed,
            "baseline_torch": self.baseline_torch,
            "measurements": [m.to_dict() for m in self.measurements],
        }

    def failure_message(self, baseline: str, torch: str | None = None, top: int = 5, hint: str | None = None) -> str:
        """Why the test fails: the counts (old -> new) and the modules that changed most. ``hint``: the
        baseline's path as it works from the user's current directory, for the update command."""
        prefix = "flops baseline" + (" (strict)" if self.strict else "")
        lines: list[str] = []
        if self.status == "new":
            lines.append(f"{prefix}: {self.nodeid} is not in {baseline}")
        for m in self.measurements:
            if not m.failed or self.status == "new":
                continue
            if m.status == "removed":
                lines.append(f"{prefix}: measurement {m.index + 1} ({m.name}) of the baseline was not measured")
                continue
            if m.status == "new":
                lines.append(f"{prefix}: measurement {m.index + 1} ({m.name}) is not in the baseline")
                continue
            what = "grew" if m.status == "regressed" else "changed"
            label = m.name + (f" (was {m.old_name})" if m.old_name and m.old_name != m.name else "")
            if len(self.measurements) > 1:
                label = f"[{m.index + 1}] {label}"
            lines.append(f"{prefix}: {label} {what} against {baseline} (tolerance {self.tolerance}):")
            lines += m.change_lines(top)
        if self.baseline_torch and torch and self.baseline_torch != torch:
            lines.append("note: " + torch_note(self.baseline_torch, torch))
        lines.append(f"if the change is intended, update the baseline: pytest --flops-save-baseline={hint or baseline}")
        return "\n".join(lines)


#: Every count a comparison shows (the gated ones, then the forward/backward split), with its label.
_METRIC_LABELS = {**METRIC_UNITS, "forward_flops": "forward", "backward_flops": "backward",
                  "peak_memory": "peak memory", "activations": "activations", "saved_memory": "saved memory"}


def _peak_changes(current: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[ModuleChange, ...]:
    """Modules whose peak memory changed, biggest change first (from ``peak_by_module`` / ``memory_by_module``)."""
    new_rows: Mapping[str, Mapping[str, int]] = current.get("memory_by_module", {})
    new_peaks = {name: max(v for k, v in row.items() if k.startswith("peak_"))
                 for name, row in new_rows.items() if any(k.startswith("peak_") for k in row)}
    old_peaks: Mapping[str, int] = old.get("peak_by_module", {})
    roots = {current.get("name"), old.get("name")}
    kinds = current.get("module_types", {})
    changes = [ModuleChange(name, old_peaks.get(name), new_peaks.get(name), kinds.get(name, ""), "peak_memory")
               for name in set(new_peaks) | set(old_peaks) if name not in roots]
    changes = [c for c in changes if c.delta]
    changes.sort(key=lambda c: (-abs(c.delta), -c.name.count("."), c.name))
    return tuple(changes)


def _module_changes(current: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[ModuleChange, ...]:
    """Modules whose FLOPs changed, biggest change first; a parent whose change is all one descendant's is left out."""
    new_modules: Mapping[str, int] = current.get("by_module", {})
    old_modules: Mapping[str, int] = old.get("by_module", {})
    limit = current.get("flops", 0) * MODULE_MIN_SHARE
    roots = {current.get("name"), old.get("name")}
    changes = []
    for name in set(new_modules) | set(old_modules):
        if name in roots:
            continue
        new = new_modules.get(name)
        prev = old_modules.get(name)
        if prev is None and (new or 0) < limit:
            continue  # below the stored threshold on both sides: not a known change
        change = ModuleChange(name, prev, new, current.get("module_types", {}).get(name, ""))
        if change.delta:
            changes.append(change)
    changes.sort(key=lambda c: (-abs(c.delta), -c.name.count("."), c.name))
    kept = [c for c in changes
            if not any(o.name.startswith(c.name + ".") and o.delta == c.delta for o in changes)]
    return tuple(kept)


def _compare_measurement(index: int, current: Mapping[str, Any], old: Mapping[str, Any] | None,
                         tolerance: Tolerance, strict: bool) -> MeasurementComparison:
    name = current.get("name", "")
    if old is None:
        return MeasurementComparison(index, name, "new", failed=strict)
    changes = tuple(MetricChange(metric, int(old.get(metric) or 0), int(current.get(metric) or 0))
                    for metric in _METRIC_LABELS
                    if metric in old and int(old.get(metric) or 0) != int(current.get(metric) or 0)
                    # a memory figure compares only where both runs measured it
                    and (metric not in MEMORY_METRICS or (old.get(metric) is not None
                                                          and current.get(metric) is not None)))
    gated = [c for c in changes if c.metric in GATED_METRICS]
    regressed = any(c.delta > tolerance.allowance(c.old, c.metric) for c in gated)
    beyond = any(abs(c.delta) > tolerance.allowance(c.old, c.metric) for c in gated)
    if regressed:
        status = "regressed"
    elif any(c.delta < 0 for c in gated):
        status = "improved"
    elif gated:
        status = "within"
    else:
        status = "equal"
    modules = _module_changes(current, old) if any(c.metric not in MEMORY_METRICS for c in gated) else ()
    peaks = _peak_changes(current, old) if any(c.metric == "peak_memory" for c in gated) else ()
    return MeasurementComparison(index, name, status, changes, modules,
                                 failed=regressed or (strict and beyond), old_name=old.get("name"), peak_modules=peaks)


def compare(nodeid: str, measurements: Sequence[Mapping[str, Any]], entry: Mapping[str, Any] | None,
            tolerance: Tolerance = Tolerance(), strict: bool = False) -> TestComparison:
    """Compare a test's measurements (``Measurement.to_dict()`` data) with its baseline entry.

    A gated count (FLOPs, MACs, params) that grew by more than the tolerance
    fails the test. With ``strict``, any change beyond the tolerance (either
    direction), a test or measurement missing from the baseline, and a
    baseline measurement no longer made fail too.
    """
    if entry is None:
        items = tuple(_compare_measurement(i, m, None, tolerance, strict) for i, m in enumerate(measurements))
        return TestComparison(nodeid, "new", items, strict, tolerance, strict)
    old = entry.get("measurements", [])
    items_list = [_compare_measurement(i, m, old[i] if i < len(old) else None, tolerance, strict)
                  for i, m in enumerate(measurements)]
    for i in range(len(measurements), len(old)):
        items_list.append(MeasurementComparison(i, old[i].get("name", ""), "removed", failed=strict))
    items = tuple(items_list)
    statuses = {m.status for m in items}
    if "regressed" in statuses:
        status = "regressed"
    elif "improved" in statuses:
        status = "improved"
    elif len(old) != len(measurements):
        status = "changed"
    elif "within" in statuses:
        status = "within"
    else:
        status = "equal"
    return TestComparison(nodeid, status, items, any(m.failed for m in items), tolerance, strict,
                          entry.get("torch"))


# -- the run as a whole ---------------------------------------------------------
@dataclass
class RunSummary:
    """Every test of a run against the baseline, grouped by status, plus the entries that did not run."""

    comparisons: dict[str, TestComparison]
    removed: list[str]  # in the baseline, their file was collected, the test no longer exists
    not_run: list[str]  # in the baseline, not measured in this run (deselected, skipped, another file)
    baseline_torch: set[str]

    def by_status(self, status: str) -> list[TestComparison]:
        return [c for c in self.comparisons.values() if c.status == status]

    def counts(self) -> dict[str, int]:
        out = {s: len(self.by_status(s)) for s in ("regressed", "improved", "within", "changed", "equal", "new")}
        out["removed"] = len(self.removed)
        out["not_run"] = len(self.not_run)
        return out

    def headline(self) -> str:
        labels = {"regressed": "regressed", "improved": "improved", "within": "within tolerance",
                  "changed": "changed", "equal": "unchanged", "new": "new", "removed": "removed",
                  "not_run": "not run"}
        parts = [f"{n} {labels[s]}" for s, n in self.counts().items() if n or s == "regressed"]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for status in ("regressed", "improved", "within", "changed", "equal", "new"):
            groups[status] = sorted(c.nodeid for c in self.by_status(status))
        groups["removed"] = list(self.removed)
        groups["not_run"] = list(self.not_run)
        return groups


def missing_entries(entries: Iterable[str], ran: Iterable[str],
                    collection: Mapping[str, Iterable[str]] | None) -> tuple[list[str], list[str]]:
    """Split baseline entries that were not measured into (removed, not run).

    ``collection`` maps each collector that this run collected (a file, a
    class) to the nodeids of its children, as collected (before ``-k``,
    ``-m`` or ``--lf`` selection). An entry is ``removed`` when its nearest
    collected ancestor no longer has the child on the way to it: the test
    (or its class) no longer exists. Anything else is ``not run``: a partial
    run, a skipped or deselected test, a file that was not collected.
    Without ``collection`` nothing is called removed.
    """
    ran_ids = set(ran)
    children = {parent: set(kids) for parent, kids in (collection or {}).items()}
    known = set().union(*children.values()) if children else set()
    removed: list[str] = []
    not_run: list[str] = []
    for nodeid in sorted(entries):
        if nodeid in ran_ids:
            continue
        parts = nodeid.split("::")
        gone = False
        if nodeid not in known:
            for depth in range(len(parts) - 1, 0, -1):
                parent = "::".join(parts[:depth])
                if parent in children:
                    gone = "::".join(parts[:depth + 1]) not in children[parent]
                    break
        (removed if gone else not_run).append(nodeid)
    return removed, not_run


def summarize(comparisons: Mapping[str, TestComparison], baseline: Baseline | None,
              collected: Mapping[str, Iterable[str]] | None = None) -> RunSummary:
    """Group the comparisons and classify the baseline entries that did not run (see :func:`missing_entries`)."""
    removed, not_run = missing_entries(baseline.tests if baseline else (), comparisons, collected)
    return RunSummary(dict(comparisons), removed, not_run, baseline.torch_versions() if baseline else set())
