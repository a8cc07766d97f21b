"""The pytest plugin ``flops``: options, the ``max_flops`` marker, the ``flops`` fixture, the report.

Wiring only: counting lives in :mod:`pytest_flops.counting.counter`, budgets in
:mod:`pytest_flops.budgets`, rendering in :mod:`pytest_flops.outputs.terminal`. torch is
imported lazily, when a test first measures something.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Generator, Iterator

import pytest

from ..budgets import Budget, BudgetError, check, failure_message, merge_markers
from .artifacts import configure_artifacts
from .fixture import FlopsFixture
from .gate import GATE_KEY, configure_gating
from .session import SESSION_KEY, FlopsSession, get_session
from .settings import REPORT_CHOICES, SETTINGS_KEY, FlopsSettings, add_options, get_settings

MARKER = "max_flops"
_BUDGET = pytest.StashKey[Budget]()
_MARKED = pytest.StashKey[bool]()  # the budget comes from a max_flops marker (not only from flops_max_* ini keys)
_MEASUREMENTS = pytest.StashKey[list]()
_REGISTRY = pytest.StashKey[Any]()
_VERDICTS = pytest.StashKey[list]()
_DICTS = pytest.StashKey[list]()


# -- options ------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)  # every option and ini key is declared once, in settings.py


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Let ``pytest --flops-report tests/`` mean ``--flops-report=short tests/``.

    ``--flops-report`` takes an optional value; without this, argparse would
    read the path after it as that value.
    """
    for i, arg in enumerate(args[:-1]):
        if arg == "--":
            break
        if arg == "--flops-report" and args[i + 1] not in REPORT_CHOICES:
            args.insert(i + 1, "short")
            break


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(flops=None, *, macs=None, params=None, ops=None, peak_memory=None, activations=None, "
        "saved_memory=None): fail the test when a model it measures exceeds this FLOP / MAC / parameter / memory "
        "budget (values like '8.3G', 25_600_000, '25.6M'; memory in bytes like '12GB' or '4GiB').",
    )
    settings = config.stash[SETTINGS_KEY] = FlopsSettings.from_config(config)  # validated once, here
    session = FlopsSession(config, settings)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "flops-session")
    configure_gating(config, settings)  # only when a baseline is compared or saved
    configure_artifacts(config, settings)  # only the writers of the files asked for
    if settings.report != "off" or session.rank is not None or config.pluginmanager.has_plugin("flops-artifacts"):
        session.guard_sigterm()  # something would be lost to a SIGTERM: end the run like Ctrl-C instead


# -- marker -------------------------------------------------------------------
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # the flops_max_* ini keys: the farthest level, for the tests with a marker or the flops fixture (the others
    # measure nothing: a default budget does not make every test of the suite a measured one)
    defaults = get_settings(config).default_budget
    for item in items:
        levels: dict[int, list[tuple[Any, Any]]] = {}  # id of the node -> its markers (nearest node first)
        for node, marker in item.iter_markers_with_node(MARKER):
            levels.setdefault(id(node), []).append((marker.args, marker.kwargs))
        if levels:
            item.stash[_MARKED] = True
        elif not (defaults and "flops" in getattr(item, "fixturenames", ())):
            continue
        try:
            item.stash[_BUDGET] = merge_markers([*levels.values(), *([[((), defaults)]] if defaults else [])])
        except BudgetError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


def _registry(item: pytest.Item) -> Any:
    """The item's registry: the global one plus formulas from conftest files and plugins (via item.ihook)."""
    registry = item.stash.get(_REGISTRY, None)
    if registry is None:
        from ..counting.registry import DEFAULT_REGISTRY

        registry = DEFAULT_REGISTRY.child()
        item.ihook.pytest_flops_register_formulas(registry=registry)
        item.stash[_REGISTRY] = registry
    return registry


def _ops_for(item: pytest.Item) -> str:
    budget = item.stash.get(_BUDGET, None)
    if budget is not None and budget.ops:
        return budget.ops
    return get_settings(item.config).ops


def _memory_for(item: pytest.Item) -> bool:
    """Count memory figures when the test's budget limits one, a report column shows one, or the baseline gate
    compares them (memory tracking is opt-in: it costs more)."""
    budget = item.stash.get(_BUDGET, None)
    if budget is not None and budget.needs_memory:
        return True
    if get_settings(item.config).report_shows_memory:
        return True
    gate = item.config.stash.get(GATE_KEY, None)
    return gate is not None and gate.wants_memory(item.nodeid)


def _on_measurement(item: pytest.Item, measurement: Any) -> None:
    item.stash.setdefault(_MEASUREMENTS, []).append(measurement)
    item.ihook.pytest_flops_measurement(item=item, measurement=measurement)


# -- fixture ------------------------------------------------------------------
@pytest.fixture
def flops(request: pytest.FixtureRequest) -> FlopsFixture:
    """Measure models inside a test: ``m = flops(model, x)``; ``with flops.counting(): ...``."""
    item = request.node
    return FlopsFixture(_ops_for(item), get_settings(request.config).strict, lambda: _registry(item),
                        lambda m: _on_measurement(item, m), memory=_memory_for(item))


# -- running a test -----------------------------------------------------------
def _verdicts(item: pytest.Item, budget: Budget) -> list[Any]:
    """The budget's verdict on each measurement, decided once (message, report column and exit status)."""
    verdicts = item.stash.get(_VERDICTS, None)
    if verdicts is None:
        verdicts = item.stash[_VERDICTS] = [check(m, budget) for m in item.stash.get(_MEASUREMENTS, [])]
    return verdicts


def _measurement_dicts(item: pytest.Item) -> list[dict[str, Any]]:
    """``to_dict()`` of the test's measurements, made once (for the baseline check and the record)."""
    dicts = item.stash.get(_DICTS, None)
    if dicts is None:
        dicts = item.stash[_DICTS] = [m.to_dict() for m in item.stash.get(_MEASUREMENTS, [])]
    return dicts


@contextlib.contextmanager
def _strict_as_failure(item: pytest.Item) -> Iterator[None]:
    """``--flops-strict``'s UncountedOpsError as a clean test failure (no library traceback), naming the ops and
    the setting to relax; what was counted stays in the report."""
    try:
        yield
    except Exception as exc:
        # only a counter that ran can raise it: torch is never imported here for a test that counted nothing
        counter = sys.modules.get("pytest_flops.counting.counter")
        if counter is None or not isinstance(exc, counter.UncountedOpsError):
            raise
        if exc.measurement is not None:
            _on_measurement(item, exc.measurement)
        raise _strict_failure(item, exc) from None  # from None: the library's exception is not shown as context


def _strict_failure(item: pytest.Item, exc: Any) -> BaseException:
    return pytest.fail.Exception(
        f"{MARKER}: {item.name} ran ops without a FLOP formula (--flops-strict): {exc.calls}\n"
        "register a formula for them (the pytest_flops_register_formulas hook in conftest.py, or "
        "flops.register_op_formula(op, fn) in the test), or relax: drop --flops-strict / set "
        "flops_strict = false in the ini file",
        pytrace=False,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    budget = item.stash.get(_BUDGET, None)
    if budget is not None and "flops" not in getattr(item, "fixturenames", ()):
        from ..counting.counter import FlopCounter  # a marked test without the fixture: measure the whole call

        counter = FlopCounter(_ops_for(item), get_settings(item.config).strict, registry=_registry(item),
                              memory=_memory_for(item))
        with _strict_as_failure(item):
            with counter:
                result = yield  # a failure of the test itself propagates unchanged
        measurement = counter.measurement
        if measurement is None or (not measurement.by_module and not measurement.flops):
            pytest.fail(
                f"{MARKER}: {item.name} measured nothing: no torch.nn module or counted op ran during the test "
                "call (code in fixtures is not measured; use the flops fixture to measure a model explicitly)",
                pytrace=False,
            )
        _on_measurement(item, measurement)
    else:
        with _strict_as_failure(item):
            result = yield
    measurements = item.stash.get(_MEASUREMENTS, [])
    failures = []
    marked: bool = item.stash.get(_MARKED, False)
    if budget is not None and (bool(measurements) or marked):
        if not measurements:
            pytest.fail(
                f"{MARKER}: {item.name} measured nothing: call flops(model, *inputs) or use "
                "'with flops.counting():' in the test, or drop the flops fixture to measure the whole test",
                pytrace=False,
            )
        verdicts = _verdicts(item, budget)
        failures = [failure_message(m, v, index=i if len(measurements) > 1 else None)
                    for i, (m, v) in enumerate(zip(measurements, verdicts)) if not v.ok]
    gate = item.config.stash.get(GATE_KEY, None)
    if gate is not None and measurements:
        regression = gate.check(item, _measurement_dicts(item))  # the baseline comparison, next to the budget's
        if regression:
            failures.append(regression)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, Any]:
    if call.when == "call":
        measurements = item.stash.get(_MEASUREMENTS, [])
        if measurements:  # on the item, so every later report (junitxml reads teardown's) carries them
            for name in ("flops", "macs", "params"):
                item.user_properties.append((name, max(getattr(m, name) for m in measurements)))
            for name in ("peak_memory", "activations", "saved_memory"):
                values = [getattr(m, name) for m in measurements if getattr(m, name, None) is not None]
                if values:
                    item.user_properties.append((name, max(values)))
            if len(measurements) > 1 or any(m.backward_flops for m in measurements):
                item.user_properties.append(("forward_flops", max(m.forward_flops for m in measurements)))
                item.user_properties.append(("backward_flops", max(m.backward_flops for m in measurements)))
    report = yield
    measured = bool(item.stash.get(_MEASUREMENTS, None))
    if measured and (call.when == "call" or (call.when == "setup" and report.outcome != "passed")):
        from ..outputs.records import make_record

        budget = item.stash.get(_BUDGET, None)
        rank = get_session(item.config).rank  # torchrun
        record = make_record(item.nodeid, _measurement_dicts(item), budget.to_dict() if budget else None,
                             [v.to_dict() for v in _verdicts(item, budget)] if budget else None,
                             getattr(item.config, "workerinput", {}).get("workerid"),
                             rank.rank if rank is not None else None)
        report.flops = record  # travels to the xdist controller with the report
    return report


# -- report -------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = get_session(config)
    report = session.settings.report
    if not session.is_reporter or report == "off":
        return
    from ..outputs.terminal import columns, render_table

    terminalreporter.ensure_newline()
    terminalreporter.section("flops report")
    width = getattr(terminalreporter, "_tw", None)
    width = width.fullwidth if width is not None else 120
    extra = columns(session.records)
    gate = config.stash.get(GATE_KEY, None)
    if gate is not None and gate.summary is not None:
        extra.append(("vs baseline", gate.delta_cell))
    settings = session.settings
    for line in render_table(session.records, width=width, full=report == "full", extra_columns=extra,
                             columns=settings.report_columns or None, sort=settings.report_sort):
        terminalreporter.write_line(line)
    incomplete = session.incomplete
    for reason in incomplete["reasons"] if incomplete is not None else ():
        terminalreporter.write_line(f"incomplete run: {reason}", red=True, bold=True)
