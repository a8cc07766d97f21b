"""The baseline gate: each measured test against its baseline entry, and the run's summary (docs/ci.md).

A test whose counts grew beyond the tolerance fails itself, in its call phase
(:meth:`FlopsGate.check`, called from ``pytest_runtest_call`` next to the
budget). After the run, the reporting process compares every test once more
(:meth:`FlopsGate.finish`) for the summary, the report's "vs baseline" column
and the files of :mod:`pytest_flops.plugin.artifacts`. :class:`Collected`
notes which tests the run collected, so that an entry no longer collected is
told from one that did not run. Comparisons themselves live in
:mod:`pytest_flops.outputs.baseline`; nothing here is registered unless a
baseline option is given.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any, Generator, Sequence

import pytest

from .session import get_session
from .settings import FlopsSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..outputs.baseline import Baseline, RunSummary, TestComparison
    from ..outputs.records import MeasurementData, Row, TestRecord

__all__ = ["FlopsGate", "Collected", "GATE_KEY", "COLLECTED_KEY", "configure_gating", "primary_records"]


def configure_gating(config: pytest.Config, settings: FlopsSettings) -> None:
    """Load the baseline files the settings name (a bad one is a usage error); register the gate and the
    collection log when a baseline is compared or saved."""
    compared, saved = settings.baseline, settings.save_baseline
    if compared is None and saved is None:
        return  # nothing imported: start-up stays cheap
    from ..outputs.baseline import BaselineError, load_baseline

    overwrite = settings.baseline_overwrite
    same = compared is not None and saved is not None and compared.path.resolve() == saved.path.resolve()
    baseline = None
    if compared is not None:
        try:
            baseline = load_baseline(compared.path)
        except BaselineError as exc:
            if not (same and overwrite):
                raise pytest.UsageError(str(exc)) from None
    if saved is not None and not same:
        try:
            load_baseline(saved.path)  # checked now, so that a bad file stops the run before the tests
        except BaselineError as exc:
            if not overwrite:
                raise pytest.UsageError(f"{exc}; pass --flops-baseline-overwrite to replace it") from None
    if compared is not None and baseline is None and settings.baseline_strict and not same:
        raise pytest.UsageError(
            f"flops baseline {compared.text} not found (--flops-baseline-strict): create it with "
            f"pytest --flops-save-baseline={shell_path(compared.path, config.invocation_params.dir)}")
    collected = config.stash[COLLECTED_KEY] = Collected()
    config.pluginmanager.register(collected, "flops-collected")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_CollectedXdist(collected), "flops-collected-xdist")
    if compared is not None:
        gate = config.stash[GATE_KEY] = FlopsGate(config, settings, baseline, enforce=not same)
        config.pluginmanager.register(gate, "flops-gate")


def shell_path(path: Any, cwd: Any) -> str:
    """``path`` as a command typed in ``cwd`` needs it: relative when below ``cwd``, else absolute (an ini
    file's paths are relative to the ini file, not to a subfolder the user runs pytest from)."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, cwd)
    return shlex.quote(absolute if relative.startswith("..") else relative)


def primary_records(records: Sequence[TestRecord]) -> list[TestRecord]:
    """One record per test: under torchrun rank 0's (the baseline holds rank 0's measurements)."""
    return list({r["nodeid"]: r for r in records if r.get("rank") in (None, 0)}.values())


class Collected:
    """Collector nodeid -> its children's nodeids, as collected (before -k/-m/--lf): removed vs not run."""

    def __init__(self) -> None:
        self.children: dict[str, list[str]] = {}

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: before --lf filters the result
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        report = yield
        if report.passed and isinstance(collector, (pytest.File, pytest.Class)):
            self.children[collector.nodeid] = [node.nodeid for node in report.result]
        return report

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if get_session(session.config).is_worker:  # to the controller (see _CollectedXdist)
            session.config.workeroutput["flops_collected"] = self.children  # type: ignore[attr-defined]


class _CollectedXdist:
    """xdist-only hook (registered only when xdist is installed): the nodeids the workers collected."""

    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.collected.children.update(getattr(node, "workeroutput", {}).get("flops_collected", {}))


class FlopsGate:
    """Each test against the baseline (in its call phase), and the run against it (after the run)."""

    def __init__(self, config: pytest.Config, settings: FlopsSettings, baseline: Baseline | None,
                 enforce: bool) -> None:
        assert settings.baseline is not None
        self.config = config
        self.tolerance = settings.tolerance
        self.strict = settings.baseline_strict
        self.baseline = baseline  # None: no file (yet) at the path
        self.text = settings.baseline.text  # the path as the user wrote it
        self.hint = shell_path(settings.baseline.path, config.invocation_params.dir)  # works from where pytest ran
        self.enforce = enforce  # False when saving to the compared file: the run accepts the changes
        self.comparisons: dict[str, TestComparison] = {}
        self.summary: RunSummary | None = None  # once the run is over (reporting process)

    def _compare(self, nodeid: str, measurements: Sequence[MeasurementData]) -> TestComparison:
        from ..outputs.baseline import compare

        entry = self.baseline.entry(nodeid) if self.baseline is not None else None
        return compare(nodeid, measurements, entry, self.tolerance, self.strict)

    def wants_memory(self, nodeid: str) -> bool:
        """Whether the test's memory figures are gated: its baseline entry holds them, or the tolerance names one."""
        if any(name in ("peak_memory", "activations") for name, _ in self.tolerance.per_metric):
            return True
        entry = self.baseline.entry(nodeid) if self.baseline is not None else None
        if not entry:
            return False
        return any(m.get("peak_memory") is not None for m in entry.get("measurements", []))

    def check(self, item: pytest.Item, measurements: list[MeasurementData]) -> str | None:
        """The failure text when the test's measurements (``to_dict()`` data) regressed against the baseline
        (called in its call phase)."""
        if not self.enforce or not measurements:
            return None
        rank = get_session(item.config).rank
        if rank is not None and rank.rank != 0:
            return None  # under torchrun the baseline holds rank 0's measurements
        comparison = self._compare(item.nodeid, measurements)
        if not comparison.failed:
            return None
        from ..outputs.json_results import torch_version

        return comparison.failure_message(self.text, torch_version(), hint=self.hint)

    def delta_cell(self, row: Row) -> str:
        """The report's "vs baseline" column."""
        c = self.comparisons.get(row["nodeid"])
        if c is None or row["rank"] not in (None, 0):
            return "-"
        return c.delta_text(row["index"])

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """After the torchrun gather (tryfirst), before the files are written (trylast): compare the run."""
        flops_session = get_session(self.config)
        if flops_session.is_reporter:
            self.finish(flops_session.records, self.config.stash[COLLECTED_KEY].children or None)
            flops_session.notices += self.summary_lines()

    def finish(self, records: Sequence[TestRecord], collected: dict[str, list[str]] | None) -> None:
        from ..outputs.baseline import summarize

        self.comparisons = {r["nodeid"]: self._compare(r["nodeid"], r["measurements"])
                            for r in primary_records(records)}
        self.summary = summarize(self.comparisons, self.baseline, collected)

    def baseline_info(self) -> dict[str, Any]:
        """The ``summary.baseline`` object of the JSON results."""
        info: dict[str, Any] = {"path": self.text, "found": self.baseline is not None,
                                "tolerance": str(self.tolerance), "strict": self.strict, "enforced": self.enforce,
                                "torch": sorted(self.summary.baseline_torch) if self.summary else []}
        if self.summary is not None:
            info["counts"] = self.summary.counts()
            info.update(self.summary.to_dict())
        return info

    def notes(self) -> list[str]:
        """A missing baseline file; a baseline recorded with another torch."""
        from ..outputs.baseline import torch_note
        from ..outputs.json_results import torch_version

        notes = []
        if self.baseline is None:
            notes.append(f"flops baseline {self.text} not found: all tests are new; create it with "
                         f"pytest --flops-save-baseline={self.hint}")
        now = torch_version()
        old = sorted({c.baseline_torch for c in self.comparisons.values() if c.baseline_torch} - {now})
        if old:
            notes.append(torch_note(", ".join(old), str(now)))
        return notes

    def summary_lines(self) -> list[tuple[str, dict[str, bool]]]:
        """The terminal's "flops baseline" section: the notes, the headline, then the tests by status."""
        summary = self.summary
        lines: list[tuple[str, dict[str, bool]]] = [(note, {"yellow": True}) for note in self.notes()]
        if summary is None:
            return lines
        lines.append((f"baseline {self.text}, tolerance {self.tolerance}" + (", strict" if self.strict else "")
                      + f": {summary.headline()}", {}))
        if not self.enforce:
            lines.append(("saving to the compared baseline: changes are accepted, not failed", {"yellow": True}))
        groups: tuple[tuple[str, dict[str, bool]], ...] = (
            ("regressed", {"red": True}), ("improved", {"green": True}), ("within", {}), ("changed", {}))
        for status, markup in groups:
            for c in sorted(summary.by_status(status), key=lambda c: c.nodeid):
                deltas = ", ".join(m.delta_text() for m in c.measurements)
                label = "within tolerance" if status == "within" else status
                lines.append((f"{label}: {c.nodeid}  {deltas}", markup))
        new = sorted(c.nodeid for c in summary.by_status("new"))
        if new and self.baseline is not None:
            hint = "" if self.strict else f" (add them with --flops-save-baseline={self.hint})"
            lines.append((f"new, not in the baseline{hint}: {', '.join(new)}", {}))
        if summary.removed:
            lines.append((f"removed, no longer collected (--flops-save-baseline drops them): "
                          f"{', '.join(summary.removed)}", {}))
        if summary.not_run:
            listed = f": {', '.join(summary.not_run)}" if self.config.option.verbose > 0 else " (-v lists them)"
            lines.append((f"not run: {len(summary.not_run)} baseline entries, kept{listed}", {}))
        return lines


GATE_KEY = pytest.StashKey[FlopsGate]()
COLLECTED_KEY = pytest.StashKey[Collected]()
