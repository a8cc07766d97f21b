"""The main job: ``pytest examples --flops-report`` passes and prints the report shown in the README;
the failure demo fails as docs/budgets.md shows."""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def example_tests() -> list[str]:
    """Node ids of the example tests, read from the files (not from pytest's output)."""
    ids = []
    for path in sorted(EXAMPLES.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ids += [f"examples/{path.name}::{node.name}" for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    return ids


def report_lines(output: str) -> list[str]:
    """The lines of the flops report: from its header row to the 'N tests, M measurements' line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("test ") and "FLOPs" in line)
    end = next(i for i in range(start, len(lines)) if re.match(r"^\d+ tests?, \d+ measurements?$", lines[i]))
    return lines[start:end + 1]


def fenced_block_after(page: Path, marker: str) -> list[str]:
    """The lines of the first fenced block whose text contains ``marker``."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    block = next(b for b in blocks if marker in b)
    return block.splitlines()


@dataclass(frozen=True)
class Job:
    returncode: int
    stdout: str


_MAIN_JOB: list[Job] = []  # the main job runs once per process; every test below reads its output


def run_as_a_user(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    """``pytest ARGS`` from the repository root, at 80 columns, in this process (pytester), with the environment
    a user's shell has: no PYTEST_*/FLOPS_* variables, no forced colour, no step summary."""
    for name in list(os.environ):
        if name.startswith(("PYTEST_", "FLOPS_")) or name in ("PY_COLORS", "FORCE_COLOR", "GITHUB_STEP_SUMMARY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "80")
    # The inner run reads the repository's pytest settings (filterwarnings = error). pytest_flops is already
    # imported in this process, so an editable install (tox's) makes pytest warn that it cannot rewrite it:
    # that warning is this test's, not the user's.
    return pytester.runpytest(*args, "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")


@pytest.fixture
def main_job(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Job:
    """``pytest examples --flops-report``, run once per process (every test below reads its output)."""
    if not _MAIN_JOB:
        result = run_as_a_user(pytester, monkeypatch, "examples", "--flops-report")
        _MAIN_JOB.append(Job(int(result.ret), result.stdout.str() + result.stderr.str()))
    return _MAIN_JOB[0]


def test_main_job_passes(main_job: Job) -> None:
    assert main_job.returncode == 0, main_job.stdout
    tests = example_tests()
    assert len(tests) >= 8
    assert re.search(rf"^=+ {len(tests)} passed in [\d.]+s", main_job.stdout, re.MULTILINE), main_job.stdout
    assert "warning" not in main_job.stdout.lower()


def test_main_job_reports_every_example(main_job: Job) -> None:
    report = "\n".join(report_lines(main_job.stdout))
    for nodeid in example_tests():
        assert nodeid in report, f"{nodeid} missing from the report:\n{report}"
    assert f"{len(example_tests())} tests, {len(example_tests())} measurements" in report


def test_budgets_are_meaningful(main_job: Job) -> None:
    """Every example uses 80-100% of its budget, so the report shows something worth reading."""
    rows = [line for line in report_lines(main_job.stdout) if line.rstrip().endswith("passed")]
    used = [float(share) for row in rows for share in re.findall(r"\s(\d+\.\d)%(?:\s|$)", row)]
    assert len(used) == len(example_tests())
    assert all(80.0 <= share <= 100.0 for share in used), used


def test_readme_shows_the_real_report(main_job: Job) -> None:
    shown = report_lines("\n".join(fenced_block_after(ROOT / "README.md", "flops report")))
    actual = report_lines(main_job.stdout)
    assert shown == actual, (
        "README.md's main-job output is out of date; paste the report of "
        "`COLUMNS=80 pytest examples --flops-report`:\n" + "\n".join(actual))


def test_failure_demo_fails_as_documented(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root as the docs show it."""
    result = run_as_a_user(pytester, monkeypatch, "examples/demo_failure.py")
    assert result.ret == 1, result.stdout.str()
    lines = result.stdout.lines
    assert "1 failed" in lines[-1]
    start = next(i for i, line in enumerate(lines) if line.startswith("max_flops: "))
    message = lines[start:next(i for i in range(start, len(lines)) if lines[i].startswith("===="))]
    assert message[0] == "max_flops: TransformerEncoder used 9.93 GFLOPs, budget 3.60 GFLOPs (+175.9%)"
    assert message[1] == "top modules by FLOPs:"
    shown = fenced_block_after(ROOT / "docs" / "budgets.md", "pytest examples/demo_failure.py\n")
    assert all(line in shown for line in message), (
        "docs/budgets.md's failure demo is out of date; the message now reads:\n" + "\n".join(message))


def test_demo_is_not_collected_by_the_main_job(main_job: Job) -> None:
    assert "demo_failure" not in main_job.stdout


def test_pasted_output_comes_from_a_plain_environment() -> None:
    """Every pasted session header lists pytest-flops alone among the plugins: the output was made by
    docs/gen_output.py in an environment with torch and pytest-flops only, as a reader has."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [(page.name, line) for page in pages for line in page.read_text(encoding="utf-8").splitlines()
             if line.startswith("plugins: ")]
    assert lines, "no pasted pytest output found"
    stray = [(name, line) for name, line in lines if not re.fullmatch(r"plugins: flops-[\w.+]+", line)]
    assert not stray, f"regenerate with `python docs/gen_output.py --python PLAIN_ENV/bin/python`: {stray}"
