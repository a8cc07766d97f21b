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
from .interrupt import SigtermGuard, stop_reason
from .settings import FlopsSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..outputs.records import TestRecord

__all__ = ["FlopsSession", "get_session", "SESSION_KEY"]

#: How long rank 0 of an interrupted run waits for the other ranks (torchrun kills the job 30 s after SIGTERM).
_WAIT_AFTER_INTERRUPT = 5.0
_EXIT_WHY: dict[int, str] = {
    pytest.ExitCode.INTERRUPTED: "the run was interrupted",
    pytest.ExitCode.INTERNAL_ERROR: "pytest had an internal error",
    pytest.ExitCode.USAGE_ERROR: "pytest stopped on a usage error",
}


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
        self.stopped_ranks: dict[int, str] = {}  # rank > 0 -> why it did not finish (it sent what it had)
        self.timed_out = False  # some rank sent nothing within flops_gather_timeout
        self.stopped: str | None = None  # why this process's run did not finish (None: it did)
        self.sigterm = SigtermGuard()
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

    def guard_sigterm(self) -> None:
        """A SIGTERM ends the run like Ctrl-C, so the files are still written (see interrupt.py)."""
        if not self.is_worker:
            self.sigterm.install()

    @property
    def incomplete(self) -> dict[str, Any] | None:
        """Why the results are not the whole run's (None when they are): what the JSON records as
        ``"incomplete"``, and the report and the Markdown say."""
        reasons = [self.stopped] if self.stopped else []
        silent = [r for r in self.missing_ranks if r not in self.refused_ranks]
        world = self.rank.world_size if self.rank is not None else 0
        if silent:
            ranks = ", ".join(map(str, silent))
            reasons.append(f"rank{'s' if len(silent) > 1 else ''} {ranks} of {world} sent no measurements"
                           + (f" within flops_gather_timeout ({self.settings.gather_timeout:g} s)"
                              if self.timed_out else " before rank 0 stopped"))
        reasons += [f"rank {r}'s measurements were refused ({why})" for r, why in sorted(self.refused_ranks.items())]
        reasons += [f"rank {r} did not finish ({why})" for r, why in sorted(self.stopped_ranks.items())]
        if not reasons:
            return None
        return {"why": "; ".join(reasons), "reasons": reasons, "stopped": self.stopped,
                "missing_ranks": list(self.missing_ranks), "timed_out": self.timed_out,
                "refused_ranks": {str(r): w for r, w in sorted(self.refused_ranks.items())},
                "stopped_ranks": {str(r): w for r, w in sorted(self.stopped_ranks.items())}}

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.stopped = stop_reason(excinfo, self.sigterm.received)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Note whether the run finished; torchrun: ranks > 0 send their records to rank 0, before any report
        or file is written."""
        self.sigterm.finishing = True  # from here a SIGTERM is only noted: the files are being written
        if self.stopped is None:
            stop = session.shouldfail or session.shouldstop  # -x, --maxfail, --sw
            if isinstance(stop, str) and stop:
                self.stopped = f"the run stopped early: {stop}"
            elif exitstatus in _EXIT_WHY:
                self.stopped = _EXIT_WHY[exitstatus]
        if self.is_worker or self.rank is None or self.settings.gather_timeout <= 0:
            return
        from .gather import gather

        timeout = self.settings.gather_timeout
        if self.stopped is not None:  # the others were probably stopped too: take what arrives soon
            timeout = min(timeout, _WAIT_AFTER_INTERRUPT)
        signals = self.sigterm.signals  # a SIGTERM from now on ends rank 0's wait
        result = gather(self.records, self.rank, timeout, since=self.started - 60, stopped=self.stopped,
                        stop=lambda: self.sigterm.signals > signals)
        if result is not None:
            self.records = result.records
            self.missing_ranks = result.missing
            self.refused_ranks = result.refused
            self.stopped_ranks = result.stopped
            self.timed_out = result.timed_out and self.stopped is None  # else: waited briefly, on purpose

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """torchrun: rank 0 releases the other ranks once its report and files are out; they wait for it,
        because torchrun stops every rank as soon as one exits with failures."""
        self.sigterm.uninstall()
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
