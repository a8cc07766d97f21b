"""Regression gating in CI: baselines, tolerance, JSON, Markdown, flame graphs (real pytest runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# In-process pytester runs drop the modules each run imports; hypothesis's pytest plugin imports
# hypothesis in every inner run, and re-importing it (with assertion rewriting) costs ~2 s a run.
import hypothesis  # noqa: F401
from pytest_flops.outputs.baseline import (
    BASELINE_SCHEMA_VERSION,
    Tolerance,
    compare,
    missing_entries,
    parse_tolerance,
)
from pytest_flops.outputs.flamegraph import filename_for, parse_folded

MODEL_FILE = """
import pytest
import torch

WIDTH = {width}


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 4))


@pytest.mark.max_flops("1G")
def test_mlp():
    mlp()(torch.randn(2, 8))


@pytest.mark.max_flops("1G")
def test_fixed():
    torch.nn.Linear(4, 4)(torch.randn(1, 4))
"""

# FLOPs of test_mlp: 2*2*8*W (layer 0) + 2*2*W*4 (layer 2); test_fixed: 2*4*4 = 32.


def mlp_flops(width: int) -> int:
    return 32 * width + 16 * width


def write_model(pytester: pytest.Pytester, width: int) -> None:
    pytester.makepyfile(test_model=MODEL_FILE.format(width=width))


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """One line per report row (the inner runs size their tables to COLUMNS)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def baseline(pytester: pytest.Pytester) -> Path:
    """A baseline recorded with WIDTH = 16."""
    write_model(pytester, 16)
    result = pytester.runpytest("--flops-save-baseline=baseline.json")
    result.assert_outcomes(passed=2)
    return pytester.path / "baseline.json"


# -- save and compare -----------------------------------------------------------
def test_save_writes_every_measured_test(pytester: pytest.Pytester, baseline: Path) -> None:
    data = read_json(baseline)
    assert data["format"] == "pytest-flops-baseline"
    assert data["schema_version"] == BASELINE_SCHEMA_VERSION
    assert set(data["tests"]) == {"test_model.py::test_mlp", "test_model.py::test_fixed"}
    entry = data["tests"]["test_model.py::test_mlp"]
    assert entry["torch"]
    (m,) = entry["measurements"]
    assert m["flops"] == mlp_flops(16) and m["macs"] == mlp_flops(16) // 2
    assert m["params"] == 8 * 16 + 16 + 16 * 4 + 4
    assert m["forward_flops"] == mlp_flops(16) and m["backward_flops"] == 0
    assert m["by_module"]["0"] == 512 and m["by_module"]["2"] == 256
    assert [p.name for p in pytester.path.iterdir() if p.name.startswith(".baseline")] == []


def test_unchanged_counts_pass(pytester: pytest.Pytester, baseline: Path) -> None:
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-report")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*test_model.py::test_mlp*768*=*passed*",
        "*baseline baseline.json, tolerance 0: 0 regressed, 2 unchanged",
    ])


def test_growth_fails_the_test_naming_the_modules(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 32)
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-report")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_mlp _*",
        "flops baseline: Sequential grew against baseline.json (tolerance 0):",
        "  FLOPs *768 FLOPs  ->  1.54 KFLOPs  +768 FLOPs  +100.0%",
        "modules whose FLOPs changed most (baseline -> now):",
        "  0  Linear  512 FLOPs  ->  1.02 KFLOPs  +512 FLOPs  +100.0%",
        "  2  Linear  256 FLOPs  ->    512 FLOPs  +256 FLOPs  +100.0%",
        "if the change is intended, update the baseline: pytest --flops-save-baseline=baseline.json",
    ])
    result.stdout.fnmatch_lines(["*test_model.py::test_mlp*+100.0%*failed*",
                                 "*1 regressed, 1 unchanged*",
                                 "regressed: test_model.py::test_mlp  +100.0%",
                                 "FAILED test_model.py::test_mlp - Failed: flops baseline*"])
    assert "test_fixed - " not in result.stdout.str()
    # Accept the change, then the next run is green.
    pytester.runpytest("--flops-save-baseline=baseline.json").assert_outcomes(passed=2)
    pytester.runpytest("--flops-baseline=baseline.json").assert_outcomes(passed=2)


def test_growth_fails_for_fixture_measurements(pytester: pytest.Pytester) -> None:
    source = """
import torch

def test_two(flops):
    with flops.counting(torch.nn.Linear(4, {w})) as c:
        torch.nn.Linear(4, {w})(torch.randn(1, 4))
    with flops.counting():
        torch.mm(torch.randn(2, 2), torch.randn(2, 2))
"""
    pytester.makepyfile(test_fix=source.format(w=4))
    pytester.runpytest("--flops-save-baseline=b.json").assert_outcomes(passed=1)
    assert len(read_json(pytester.path / "b.json")["tests"]["test_fix.py::test_two"]["measurements"]) == 2
    pytester.makepyfile(test_fix=source.format(w=8))
    result = pytester.runpytest("--flops-baseline=b.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["flops baseline: [[]1] Linear grew against b.json (tolerance 0):"])


def test_saving_to_the_compared_file_accepts_changes(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 32)
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-save-baseline=baseline.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 regressed*", "saving to the compared baseline: changes are accepted, not failed"])
    assert read_json(baseline)["tests"]["test_model.py::test_mlp"]["measurements"][0]["flops"] == mlp_flops(32)


@pytest.mark.parametrize(("tolerance", "passes"), [
    ("100%", True), ("99.5%", False), ("0.5%", False), ("1K", True), ("768", True), ("767", False), ("0", False),
])
def test_tolerance(pytester: pytest.Pytester, baseline: Path, tolerance: str, passes: bool) -> None:
    write_model(pytester, 32)  # +768 FLOPs (+100%), +384 MACs, +208 params (+98.1%)
    result = pytester.runpytest("--flops-baseline=baseline.json", f"--flops-tolerance={tolerance}")
    result.assert_outcomes(passed=2 if passes else 1, failed=0 if passes else 1)
    if passes:
        result.stdout.fnmatch_lines([f"*tolerance {parse_tolerance(tolerance)}: 0 regressed, 1 within tolerance*"])


def test_tolerance_and_baseline_from_ini(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 32)
    pytester.makeini("[pytest]\nflops_baseline = baseline.json\nflops_tolerance = 100%\nflops_json = out/r.json\n")
    pytester.runpytest().assert_outcomes(passed=2)
    data = read_json(pytester.path / "out" / "r.json")
    assert data["settings"]["tolerance"] == "100%"
    assert data["summary"]["baseline"]["counts"]["within"] == 1
    pytester.makeini("[pytest]\nflops_baseline = baseline.json\nflops_tolerance = 50%\n")
    pytester.runpytest().assert_outcomes(passed=1, failed=1)


@pytest.mark.parametrize("value", ["abc", "-1%", "1%%", "5 percent", "-3"])
def test_bad_tolerance_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    write_model(pytester, 16)
    result = pytester.runpytest(f"--flops-tolerance={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --flops-tolerance={value!r} is not valid: expected a relative tolerance "
                                 "such as '1%' or '0.5%', or an absolute one such as '10M' or 0, or per metric such as "
                                 "'flops=2%,peak_memory=5%'"])
    pytester.makeini(f"[pytest]\nflops_tolerance = {value}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: flops_tolerance (ini)={value!r} is not valid*"])


def test_improvement_is_reported(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 8)
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-report")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_model.py::test_mlp*-50.0%*passed*",
                                 "*0 regressed, 1 improved, 1 unchanged*",
                                 "improved: test_model.py::test_mlp  -50.0%"])


def test_strict_fails_any_change_and_new_tests(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 8)
    pytester.makepyfile(test_other="import torch\n\n\ndef test_new(flops):\n"
                                   "    flops(torch.nn.Linear(2, 2), torch.randn(1, 2))\n")
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-baseline-strict")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["flops baseline (strict): Sequential changed against baseline.json (tolerance 0):"])
    result.stdout.fnmatch_lines(["flops baseline (strict): test_other.py::test_new is not in baseline.json"])


# -- partial runs, new and removed tests ---------------------------------------
def test_partial_run_updates_only_the_tests_that_ran(pytester: pytest.Pytester, baseline: Path) -> None:
    before = read_json(baseline)["tests"]
    write_model(pytester, 32)
    pytester.makepyfile(test_model=MODEL_FILE.format(width=32).replace("Linear(4, 4)", "Linear(4, 8)"))
    result = pytester.runpytest("--flops-save-baseline=baseline.json", "-k", "mlp")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["flops baseline saved to baseline.json: 1 tests updated, 1 kept"])
    after = read_json(baseline)["tests"]
    assert after["test_model.py::test_mlp"]["measurements"][0]["flops"] == mlp_flops(32)
    assert after["test_model.py::test_fixed"] == before["test_model.py::test_fixed"]
    # A test selected by nodeid: the rest of its file is not run, not removed.
    result = pytester.runpytest("--flops-baseline=baseline.json", "test_model.py::test_mlp", "-v")
    result.stdout.fnmatch_lines(["not run: 1 baseline entries, kept: test_model.py::test_fixed"])
    assert "removed" not in result.stdout.str()


def test_new_removed_and_not_run_tests(pytester: pytest.Pytester, baseline: Path) -> None:
    pytester.makepyfile(test_elsewhere="import pytest, torch\n\n@pytest.mark.max_flops('1G')\n"
                                       "def test_other():\n    torch.nn.Linear(2, 2)(torch.randn(1, 2))\n")
    pytester.runpytest("--flops-save-baseline=baseline.json").assert_outcomes(passed=3)
    pytester.makepyfile(test_model=MODEL_FILE.format(width=16).replace("def test_fixed", "def test_renamed"))
    result = pytester.runpytest("--flops-baseline=baseline.json", "test_model.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*0 regressed, 1 unchanged, 1 new, 1 removed, 1 not run",
        "new, not in the baseline (add them with --flops-save-baseline=baseline.json): test_model.py::test_renamed",
        "removed, no longer collected (--flops-save-baseline drops them): test_model.py::test_fixed",
        "not run: 1 baseline entries, kept (-v lists them)",
    ])
    result = pytester.runpytest("--flops-save-baseline=baseline.json", "test_model.py")
    result.stdout.fnmatch_lines(["*2 tests updated, 1 kept, 1 removed (no longer collected)"])
    assert set(read_json(baseline)["tests"]) == {"test_model.py::test_mlp", "test_model.py::test_renamed",
                                                 "test_elsewhere.py::test_other"}


# -- missing, corrupt and future baselines ---------------------------------------
def test_missing_baseline_warns_and_reports_all_new(pytester: pytest.Pytester) -> None:
    write_model(pytester, 16)
    result = pytester.runpytest("--flops-baseline=nope.json", "--flops-report")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*test_model.py::test_mlp*new*passed*",
        "flops baseline nope.json not found: all tests are new; create it with pytest --flops-save-baseline=nope.json",
        "*0 regressed, 2 new",
    ])
    assert not (pytester.path / "nope.json").exists()


def test_missing_baseline_with_strict_is_an_error(pytester: pytest.Pytester) -> None:
    write_model(pytester, 16)
    result = pytester.runpytest("--flops-baseline=nope.json", "--flops-baseline-strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: flops baseline nope.json not found (--flops-baseline-strict): "
                                 "create it with pytest --flops-save-baseline=nope.json"])


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "*baseline.json is corrupt: not valid JSON (*"),
    ("[1, 2]", "*baseline.json is not a pytest-flops baseline*"),
    ('{"format": "pytest-flops-baseline", "schema_version": 1, "tests": {"t.py::x": {"measurements": [{}]}}}',
     "*baseline.json is corrupt: entry 't.py::x' measurement 0 has no valid 'flops' count"),
    ('{"format": "pytest-flops-baseline", "schema_version": 99, "tests": {}}',
     "*baseline.json has schema version 99, newer than this pytest-flops reads (1): upgrade pytest-flops"),
])
def test_unreadable_baseline_is_a_usage_error(pytester: pytest.Pytester, content: str, problem: str) -> None:
    write_model(pytester, 16)
    path = pytester.path / "baseline.json"
    path.write_text(content, encoding="utf-8")
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-json=r.json", "--flops-markdown=r.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: flops baseline " + problem])
    assert len([line for line in result.stderr.lines if line.startswith("ERROR")]) == 1
    assert not (pytester.path / "r.json").exists() and not (pytester.path / "r.md").exists()
    assert path.read_text(encoding="utf-8") == content
    # Saving over it needs --flops-baseline-overwrite.
    result = pytester.runpytest("--flops-save-baseline=baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: flops baseline *; pass --flops-baseline-overwrite to replace it"])
    assert path.read_text(encoding="utf-8") == content
    pytester.runpytest("--flops-save-baseline=baseline.json", "--flops-baseline-overwrite").assert_outcomes(passed=2)
    assert set(read_json(path)["tests"]) == {"test_model.py::test_mlp", "test_model.py::test_fixed"}


def test_other_torch_version_is_reported(pytester: pytest.Pytester, baseline: Path) -> None:
    data = read_json(baseline)
    for entry in data["tests"].values():
        entry["torch"] = "1.13.0"
    baseline.write_text(json.dumps(data), encoding="utf-8")
    write_model(pytester, 32)
    result = pytester.runpytest("--flops-baseline=baseline.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "note: the baseline was recorded with torch 1.13.0, this run uses torch *: op decompositions can change "
        "counts between torch releases",
        "the baseline was recorded with torch 1.13.0, this run uses torch *: op decompositions can change counts*",
    ])


# -- result files ---------------------------------------------------------------
def test_json_results(pytester: pytest.Pytester, baseline: Path) -> None:
    write_model(pytester, 32)
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-json=out/results.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["flops results written to *results.json"])
    assert os.listdir(pytester.path / "out") == ["results.json"]  # no temp file left behind
    data = read_json(pytester.path / "out" / "results.json")
    assert data["format"] == "pytest-flops-results" and data["schema_version"] == 1
    env = data["environment"]
    assert {"python", "platform", "torch", "pytest", "pytest_flops", "git_commit"} <= set(env)
    assert env["torch"]
    tests = {t["nodeid"]: t for t in data["tests"]}
    mlp = tests["test_model.py::test_mlp"]
    assert mlp["outcome"] == "failed" and tests["test_model.py::test_fixed"]["outcome"] == "passed"
    assert mlp["budget"]["flops"] == 10**9 and mlp["verdicts"][0]["ok"]
    (m,) = mlp["measurements"]
    for key in ("flops", "macs", "params", "forward_flops", "backward_flops", "by_module", "by_op", "uncounted",
                "devices"):
        assert key in m
    assert m["flops"] == mlp_flops(32) and m["devices"] == ["cpu"]
    assert mlp["baseline"]["status"] == "regressed" and mlp["baseline"]["failed"]
    assert mlp["baseline"]["measurements"][0]["changes"]["flops"] == {"old": 768, "new": 1536, "delta": 768}
    assert data["summary"]["baseline"]["regressed"] == ["test_model.py::test_mlp"]
    assert data["summary"]["tests"] == 2 and data["summary"]["failed"] == 1


def test_markdown_and_github_step_summary(pytester: pytest.Pytester, baseline: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    step = pytester.path / "step-summary.md"
    step.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    write_model(pytester, 32)
    result = pytester.runpytest("--flops-baseline=baseline.json", "--flops-markdown=report.md")
    result.assert_outcomes(passed=1, failed=1)
    markdown = (pytester.path / "report.md").read_text(encoding="utf-8")
    assert "| test | model | FLOPs | MACs | params | budget | used | vs baseline | outcome |" in markdown
    row = "| `test_model.py::test_mlp` | Sequential | 1.54K | 768 | 420 | 1G | 0.0% | 🔺 +100.0% | failed |"
    assert row in markdown
    assert "**Baseline** `baseline.json`: 1 regressed, 1 unchanged." in markdown
    assert "0  Linear  512 FLOPs  ->  1.02 KFLOPs  +512 FLOPs  +100.0%" in markdown
    assert step.read_text(encoding="utf-8") == "earlier step\n" + markdown + "\n"


def test_step_summary_only_when_a_report_is_asked_for(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    step = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    write_model(pytester, 16)
    pytester.runpytest().assert_outcomes(passed=2)
    assert not step.exists()
    pytester.runpytest("--flops-report").assert_outcomes(passed=2)
    assert "| `test_model.py::test_fixed` |" in step.read_text(encoding="utf-8")


def test_flamegraph_stacks_add_up_to_the_module_totals(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_train="""
import pytest
import torch


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.Linear(8, 8)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))

    def forward(self, x):
        return self.mlp(self.attn(x))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@pytest.mark.parametrize("case", ["a/b c", "x"])
def test_step(flops, case):
    model = Net()
    with flops.counting(model):
        model(torch.randn(4, 8)).sum().backward()
""")
    result = pytester.runpytest("--flops-flamegraph=flames", "--flops-json=r.json", "--flops-ops=all")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["flops flame graphs: 2 folded-stack files and 2 SVG flame graphs in *flames"])
    tests = {t["nodeid"]: t for t in read_json(pytester.path / "r.json")["tests"]}
    files = sorted(p.name for p in (pytester.path / "flames").iterdir())
    assert files == sorted([filename_for(nodeid) for nodeid in tests] + [filename_for(nodeid, ".svg") for nodeid in tests])
    assert all("/" not in name and " " not in name for name in files)
    for nodeid, test in tests.items():
        (m,) = test["measurements"]
        stacks = parse_folded((pytester.path / "flames" / filename_for(nodeid)).read_text(encoding="utf-8"))
        assert any(stack.endswith("(backward)") for stack in stacks)
        assert sum(stacks.values()) == m["flops"]
        for module, value in m["by_module"].items():
            assert sum(v for s, v in stacks.items() if module in s.split(";")[:-1]) == value, module


# xdist: the gate under -n 2 is tests/test_distributed.py's xdist test.


# -- the library functions ------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("1%", Tolerance(percent=1.0)), ("0.5 %", Tolerance(percent=0.5)), ("10M", Tolerance(absolute=10**7)),
    ("0", Tolerance()), (0, Tolerance()), ("2.5K", Tolerance(absolute=2500)),
])
def test_parse_tolerance(text: object, expected: Tolerance) -> None:
    assert parse_tolerance(text) == expected


def test_compare_module_changes_name_the_layer_not_its_parents() -> None:
    old = {"name": "Net", "flops": 100, "macs": 50, "params": 10,
           "by_module": {"Net": 100, "layers": 100, "layers.0": 60, "layers.0.fc": 60, "layers.1": 40}}
    new = {"name": "Net", "flops": 160, "macs": 80, "params": 10,
           "by_module": {"Net": 160, "layers": 160, "layers.0": 120, "layers.0.fc": 120, "layers.1": 40},
           "module_types": {"layers.0.fc": "Linear"}}
    result = compare("t.py::x", [new], {"measurements": [old]})
    assert result.status == "regressed" and result.failed
    assert [(c.name, c.old, c.new, c.kind) for c in result.measurements[0].modules] == [
        ("layers.0.fc", 60, 120, "Linear")]
    assert compare("t.py::x", [new], {"measurements": [old]}, Tolerance(percent=60)).status == "within"
    assert compare("t.py::x", [old], {"measurements": [new]}).status == "improved"
    assert compare("t.py::x", [old], None).status == "new"


def test_missing_entries() -> None:
    collection = {"a.py": ["a.py::t1", "a.py::T"], "a.py::T": ["a.py::T::m"]}
    removed, not_run = missing_entries(["a.py::t1", "a.py::gone", "a.py::T::old", "a.py::U::m", "b.py::t"],
                                       ran=[], collection=collection)
    assert removed == ["a.py::T::old", "a.py::U::m", "a.py::gone"]
    assert not_run == ["a.py::t1", "b.py::t"]
    assert missing_entries(["a.py::gone"], ran=[], collection=None) == ([], ["a.py::gone"])
