"""The files written after the run: baseline, JSON results, Markdown (and the GitHub step summary), the HTML
report, flame graphs.

:func:`configure_artifacts` registers one writer per file the settings ask
for, and the ``flops-artifacts`` plugin object only when there is at least
one; nothing of :mod:`pytest_flops.outputs` is imported before the run ends.
The reporting process alone writes (not an xdist worker, not a torchrun rank
> 0), after the gather and the baseline comparison. A file that cannot be
written is reported in red in the terminal's ``flops`` section and fails the
run's exit status; the other files are still written.

Adding a writer: a class with ``what`` (its name in messages), ``where``
(the path as the user wrote it) and ``write(run) -> str`` (the line to show),
built in :func:`writers_for` when its setting is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import pytest

from .gate import COLLECTED_KEY, GATE_KEY, FlopsGate, primary_records
from .session import get_session
from .settings import FlopsSettings, PathSetting

if TYPE_CHECKING:  # pragma: no cover
    from ..outputs.records import TestRecord

__all__ = ["Run", "Writer", "FlopsArtifacts", "configure_artifacts", "writers_for"]

@dataclass
class Run:
    """What the writers get: the run's records, the baseline comparison (if any) and where pytest started."""

    records: Sequence[TestRecord]
    settings: FlopsSettings
    gate: FlopsGate | None
    collected: dict[str, list[str]] | None
    invocation_dir: Path
    rootpath: Path
    incomplete: dict[str, Any] | None = None  # why the results are not the whole run's (session.incomplete)

    @property
    def stopped(self) -> str | None:
        """Why this process's run did not finish (None: it did; missing torchrun ranks aside)."""
        return self.incomplete["stopped"] if self.incomplete else None

    @property
    def why_incomplete(self) -> str | None:
        """The reasons the results are not the whole run's, in one line (None: they are)."""
        return self.incomplete["why"] if self.incomplete else None

    @property
    def primary(self) -> list[TestRecord]:
        return primary_records(self.records)

    def shown(self, path: Any) -> str:
        """A path as the terminal shows it: relative to where pytest was started, when it lies below."""
        try:
            return str(Path(path).relative_to(self.invocation_dir))
        except ValueError:
            return str(path)


class Writer(Protocol):
    what: str

    def where(self, run: Run) -> str: ...

    def write(self, run: Run) -> str | None:
        """Write the file; the line to show (None: nothing written, e.g. after an interrupted run)."""


@dataclass
class _Baseline:
    target: PathSetting
    what: str = "flops baseline"

    def where(self, run: Run) -> str:
        return self.target.text

    def write(self, run: Run) -> str | None:
        if run.stopped:  # never overwrite a baseline from a run that did not finish; say so
            return f"flops baseline not saved to {self.target.text}: {run.stopped}; nothing in it was changed"
        from ..outputs.baseline import save
        from ..outputs.json_results import torch_version

        # under a lock, re-read and merged: another run may have saved to the same file since configure
        records = run.primary
        done = save(self.target.path, records, run.collected, torch_version(), run.settings.baseline_overwrite)
        return (f"flops baseline saved to {self.target.text}: {done.updated} tests updated, {len(done.kept)} kept"
                + (f", {len(done.removed)} removed (no longer collected)" if done.removed else ""))


def _run_settings(run: Run) -> dict[str, Any]:
    """The settings a results file records (JSON, HTML): what the numbers were counted and compared under."""
    s = run.settings
    return {"rootdir": str(run.rootpath), "ops": s.ops, "strict": s.strict,
            "baseline": s.baseline.text if s.baseline else None}


@dataclass
class _ToFile:
    """A writer of one file named by a setting."""

    target: PathSetting

    def where(self, run: Run) -> str:
        return run.shown(self.target.path)


@dataclass
class _Json(_ToFile):
    what: str = "flops results"

    def write(self, run: Run) -> str:
        from ..outputs.io import write_text_atomic
        from ..outputs.json_results import build_results, dumps, environment

        s, gate = run.settings, run.gate
        settings = {**_run_settings(run), "report": s.report, "tolerance": str(s.tolerance),
                    "baseline_strict": s.baseline_strict}
        comparisons = {k: c.to_dict() for k, c in gate.comparisons.items()} if gate is not None else None
        document = build_results(run.records, environment(run.rootpath), settings, comparisons,
                                 gate.baseline_info() if gate is not None else None, incomplete=run.incomplete)
        write_text_atomic(self.target.path, dumps(document))
        return f"flops results written to {self.where(run)}"


@dataclass
class _Markdown:
    target: PathSetting | None
    step_summary: str | None  # $GITHUB_STEP_SUMMARY: appended to, shared with the job's other steps
    what: str = "flops markdown"

    def where(self, run: Run) -> str:
        return run.shown(self.target.path if self.target else self.step_summary)

    def write(self, run: Run) -> str:
        from ..outputs.io import write_text_atomic
        from ..outputs.markdown import render_markdown

        gate = run.gate
        text = render_markdown(run.records, gate.comparisons if gate is not None else None,
                               gate.summary if gate is not None else None, gate.text if gate is not None else None,
                               notes=gate.notes() if gate is not None else (),
                               incomplete=run.why_incomplete)
        done = []
        if self.target is not None:
            write_text_atomic(self.target.path, text)
            done.append(run.shown(self.target.path))
        if self.step_summary:
            with open(self.step_summary, "a", encoding="utf-8") as f:
                f.write(text + "\n")
            done.append("$GITHUB_STEP_SUMMARY")
        return f"flops markdown written to {' and '.join(done)}"


@dataclass
class _Html(_ToFile):
    what: str = "flops html"

    def write(self, run: Run) -> str:
        from ..outputs.html import write_html  # only now: the report's template is read when it is written
        from ..outputs.json_results import environment

        s, gate = run.settings, run.gate
        options: dict[str, Any] = {}
        if gate is not None and gate.summary is not None:
            options = {"comparisons": gate.comparisons, "baseline_summary": gate.summary.headline(),
                       "baseline": gate.baseline.tests if gate.baseline is not None else {}}
        settings = {**_run_settings(run), "tolerance": str(s.tolerance) if s.baseline else None}
        write_html(self.target.path, run.records, environment=environment(run.rootpath), settings=settings,
                   incomplete=run.why_incomplete, **options)
        return f"flops html report written to {self.where(run)}"


@dataclass
class _FlameGraphs(_ToFile):
    what: str = "flops flame graphs"

    def write(self, run: Run) -> str:
        from ..outputs.flamegraph import write_flamegraphs

        written = write_flamegraphs(run.primary, self.target.path)
        svgs = sum(1 for path in written if path.suffix == ".svg")
        return (f"flops flame graphs: {len(written) - svgs} folded-stack files and {svgs} SVG flame graphs in "
                f"{self.where(run)}")


def writers_for(settings: FlopsSettings) -> list[Writer]:
    """One writer per file the settings ask for, in the order they are written."""
    writers: list[Writer] = []
    if settings.save_baseline is not None:
        writers.append(_Baseline(settings.save_baseline))
    if settings.json is not None:
        writers.append(_Json(settings.json))
    if settings.markdown is not None or settings.writes_step_summary:
        writers.append(_Markdown(settings.markdown, settings.step_summary if settings.writes_step_summary else None))
    if settings.html is not None:
        writers.append(_Html(settings.html))
    if settings.flamegraph is not None:
        writers.append(_FlameGraphs(settings.flamegraph))
    return writers


def configure_artifacts(config: pytest.Config, settings: FlopsSettings) -> None:
    writers = writers_for(settings)
    if writers:
        config.pluginmanager.register(FlopsArtifacts(config, settings, writers), "flops-artifacts")


class FlopsArtifacts:
    """Writes the files after the run, from the reporting process only."""

    def __init__(self, config: pytest.Config, settings: FlopsSettings, writers: list[Writer]) -> None:
        self.config = config
        self.settings = settings
        self.writers = writers

    @pytest.hookimpl(trylast=True)  # after the torchrun gather and the baseline comparison
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        flops_session = get_session(self.config)
        if not flops_session.is_reporter:
            return
        collected = self.config.stash.get(COLLECTED_KEY, None)
        run = Run(flops_session.records, self.settings, self.config.stash.get(GATE_KEY, None),
                  collected.children or None if collected is not None else None,
                  self.config.invocation_params.dir, self.config.rootpath, flops_session.incomplete)
        failed = False
        for writer in self.writers:
            try:
                line = writer.write(run)
            except (OSError, ValueError) as exc:  # ValueError: BaselineError, a file that changed under the run
                flops_session.notices.append((f"{writer.what}: cannot write {writer.where(run)}: {exc}",
                                              {"red": True, "bold": True}))
                failed = True
            else:
                if line:
                    flops_session.notices.append((line, {}))
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
