"""The session's state: records of measured tests, in the order their reports
arrive (from xdist workers too), and the torchrun gather to rank 0.

Registered as a plugin object per pytest config (``flops-session``), so
nested pytest runs (pytester) keep their own records.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from .gather import rank_info
from .settings import FlopsSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..outputs.records import TestRecord

__all__ = ["FlopsSession", "get_session", "SESSION_KEY"]


class FlopsSession:
    """Records of measured tests, in the order their reports arrive (also from xdist workers)."""

    def __init__(self, config: pytest.Config, settings: FlopsSettings) -> None:
        self.config = config
        self.settings = settings
        self.records: list[TestRecord] = []
        self.is_worker = hasattr(config, "workerinput")
        # torchrun: this process's rank (None when it runs alone); rank 0 gathers the others' records.
        self.rank = rank_info()
        self.missing_ranks: list[int] = []
        self.refused_ranks: dict[int, str] = {}  # rank -> why its records were not believed (gather.py)
        self.started = time.time()
        # the lines of the terminal's after-run section: the baseline summary (gate.py), then the files written
        # (artifacts.py), each (text, markup)
        self.notices: list[tuple[str, dict[str, bool]]] = []

    @property
    def is_reporter(self) -> bool:
        """Whether this process prints the report and writes files: not an xdist worker, not a torchrun rank > 0."""
        return not self.is_worker and (self.rank is None or self.rank.rank == 0)

    def add(self, record: TestRecord) -> None:
        self.records.append(record)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """torchrun: ranks > 0 send their records to rank 0, before any report or file is written."""
        if self.is_worker or self.rank is None or self.settings.gather_timeout <= 0:
            return
        from .gather import gather

        result = gather(self.records, self.rank, self.settings.gather_timeout, since=self.started - 60)
        if result is not None:
            self.records = result.records
            self.missing_ranks = result.missing
            self.refused_ranks = result.refused

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """torchrun: rank 0 releases the other ranks once its report and files are out; they wait for it,
        because torchrun stops every rank as soon as one exits with failures."""
        if self.is_worker or self.rank is None or self.settings.gather_timeout <= 0:
            return
        from .gather import release, wait_released

        if self.rank.rank == 0:
            sys.stdout.flush()
            release(self.rank)
        else:
            wait_released(self.rank, self.settings.gather_timeout)

    @pytest.hookimpl(trylast=True)  # after the "flops report" table
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not self.is_reporter or not self.notices:
            return
        terminalreporter.ensure_newline()  # else the first line below the header would be blank
        terminalreporter.section("flops baseline" if self.settings.baseline is not None else "flops")
        for line, markup in self.notices:
            terminalreporter.write_line(line, **markup)

    # Registered as a plugin object per config, so these hooks see this session only.
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "flops", None)
        if record:
            from ..outputs.records import with_outcome  # first measured test: the outputs layer is needed now

            self.add(with_outcome(record, _outcome(report)))


def _outcome(report: pytest.TestReport) -> str:
    """``passed``/``failed``/``skipped``, or ``xfailed``/``xpassed`` for an expected failure (as pytest's summary)."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.outcome == "skipped" else ("xpassed" if report.outcome == "passed" else "failed")
    return report.outcome


SESSION_KEY = pytest.StashKey[FlopsSession]()


def get_session(config: pytest.Config) -> FlopsSession:
    return config.stash[SESSION_KEY]
