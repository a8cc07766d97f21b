"""Every pytest-flops option and ini key, read and validated once: :class:`FlopsSettings`.

``pytest_addoption`` registers the options and ini keys from the fields of
:class:`FlopsSettings` (:func:`add_options`); ``pytest_configure`` builds one
frozen ``FlopsSettings.from_config(config)`` and keeps it in ``config.stash``
(:func:`get_settings`). The hooks, the session, the gate, the artifacts and the
fixture read that object, never ``config.getoption``/``config.getini``.

**Adding a setting is one change, in this file**: a field of
:class:`FlopsSettings` declared with :func:`option` (command-line help, ini
help, default, parser). The field ``name`` is the option ``--flops-name``
(underscores become dashes), the ini key ``flops_name`` and the attribute
``settings.name``; leave ``help`` empty for an ini-only key, ``ini`` empty for
a command-line-only option. The command line wins over the ini file. A parser
takes the raw value (the text typed on the command line or in the ini file,
or the default) and returns the value, or raises ``ValueError`` whose text
says what would be accepted (``"expected 'matmul' or 'all'"``): the user gets
one line naming what they typed, ``--flops-ops='most' is not valid: expected
'matmul' or 'all'`` or ``flops_ops (ini)='most' is not valid: ...``. Paths
(``kind="path"``) are resolved against the invocation directory (command
line) or the ini file's folder (ini) and keep the text as typed.

No torch here, and nothing beyond the standard library, :mod:`pytest_flops.units`
and :mod:`pytest_flops.budgets`: this module is imported at pytest start-up.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from ..budgets import METRICS, TOLERANCE_FORMS, BudgetError, Tolerance, parse_budget, parse_tolerance
from ..units import MEMORY_METRICS, OPS_CHOICES

__all__ = ["FlopsSettings", "PathSetting", "SETTINGS_KEY", "add_options", "get_settings", "option",
           "REPORT_CHOICES", "OPS_CHOICES"]

REPORT_CHOICES = ("short", "full", "off")


@dataclass(frozen=True)
class PathSetting:
    """A file or folder setting: the absolute ``path``, and the ``text`` as the user wrote it (for messages)."""

    path: Path
    text: str

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class _Option:
    help: str  # the command-line option's --help text; "" for an ini-only key
    ini: str  # the ini key's help text; "" for a command-line-only option
    default: Any  # the value when neither is given (what the ini key returns when absent)
    kind: str  # "text", "bool" (a flag; ini type bool) or "path"
    parse: Callable[[Any], Any] | None
    cli: Mapping[str, Any]  # more addoption() arguments (metavar, nargs, const)
    hint: str  # added to a command-line error


def option(help: str = "", ini: str = "", *, default: Any = None, kind: str = "text",
           parse: Callable[[Any], Any] | None = None, hint: str = "", **cli: Any) -> Any:
    """A field of :class:`FlopsSettings` backed by ``--flops-<name>`` and/or ``flops_<name>`` (see the module doc)."""
    spec = _Option(help, ini, default, kind, parse, cli, hint)
    fallback = False if kind == "bool" else (None if kind == "path" else (parse(default) if parse else default))
    return dataclasses.field(default=fallback, metadata={"flops_option": spec})


# -- parsers: raw value -> value, or ValueError("expected ...") ----------------------------
def _choice(*choices: str) -> Callable[[Any], str]:
    quoted = [repr(c) for c in choices]
    expected = "expected " + (", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0])

    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(expected)
        return str(value)

    return parse


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):  # NaN, negative, infinite: not a wait
        raise ValueError("expected a number of seconds >= 0 (0: no gathering)")
    return seconds


def _tolerance(value: Any) -> Tolerance:
    try:
        return parse_tolerance(value)
    except ValueError as exc:
        if "unknown metric" in str(exc):
            raise ValueError(str(exc).split(": ", 1)[1]) from None
        raise ValueError(f"expected {TOLERANCE_FORMS}, or per metric such as 'flops=2%,peak_memory=5%'") from None


def _default_limit(key: str) -> Callable[[Any], str | None]:
    """The parser of ``flops_max_<key>``: the value as written (checked as ``max_flops(<key>=...)`` would check
    it), or None when the key is empty."""
    def parse(value: Any) -> str | None:
        text = str(value).strip()
        if not text:
            return None
        try:
            parse_budget((), {key: text})
        except BudgetError as exc:
            if exc.metric is not None:  # "1G FLOPs" for flops_max_params
                raise ValueError(f"names {METRICS[exc.metric]}, not {METRICS[key]}: set flops_max_{exc.metric} "
                                 "instead, or drop the unit") from None
            raise ValueError(exc.reason or str(exc)) from None
        return text

    return parse


def _default_limit_option(key: str) -> Any:
    """The ini-only field ``flops_max_<key>``: a default ``max_flops(<key>=...)`` for every measured test."""
    example = {"flops": "10G", "macs": "4.1G", "params": "25M", "peak_memory": "12GB", "activations": "40M",
               "saved_memory": "4GiB"}[key]
    return option(ini=f"default {key} budget of every measured test (as max_flops({key}=...), e.g. {example}); "
                      "a test's max_flops marker overrides it key by key", default="", parse=_default_limit(key))


def _report_columns(value: Any) -> tuple[str, ...]:
    if not str(value).strip():
        return ()  # the default columns
    from ..outputs.terminal import parse_columns

    return parse_columns(str(value))


def _report_sort(value: Any) -> str | None:
    if not str(value).strip():
        return None  # in the order the tests finished
    from ..outputs.terminal import parse_sort

    return parse_sort(str(value))


@dataclass(frozen=True)
class FlopsSettings:
    """What the user asked pytest-flops for, parsed once (see the module docstring to add a setting)."""

    # -- counting and the report
    report: str = option(
        "print a per-test FLOPs/MACs/params table after the run; 'full' adds each test's top modules",
        "report after the run: short, full or off (default off)",
        default="off", parse=_choice(*REPORT_CHOICES), nargs="?", const="short", metavar="short|full",
        hint="(write paths before --flops-report, or use --flops-report=full)")
    report_columns: tuple[str, ...] = option(
        "the columns of --flops-report, comma-separated, e.g. 'test,flops,params,used,outcome' (names: test, model, "
        "flops, macs, params, peak_memory, activations, saved_memory, budget, used, device, worker, rank, rate, baseline, outcome)",
        "columns of the report (as --flops-report-columns)", default="", parse=_report_columns, metavar="COLS")
    report_sort: str | None = option(
        "sort the --flops-report rows by this column (numbers largest first, text A to Z), e.g. 'flops'; "
        "default: the order the tests finished", "as --flops-report-sort", default="", parse=_report_sort,
        metavar="COL")
    ops: str = option(
        "what to count: 'matmul' (matmul, conv, attention; default) or 'all' (also norms, pointwise, reductions, "
        "pooling)",
        "what to count: matmul (default) or all", default="matmul", parse=_choice(*OPS_CHOICES), metavar="matmul|all")
    strict: bool = option("fail a measurement that ran ops without a FLOP formula",
                          "fail measurements that ran ops without a formula", kind="bool")
    gather_timeout: float = option(
        ini="torchrun: seconds rank 0 waits for the other ranks' measurements (default 300; 0: no gathering, "
            "rank 0 reports its own)", default="300", parse=_seconds)
    # -- default budgets (ini only): what a max_flops marker of every measured test would set
    max_flops: str | None = _default_limit_option("flops")
    max_macs: str | None = _default_limit_option("macs")
    max_params: str | None = _default_limit_option("params")
    max_peak_memory: str | None = _default_limit_option("peak_memory")
    max_activations: str | None = _default_limit_option("activations")
    max_saved_memory: str | None = _default_limit_option("saved_memory")
    # -- the baseline gate
    baseline: PathSetting | None = option(
        "compare each measured test with this baseline file: a test whose FLOPs, MACs or params grew beyond "
        "--flops-tolerance fails", "baseline file to compare with (as --flops-baseline)", kind="path",
        metavar="PATH")
    save_baseline: PathSetting | None = option(
        "write this run's counts to a baseline file, merged with the tests it already holds", kind="path",
        metavar="PATH")
    baseline_strict: bool = option(
        "with --flops-baseline: also fail shrinking counts, tests not in the baseline and a missing baseline file",
        "as --flops-baseline-strict", kind="bool")
    baseline_overwrite: bool = option(
        "let --flops-save-baseline replace a file that is not a readable baseline", kind="bool")
    tolerance: Tolerance = option(
        "growth allowed before a regression: relative ('1%%', '0.5%%') or absolute ('10M'), or per metric "
        "('flops=2%%,peak_memory=5%%'); default 0",
        "growth allowed before a regression: 1%, 0.5%, 10M or flops=2%,peak_memory=5% (default 0)", default="0", parse=_tolerance,
        metavar="TOL")
    # -- files written after the run
    json: PathSetting | None = option(
        "write the measured tests, their measurements, budgets, baseline deltas and outcomes, and the "
        "environment, to a JSON file", "JSON results file (as --flops-json)", kind="path", metavar="PATH")
    markdown: PathSetting | None = option(
        "write the report (with the baseline deltas) as a Markdown table",
        "Markdown report file (as --flops-markdown)", kind="path", metavar="PATH")
    html: PathSetting | None = option(
        "write a self-contained HTML report (sortable table, each test's module tree as a chart sized by FLOPs or "
        "params, baseline deltas) to PATH: one file, nothing fetched", "HTML report file (as --flops-html)",
        kind="path", metavar="PATH")
    flamegraph: PathSetting | None = option(
        "write one folded-stack file (speedscope, flamegraph.pl) and one SVG flame graph per measured test into DIR",
        "folder for folded-stack files (as --flops-flamegraph)", kind="path", metavar="DIR")
    # -- from the environment, not from an option
    step_summary: str | None = None  # $GITHUB_STEP_SUMMARY: the Markdown report is appended there

    @classmethod
    def from_config(cls, config: pytest.Config, environ: Mapping[str, str] | None = None) -> FlopsSettings:
        """Read and validate every option and ini key; raises ``pytest.UsageError`` (one line) on a bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {f.name: _read(config, f.name, f.metadata["flops_option"])
                                  for f in dataclasses.fields(cls) if "flops_option" in f.metadata}
        values["step_summary"] = env.get("GITHUB_STEP_SUMMARY") or None
        _check_distinct_outputs(values)
        return cls(**values)

    @property
    def default_budget(self) -> dict[str, str]:
        """The ``flops_max_*`` ini keys that are set, as ``max_flops`` keyword arguments."""
        return {key: value for key in METRICS if (value := getattr(self, f"max_{key}")) is not None}

    @property
    def report_shows_memory(self) -> bool:
        """Whether the terminal report has a memory column (``--flops-report-columns=...,peak_memory``)."""
        return self.report != "off" and any(column in MEMORY_METRICS for column in self.report_columns)

    @property
    def writes_step_summary(self) -> bool:
        """In GitHub Actions: the Markdown report goes to the job summary when there is a report to show."""
        return bool(self.step_summary) and (self.report != "off" or bool(self.markdown) or bool(self.baseline))


def _check_distinct_outputs(values: Mapping[str, Any]) -> None:
    """Refuse, before the run, an output written over the compared baseline or over another output
    (paths compared after resolving links): the baseline would be replaced by a report. Saving to the
    compared baseline (``--flops-baseline=X --flops-save-baseline=X``) is allowed: it accepts the changes.

    Every path setting but ``baseline`` (the one file read) is an output, so a new output is checked too.
    """
    seen: dict[str, str] = {}
    if values.get("baseline") is not None:
        seen[os.path.realpath(values["baseline"].path)] = "baseline"
    outputs = [f.name for f in dataclasses.fields(FlopsSettings)
               if "flops_option" in f.metadata and f.metadata["flops_option"].kind == "path" and f.name != "baseline"]
    for name in outputs:
        setting = values.get(name)
        if setting is None:
            continue
        key = os.path.realpath(setting.path)
        other = seen.get(key)
        if other is not None and not (name == "save_baseline" and other == "baseline"):
            raise pytest.UsageError(
                f"{_flag(name)}={setting.text} is the same file as {_flag(other)}={values[other].text}: "
                f"expected a path of its own (writing it would replace the {other.replace('_', ' ')})")
        seen[key] = name


def add_options(parser: pytest.Parser) -> None:
    """Register every ``--flops-*`` option and ``flops_*`` ini key (from :class:`FlopsSettings`'s fields)."""
    group = parser.getgroup("flops", "FLOP budgets (pytest-flops)")
    specs = [(f.name, f.metadata["flops_option"]) for f in dataclasses.fields(FlopsSettings)
             if "flops_option" in f.metadata]
    for name, spec in specs:
        if spec.help:
            extra = {"action": "store_true"} if spec.kind == "bool" else dict(spec.cli)
            group.addoption(_flag(name), dest=_dest(name), default=None, help=spec.help, **extra)
    for name, spec in specs:
        if spec.ini and spec.kind == "bool":
            parser.addini(_dest(name), spec.ini, type="bool", default=False)
        elif spec.ini:
            parser.addini(_dest(name), spec.ini, default="" if spec.default is None else spec.default)


def _flag(name: str) -> str:
    return "--flops-" + name.replace("_", "-")


def _dest(name: str) -> str:
    return "flops_" + name


def _read(config: pytest.Config, name: str, spec: _Option) -> Any:
    raw: Any = None
    where, base = _flag(name), config.invocation_params.dir
    if spec.help:
        raw, where, base = config.getoption(_dest(name)), _flag(name), config.invocation_params.dir
    if raw is None and spec.ini:
        where = f"{_dest(name)} (ini)"
        base = config.inipath.parent if config.inipath else config.rootpath
        try:
            raw = config.getini(_dest(name))
        except (ValueError, pytest.UsageError) as exc:  # a bool key set to "maybe" (pytest names the value only)
            raise pytest.UsageError(f"{where} is not valid: {exc}") from None
    if raw is None or (raw == "" and spec.kind == "text"):
        raw = spec.default
    if spec.kind == "bool":
        return bool(raw)
    if spec.kind == "path" and raw is not None and not str(raw).strip() and where.startswith("--"):
        raise pytest.UsageError(f"{where}={raw!r} is not valid: expected a path")
    if spec.kind == "path":
        return PathSetting(base / Path(str(raw)).expanduser(), str(raw)) if raw else None
    if spec.parse is None:
        return raw
    try:
        return spec.parse(raw)
    except ValueError as exc:
        hint = f" {spec.hint}" if spec.hint and where.startswith("--") else ""
        raise pytest.UsageError(f"{where}={raw!r} is not valid: {exc}{hint}") from None


SETTINGS_KEY = pytest.StashKey[FlopsSettings]()


def get_settings(config: pytest.Config) -> FlopsSettings:
    """The run's settings (made in ``pytest_configure``)."""
    return config.stash[SETTINGS_KEY]
