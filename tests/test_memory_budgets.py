"""Memory budgets: byte units, the marker keys, failures that show the modules at the peak (pytester)."""

from __future__ import annotations

import textwrap

import pytest

from pytest_flops.budgets import BudgetError, check, failure_message, parse_budget
from pytest_flops.units import parse_bytes

MODEL = """
import pytest, torch
from torch import nn

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

# params 19210 floats = 76840 bytes; activations per sample 256 + 10 = 266
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_models=MODEL + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("text, expected", [
    ("12GB", 12 * 10**9), ("12GiB", 12 * 2**30), ("4 GiB", 4 * 2**30), ("512MiB", 512 * 2**20),
    ("800 MB", 800 * 10**6), ("1.5KiB", 1536), ("100B", 100), ("7 bytes", 7), (4096, 4096), ("2_048", 2048),
])
def test_parse_bytes_decimal_and_binary(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["12G", "40M", "8 GFLOPs", "-1", "GB", True, "1.2.3GB"])
def test_parse_bytes_refuses_what_is_not_bytes(text):
    with pytest.raises(ValueError, match="invalid byte quantity .*expected .*GiB"):
        parse_bytes(text)


def test_budget_memory_keys():
    budget = parse_budget(("8G",), {"peak_memory": "12GB", "activations": "40M", "saved_memory": "4GiB"})
    assert (budget.flops, budget.peak_memory, budget.activations, budget.saved_memory) == (
        8 * 10**9, 12 * 10**9, 40 * 10**6, 4 * 2**30)
    assert budget.needs_memory
    assert not parse_budget(("8G",)).needs_memory
    assert budget.describe() == "8G, peak 11.18 GiB, 40M activations, saved 4.00 GiB"
    assert budget.to_dict()["peak_memory"] == 12 * 10**9


@pytest.mark.parametrize("kwargs, message", [
    ({"peak_memory": "12G"}, "peak_memory='12G' is not a valid byte quantity"),
    ({"saved_memory": "4 GFLOPs"}, "saved_memory='4 GFLOPs' is not a valid byte quantity"),
    ({"activations": "4GB"}, "activations='4GB' has the wrong unit"),
    ({"activations": "40M params"}, "activations='40M params' has the wrong unit"),
    ({"peak_mem": "1GB"}, "unexpected argument"),
    ({"flops": "12GB"}, "flops='12GB' is a byte quantity: a memory budget is peak_memory='12GB'"),
])
def test_wrong_unit_for_the_key_is_an_error(kwargs, message):
    with pytest.raises(BudgetError, match=message):
        parse_budget((), kwargs)


def test_check_a_measurement_without_memory_figures_fails_and_says_why():
    import torch

    import pytest_flops

    m = pytest_flops.count(torch.nn.Linear(4, 4), torch.randn(1, 4))  # memory=False
    verdict = check(m, parse_budget((), {"peak_memory": "1GB"}))
    assert not verdict.ok
    assert "peak_memory was not measured" in failure_message(m, verdict)


def test_peak_memory_budget_passes(pytester):
    result = run(pytester, """
        @pytest.mark.max_flops(peak_memory="1MB", activations="300", saved_memory="64KiB")
        def test_ok(flops):
            m = flops(make_model(), torch.randn(1, 64))  # memory counted: the budget limits it
            assert m.peak_memory is not None and 76840 < m.peak_memory < 10**6
            assert m.activations == 266
    """)
    result.assert_outcomes(passed=1)


def test_peak_memory_budget_fails_with_the_modules_at_the_peak(pytester):
    result = run(pytester, """
        @pytest.mark.max_flops(peak_memory="50KB")
        def test_too_big(flops):
            with torch.no_grad():
                flops(make_model(), torch.randn(4, 64))
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*max_flops: Sequential peaked at *KiB, budget 48.83 KiB (+*%)*",
        "*modules at the peak (innermost first):*",
        "*  1  * ReLU*",
    ])
    assert "top modules by FLOPs" not in result.stdout.str()  # a memory failure lists memory, not FLOPs


def test_activations_budget_fails_with_the_top_modules(pytester):
    result = run(pytester, """
        @pytest.mark.max_flops(activations="1K")
        def test_acts():  # no fixture: the whole call is measured, with memory figures
            make_model()(torch.randn(8, 64))
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*max_flops: Sequential output 2.13K activations, budget 1.00K activations (+112.8%)*",
        "*top modules by activations:*",
        "*  0  * 2.05K  * 96.2%  Linear*",
    ])


def test_wrong_unit_in_the_marker_is_a_usage_error(pytester):
    result = run(pytester, """
        @pytest.mark.max_flops(activations="40MB")
        def test_bad(flops):
            pass
    """)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*activations='40MB' has the wrong unit*"])


def test_ini_default_budgets_apply_to_measured_tests_and_markers_override_them(pytester):
    """flops_max_peak_memory / flops_max_activations / flops_max_flops: the budget of every test that measures
    something; a marker's key wins over the ini's; a test that measures nothing is not made a measured one."""
    pytester.makeini("""
        [pytest]
        flops_max_peak_memory = 50KB
        flops_max_activations = 10K
        flops_max_flops = 1G
    """)
    result = run(pytester, """
        def test_default(flops):
            with torch.no_grad():
                flops(make_model(), torch.randn(4, 64))  # memory counted: the default budget limits it

        @pytest.mark.max_flops(peak_memory="1MB")
        def test_marker_overrides(flops):
            with torch.no_grad():
                m = flops(make_model(), torch.randn(4, 64))
            assert m.activations == 4 * 266

        @pytest.mark.max_flops(activations="100")
        def test_marker_keeps_the_other_defaults(flops):
            with torch.no_grad():
                flops(make_model(), torch.randn(4, 64))

        def test_fixture_unused(flops):
            pass

        def test_not_measured():
            make_model()(torch.randn(4, 64))
    """, "--flops-report", "--flops-json=r.json")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*max_flops: Sequential peaked at *KiB, budget 48.83 KiB*"])
    result.stdout.fnmatch_lines(["*Sequential output 1.06K activations, budget 100 activations*"])
    import json

    tests = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "r.json").read_text())["tests"]}
    assert sorted(tests) == ["test_default", "test_marker_keeps_the_other_defaults", "test_marker_overrides"]
    assert tests["test_default"]["budget"] == {"flops": 10**9, "macs": None, "params": None, "ops": None,
                                               "peak_memory": 50_000, "activations": 10_000}
    assert tests["test_marker_overrides"]["budget"]["peak_memory"] == 10**6
    assert tests["test_marker_keeps_the_other_defaults"]["budget"]["peak_memory"] == 50_000
    assert [t["outcome"] for t in tests.values()] == ["failed", "passed", "failed"]


@pytest.mark.parametrize("ini, message", [
    ("flops_max_peak_memory = 5M", "flops_max_peak_memory (ini)='5M' is not valid: expected a non-negative number "
                                   "of bytes, or a string with a byte unit such as '12GB'*"),
    ("flops_max_activations = 3MB", "flops_max_activations (ini)='3MB' is not valid: expected a count of elements*"),
    ("flops_max_params = 1G FLOPs", "flops_max_params (ini)='1G FLOPs' is not valid: names FLOPs, not params: set "
                                    "flops_max_flops instead, or drop the unit"),
    ("flops_max_saved_memory = lots", "flops_max_saved_memory (ini)='lots' is not valid: expected*"),
])
def test_bad_ini_default_budget_is_one_line(pytester, ini, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = run(pytester, "def test_a(flops):\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert len([line for line in result.stderr.lines if line.strip()]) == 1


def test_a_memory_report_column_switches_memory_counting_on(pytester):
    body = """
        def test_plain(flops):
            with torch.no_grad():
                flops(make_model(), torch.randn(4, 64))
    """
    result = run(pytester, body, "--flops-report", "--flops-report-columns=test,flops,peak,activations")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"test_models.py::test_plain +151.55K +\d+(\.\d+)? KiB +1.06K$"])
    result = run(pytester, body, "--flops-report", "--flops-report-columns=test,flops")  # no memory column
    assert "KiB" not in result.stdout.str()


def test_memory_figures_in_user_properties_and_junit(pytester):
    result = run(pytester, """
        @pytest.mark.max_flops(peak_memory="1GB")
        def test_props(flops):
            flops(make_model(), torch.randn(1, 64))
    """, "--junitxml=out.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="peak_memory"' in xml and 'name="activations" value="266"' in xml


# -- the baseline gate -------------------------------------------------------------
GATED = """
import pytest, torch
from torch import nn

INPLACE = {inplace}


@pytest.mark.max_flops(peak_memory="1GB")
def test_mem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(inplace=INPLACE), nn.Linear(256, 10))
    with torch.no_grad():
        model(torch.randn(16, 64))
"""


def _gated(pytester, inplace: bool, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_gated=GATED.format(inplace=inplace))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_baseline_stores_memory_and_fails_a_peak_regression_with_module_deltas(pytester, monkeypatch):
    import json

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    _gated(pytester, True, "--flops-save-baseline=base.json").assert_outcomes(passed=1)
    stored = json.loads((pytester.path / "base.json").read_text())
    (entry,) = stored["tests"].values()
    m = entry["measurements"][0]
    assert m["peak_memory"] > 0 and m["activations"] == 16 * 266
    assert max(m["peak_by_module"].values()) == m["peak_memory"]  # each module's peak, for per-module deltas
    # ReLU no longer in place: the same FLOPs, one more 16x256 float32 buffer alive at the peak
    result = _gated(pytester, False, "--flops-baseline=base.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*flops baseline: Sequential grew against base.json*",
        "*peak memory*->*+15.38 KiB*+16.1%*",
        "*modules whose peak memory changed most (baseline -> now):*",
        "*1*ReLU*+16.00 KiB*",
    ])
    # a per-metric tolerance lets it through
    _gated(pytester, False, "--flops-baseline=base.json",
           "--flops-tolerance=flops=0%,peak_memory=50%").assert_outcomes(passed=1)
    _gated(pytester, False, "--flops-baseline=base.json",
           "--flops-tolerance=flops=50%,peak_memory=1%").assert_outcomes(failed=1)


def test_per_metric_tolerance_parse():
    from pytest_flops.budgets import parse_tolerance

    t = parse_tolerance("flops=2%,peak_memory=5%")
    assert (t.allowance(1000, "flops"), t.allowance(1000, "peak_memory"), t.allowance(1000, "macs")) == (20, 50, 0)
    assert str(t) == "flops=2%,peak_memory=5%"
    assert parse_tolerance("1%,activations=10%").allowance(1000, "params") == 10
    with pytest.raises(ValueError, match="unknown metric 'flop'"):
        parse_tolerance("flop=2%")


def test_bad_per_metric_tolerance_is_a_usage_error(pytester):
    result = _gated(pytester, True, "--flops-tolerance=peak=5%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown metric 'peak'*"])


def test_report_json_and_markdown_carry_the_memory_figures(pytester, monkeypatch):
    import json

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = _gated(pytester, True, "--flops-report", "--flops-json=out.json", "--flops-markdown=out.md")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*peak mem*activations*saved*", "*test_mem*KiB*4.26K*0 B*"])
    data = json.loads((pytester.path / "out.json").read_text())
    (m,) = [m for t in data["tests"] for m in t["measurements"]] if isinstance(data["tests"], list) else \
        [m for t in data["tests"].values() for m in t["measurements"]]
    assert m["activations"] == 16 * 266 and m["peak_memory"] > 0 and "memory_by_module" in m
    markdown = (pytester.path / "out.md").read_text()
    assert "| peak mem | activations | saved |" in markdown and "4.26K" in markdown


def test_cli_count_memory_columns(capsys):
    from pytest_flops.cli import main

    assert main(["count", "pytest_flops.zoo:resnet50", "-i", "1x3x64x64", "--memory", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("module"))
    assert header.split()[-2:] == ["peak", "activations"]
    assert "peak memory" in out and "MiB" in out
    assert main(["count", "pytest_flops.zoo:resnet50", "-i", "1x3x64x64", "--depth", "1"]) == 0
    assert "activations" not in capsys.readouterr().out  # memory is opt-in
