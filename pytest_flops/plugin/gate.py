"""Baseline gating and result files: the ``flops-gate`` plugin object (docs/ci.md).

Compares each measured test with its baseline entry (the test fails itself on
a regression), and after the run writes the JSON results, the baseline, the
Markdown summary and the flame graphs, from the reporting process only.
Options are added by :mod:`pytest_flops.plugin`; comparisons live in
:mod:`pytest_flops.outputs.baseline`.
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from .session import get_session
from .settings import FlopsSettings

__all__ = ["FlopsGate", "GATE_KEY", "configure_gating"]

def configure_gating(config: pytest.Config, settings: FlopsSettings) -> None:
    """Load the baseline files the settings name (a bad one is a usage error) and register the gate."""
    if not settings.wants_gate:
        return  # nothing to compare or write: no gate, and nothing imported (start-up stays cheap)
    from ..outputs.baseline import BaselineError, load_baseline

    compared, saved = settings.baseline, settings.save_baseline
    overwrite = settings.baseline_overwrite
    same = compared is not None and saved is not None and compared.path.resolve() == saved.path.resolve()
    baseline = save_existing = None
    if compared is not None:
        try:
            baseline = load_baseline(compared.path)
        except BaselineError as exc:
            if not (same and overwrite):
                raise pytest.UsageError(str(exc)) from None
    if saved is not None:
        try:
            save_existing = baseline if same else load_baseline(saved.path)
        except BaselineError as exc:
            if not overwrite:
                raise pytest.UsageError(f"{exc}; pass --flops-baseline-overwrite to replace it") from None
    if compared is not None and baseline is None and settings.baseline_strict and not same:
        raise pytest.UsageError(
            f"flops baseline {compared.text} not found (--flops-baseline-strict): create it with "
            f"pytest --flops-save-baseline={compared.text}")
    gate = FlopsGate(config, settings, baseline=baseline, save_existing=save_existing, enforce=not same)
    config.stash[GATE_KEY] = gate
    config.pluginmanager.register(gate, "flops-gate")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_GateXdist(gate), "flops-gate-xdist")


class FlopsGate:
    """The baseline comparison of each test, and the files written after the run (by the reporting process only)."""

    def __init__(self, config: pytest.Config, settings: FlopsSettings, *, baseline: Any, save_existing: Any,
                 enforce: bool) -> None:
        self.config = config
        self.settings = settings
        self.tolerance = settings.tolerance
        self.strict = settings.baseline_strict
        self.baseline = baseline  # None: no file (yet) at baseline_path
        self.baseline_path: Any = settings.baseline.path if settings.baseline else None
        self.baseline_text = settings.baseline.text if settings.baseline else None
        self.enforce = enforce  # False when saving to the compared file: the run accepts the changes
        self.save_path: Any = settings.save_baseline.path if settings.save_baseline else None
        self.save_text = settings.save_baseline.text if settings.save_baseline else None
        self.save_existing = save_existing  # the file at save_path as loaded at start (None: none there)
        self.json_path: Any = settings.json.path if settings.json else None
        self.markdown_path: Any = settings.markdown.path if settings.markdown else None
        self.flamegraph_dir: Any = settings.flamegraph.path if settings.flamegraph else None
        # collector nodeid -> its children's nodeids, as collected (before -k/-m/--lf): removed vs not run
        self.collected: dict[str, list[str]] = {}
        self.comparisons: dict[str, Any] = {}
        self.summary: Any = None  # baseline.RunSummary once the run is over (reporting process)
        self.lines: list[tuple[str, dict[str, bool]]] = []  # what was written, for the terminal

    @property
    def tracks_collection(self) -> bool:
        return self.baseline_path is not None or self.save_path is not None

    def _compare(self, nodeid: str, measurements: list[Any]) -> Any:
        from ..outputs.baseline import compare

        entry = self.baseline.entry(nodeid) if self.baseline is not None else None
        return compare(nodeid, measurements, entry, self.tolerance, self.strict)

    def check(self, item: pytest.Item, measurements: list[dict[str, Any]]) -> str | None:
        """The failure text when the test's measurements (``to_dict()`` data) regressed against the baseline
        (called in its call phase)."""
        if self.baseline_path is None or not self.enforce or not measurements:
            return None
        rank = get_session(item.config).rank
        if rank is not None and rank.rank != 0:
            return None  # under torchrun the baseline holds rank 0's measurements
        comparison = self._compare(item.nodeid, measurements)
        if not comparison.failed:
            return None
        from ..outputs.json_results import torch_version

        return comparison.failure_message(self.baseline_text or "", torch_version())

    def delta_cell(self, row: Any) -> str:
        """The report's "vs baseline" column."""
        c = self.comparisons.get(row.get("nodeid"))
        if c is None or row.get("rank") not in (None, 0):
            return "-"
        m = next((m for m in c.measurements if m.index == row.get("index")), None)
        return m.delta_text() if m is not None else c.status

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: before --lf filters the result
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        report = yield
        if self.tracks_collection and report.passed and isinstance(collector, (pytest.File, pytest.Class)):
            self.collected[collector.nodeid] = [node.nodeid for node in report.result]
        return report

    @pytest.hookimpl(trylast=True)  # after the torchrun gather (FlopsSession.pytest_sessionfinish)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        flops_session = get_session(self.config)
        if flops_session.is_worker:
            if self.tracks_collection:
                self.config.workeroutput["flops_collected"] = self.collected  # type: ignore[attr-defined]
            return
        if not flops_session.is_reporter:
            return
        from ..outputs.json_results import torch_version

        records = flops_session.records
        primary = {r["nodeid"]: r for r in records if r.get("rank") in (None, 0)}
        collected = self.collected or None
        if self.baseline_path is not None:
            from ..outputs.baseline import summarize

            self.comparisons = {nodeid: self._compare(nodeid, r["measurements"]) for nodeid, r in primary.items()}
            self.summary = summarize(self.comparisons, self.baseline, collected)
        failed_writes = False
        if self.save_path is not None and exitstatus not in (pytest.ExitCode.INTERRUPTED,
                                                             pytest.ExitCode.INTERNAL_ERROR,
                                                             pytest.ExitCode.USAGE_ERROR):
            failed_writes |= not self._write("flops baseline", self.save_text, self._save_baseline,
                                             list(primary.values()), collected, torch_version())
        if self.json_path is not None:
            failed_writes |= not self._write("flops results", self._shown(self.json_path), self._write_json, records)
        step_summary = self.settings.step_summary if self.settings.writes_step_summary else None
        if self.markdown_path is not None or step_summary:
            failed_writes |= not self._write("flops markdown", self._shown(self.markdown_path or step_summary),
                                             self._write_markdown, records, step_summary)
        if self.flamegraph_dir is not None:
            failed_writes |= not self._write("flops flame graphs", self._shown(self.flamegraph_dir),
                                             self._write_flamegraphs, list(primary.values()))
        if failed_writes and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _shown(self, path: Any) -> str:
        """A path as the terminal shows it: relative to where pytest was started, when it lies below."""
        from pathlib import Path

        try:
            return str(Path(path).relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(path)

    def _write(self, what: str, where: str | None, fn: Any, *args: Any) -> bool:
        try:
            self.lines.append((fn(*args), {}))
            return True
        except (OSError, ValueError) as exc:  # ValueError: BaselineError, a file that changed under the run
            self.lines.append((f"{what}: cannot write {where}: {exc}", {"red": True, "bold": True}))
            return False

    def _save_baseline(self, records: list[Any], collected: Any, torch: str | None) -> str:
        from ..outputs.baseline import save

        # under a lock, re-read and merged: another run may have saved to the same file since configure
        done = save(self.save_path, records, collected, torch, self.settings.baseline_overwrite)
        return (f"flops baseline saved to {self.save_text}: {done.updated} tests updated, {len(done.kept)} kept"
                + (f", {len(done.removed)} removed (no longer collected)" if done.removed else ""))

    def _baseline_info(self) -> dict[str, Any] | None:
        if self.baseline_path is None:
            return None
        info: dict[str, Any] = {"path": self.baseline_text, "found": self.baseline is not None,
                                "tolerance": str(self.tolerance), "strict": self.strict, "enforced": self.enforce,
                                "torch": sorted(self.summary.baseline_torch) if self.summary else []}
        if self.summary is not None:
            info["counts"] = self.summary.counts()
            info.update(self.summary.to_dict())
        return info

    def _write_json(self, records: list[Any]) -> str:
        from ..outputs.io import write_text_atomic
        from ..outputs.json_results import build_results, dumps, environment

        settings = {"ops": self.settings.ops, "strict": self.settings.strict, "report": self.settings.report,
                    "baseline": self.baseline_text, "tolerance": str(self.tolerance),
                    "baseline_strict": self.strict}
        comparisons = {k: c.to_dict() for k, c in self.comparisons.items()} if self.summary is not None else None
        document = build_results(records, environment(self.config.rootpath), settings, comparisons,
                                 self._baseline_info())
        write_text_atomic(self.json_path, dumps(document))
        return f"flops results written to {self._shown(self.json_path)}"

    def _notes(self) -> list[str]:
        notes = []
        if self.baseline_path is not None and self.baseline is None:
            notes.append(f"flops baseline {self.baseline_text} not found: all tests are new; create it with "
                         f"pytest --flops-save-baseline={self.baseline_text}")
        from ..outputs.json_results import torch_version

        now = torch_version()
        old = sorted({c.baseline_torch for c in self.comparisons.values() if c.baseline_torch} - {now})
        if old:
            notes.append(f"the baseline was recorded with torch {', '.join(old)}, this run uses torch {now}: "
                         "op decompositions can change counts between torch releases")
        return notes

    def _write_markdown(self, records: list[Any], step_summary: str | None) -> str:
        from ..outputs.markdown import render_markdown
        from ..outputs.io import write_text_atomic

        text = render_markdown(records, self.comparisons if self.summary is not None else None, self.summary,
                               self.baseline_text, notes=self._notes())
        done = []
        if self.markdown_path is not None:
            write_text_atomic(self.markdown_path, text)
            done.append(self._shown(self.markdown_path))
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as f:  # shared with other steps: append
                f.write(text + "\n")
            done.append("$GITHUB_STEP_SUMMARY")
        return f"flops markdown written to {' and '.join(done)}"

    def _write_flamegraphs(self, records: list[Any]) -> str:
        from ..outputs.flamegraph import write_flamegraphs

        written = write_flamegraphs(records, self.flamegraph_dir)
        svgs = sum(1 for path in written if path.suffix == ".svg")
        return (f"flops flame graphs: {len(written) - svgs} folded-stack files and {svgs} SVG flame graphs in "
                f"{self._shown(self.flamegraph_dir)}")

    @pytest.hookimpl(trylast=True)  # after the "flops report" table
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not get_session(config).is_reporter or not (self.summary is not None or self.lines or self._notes()):
            return
        terminalreporter.ensure_newline()  # else the first line below the header would be blank
        terminalreporter.section("flops baseline" if self.baseline_path is not None else "flops")
        for note in self._notes():
            terminalreporter.write_line(note, yellow=True)
        if self.summary is not None:
            self._write_summary(terminalreporter)
        for line, markup in self.lines:
            terminalreporter.write_line(line, **markup)

    def _write_summary(self, tr: Any) -> None:
        summary = self.summary
        tr.write_line(f"baseline {self.baseline_text}, tolerance {self.tolerance}"
                      + (", strict" if self.strict else "") + f": {summary.headline()}")
        if not self.enforce:
            tr.write_line("saving to the compared baseline: changes are accepted, not failed", yellow=True)
        groups: tuple[tuple[str, dict[str, bool]], ...] = (("regressed", {"red": True}), ("improved", {"green": True}), ("within", {}), ("changed", {}))
        for status, markup in groups:
            for c in sorted(summary.by_status(status), key=lambda c: c.nodeid):
                deltas = ", ".join(m.delta_text() for m in c.measurements)
                label = "within tolerance" if status == "within" else status
                tr.write_line(f"{label}: {c.nodeid}  {deltas}", **markup)
        new = sorted(c.nodeid for c in summary.by_status("new"))
        if new and self.baseline is not None:
            hint = "" if self.strict else f" (add them with --flops-save-baseline={self.baseline_text})"
            tr.write_line(f"new, not in the baseline{hint}: {', '.join(new)}")
        if summary.removed:
            tr.write_line(f"removed, no longer collected (--flops-save-baseline drops them): "
                          f"{', '.join(summary.removed)}")
        if summary.not_run:
            listed = f": {', '.join(summary.not_run)}" if tr.config.option.verbose > 0 else " (-v lists them)"
            tr.write_line(f"not run: {len(summary.not_run)} baseline entries, kept{listed}")


class _GateXdist:
    """xdist-only hook (registered only when xdist is installed): the nodeids the workers collected."""

    def __init__(self, gate: FlopsGate) -> None:
        self.gate = gate

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.gate.collected.update(getattr(node, "workeroutput", {}).get("flops_collected", {}))


GATE_KEY = pytest.StashKey[FlopsGate]()
