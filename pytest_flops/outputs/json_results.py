"""The JSON results file (``--flops-json``).

No pytest and no torch import here. The schema is documented in
``docs/json-schema.md`` and shipped as ``schemas/results.schema.json``
(:func:`json_schema`); bump :data:`RESULTS_SCHEMA_VERSION` on any change that
is not a pure addition.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from .records import TestRecord, totals

__all__ = [
    "RESULTS_FORMAT",
    "RESULTS_SCHEMA_VERSION",
    "torch_version",
    "git_commit",
    "environment",
    "build_results",
    "dumps",
    "json_schema",
]

RESULTS_FORMAT = "pytest-flops-results"
RESULTS_SCHEMA_VERSION = 1


def torch_version() -> str | None:
    """The installed torch version, without importing torch (``None`` when it is not installed)."""
    version = _version("torch")
    if version is None:
        module = sys.modules.get("torch")
        version = getattr(module, "__version__", None) if module is not None else None
    return str(version) if version else None


def git_commit(root: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``root``, else ``GITHUB_SHA`` / ``CI_COMMIT_SHA``; ``None`` when unknown."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or None


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment(root: str | Path | None = None) -> dict[str, Any]:
    """Python, platform, torch, pytest and pytest-flops versions, and the git commit when available."""
    from .. import __version__

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch_version(),
        "pytest": _version("pytest"),
        "pytest_flops": __version__,
        "git_commit": git_commit(root),
    }


def build_results(records: Iterable[TestRecord], env: Mapping[str, Any], settings: Mapping[str, Any],
                  comparisons: Mapping[str, Mapping[str, Any]] | None = None,
                  baseline_summary: Mapping[str, Any] | None = None,
                  incomplete: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The document ``--flops-json`` writes: one entry per measured test, the environment and totals.

    ``incomplete``: why the results are not the whole run's (an interrupted run, a torchrun rank that sent
    nothing); the document says ``"complete": false`` and records it.
    """
    tests = []
    for record in records:
        test: dict[str, Any] = {
            "nodeid": record["nodeid"],
            "outcome": record.get("outcome"),
            "worker": record.get("worker"),
            "budget": record.get("budget"),
            "verdicts": record.get("verdicts"),
            "measurements": list(record.get("measurements", [])),
        }
        for key in ("rank",):
            if key in record:
                test[key] = record[key]
        if comparisons is not None:  # under torchrun the baseline holds rank 0's measurements
            test["baseline"] = comparisons.get(record["nodeid"]) if record.get("rank") in (None, 0) else None
        tests.append(test)
    measurements = [m for t in tests for m in t["measurements"]]
    summary: dict[str, Any] = {
        "tests": len({t["nodeid"] for t in tests}),  # under torchrun each rank runs every test: count it once
        "records": len(tests),
        "measurements": len(measurements),
        "flops": sum(m.get("flops", 0) for m in measurements),
        "macs": sum(m.get("macs", 0) for m in measurements),
        "failed": sum(1 for t in tests if t["outcome"] == "failed"),
    }
    by_rank = totals(tests)["by_rank"]
    if by_rank:  # torchrun: the totals above are the world's; these each rank's
        summary["by_rank"] = {str(rank): value for rank, value in by_rank.items()}
    if baseline_summary is not None:
        summary["baseline"] = dict(baseline_summary)
    return {
        "format": RESULTS_FORMAT,
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": incomplete is None,
        "incomplete": dict(incomplete) if incomplete is not None else None,
        "environment": dict(env),
        "settings": dict(settings),
        "tests": tests,
        "summary": summary,
    }


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema shipped for ``kind``: ``"results"`` (``--flops-json``) or ``"baseline"`` (docs/json-schema.md)."""
    from importlib.resources import files

    if kind not in ("results", "baseline"):
        raise ValueError(f"unknown schema {kind!r}: expected 'results' or 'baseline'")
    return dict(json.loads(files(__package__).joinpath(f"schemas/{kind}.schema.json").read_text(encoding="utf-8")))
