"""The terminal report's layout: fits the terminal, picks and sorts columns (outputs/terminal.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pytest_flops.outputs import records as rec
from pytest_flops.outputs.terminal import columns, parse_columns, parse_sort, render_table

LONG = "tests/models/vision/test_backbones.py::test_resnet50_forward_fits_the_budget[batch-32-channels_last]"


def record(nodeid: str, flops: int, outcome: str = "passed", **m: Any) -> rec.TestRecord:
    measurement = {"name": "M", "flops": flops, "macs": flops // 2, "params": 1000, "devices": ["cpu"], **m}
    return rec.with_outcome(rec.make_record(nodeid, [measurement]), outcome)  # type: ignore[list-item]


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_one_line_per_test_in_80_columns_with_long_ids_cut_from_the_left() -> None:
    long = "tests/models/vision/test_backbones.py::test_resnet50[batch-32]"
    records = [record(long, 8_180_000_000), record("tests/test_small.py::test_mlp", 303_100)]
    lines = render_table(records, width=80)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert len(lines) == 2 + 2 + 1 + 1 + 1  # header, rule, a line per test, rule, total, count
    assert re.match(r"^\.\.\.[a-z_/]+\.py::test_resnet50\[batch-32\] +8\.18G ", lines[2])
    assert lines[3].startswith("tests/test_small.py::test_mlp ") and "303.10K" in lines[3]


def test_a_test_name_too_long_to_keep_whole_gets_a_line_of_its_own() -> None:
    lines = render_table([record(LONG, 8_180_000_000)], width=80)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[2] == "..." + LONG[-77:] and cells(lines[3])[0] == "8.18G"


def test_ids_get_their_own_line_when_the_numbers_leave_too_little_room() -> None:
    budget = {"flops": 4_200_000_000, "macs": 2_100_000_000, "params": 26_000_000}
    records = [{**record(LONG, 8_180_000_000), "budget": budget,
                "verdicts": [{"usage": {"flops": 0.983}, "excesses": []}]}]
    lines = render_table(records, width=80)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[2] == "..." + LONG[-77:]  # the id alone, as much of it as fits
    assert "8.18G" in lines[3] and "98.3%" in lines[3]
    assert render_table(records, width=300)[2].startswith(LONG + " ")  # wide enough: one line, the whole id


def test_columns_are_picked_and_ordered_by_name() -> None:
    records = [record("t.py::test_a", 100), record("t.py::test_b", 300, outcome="failed")]
    lines = render_table(records, columns=parse_columns("outcome, FLOPs ,params"))
    assert cells(lines[0]) == ["test", "outcome", "FLOPs", "params"]  # the test id always leads
    assert cells(lines[3]) == ["t.py::test_b", "failed", "300", "1.00K"]
    assert cells(lines[-2]) == ["total", "400"]
    assert parse_columns("flop/s,use,vs_baseline") == ("rate", "used", "baseline")
    extra = [("vs baseline", lambda row: "+1.0%" if row["nodeid"].endswith("b") else "=")]
    lines = render_table(records, columns=("test", "baseline"), extra_columns=extra)
    assert cells(lines[0]) == ["test", "vs baseline"] and cells(lines[3]) == ["t.py::test_b", "+1.0%"]


def test_rows_sorted_by_a_column_numbers_largest_first() -> None:
    records = [record("t.py::test_b", 100), record("t.py::test_c", 900), record("t.py::test_a", 500)]
    assert [cells(line)[0] for line in render_table(records, sort=parse_sort("FLOPs"))[2:5]] == [
        "t.py::test_c", "t.py::test_a", "t.py::test_b"]
    assert [cells(line)[0] for line in render_table(records, sort="test")[2:5]] == [
        "t.py::test_a", "t.py::test_b", "t.py::test_c"]
    assert [cells(line)[0] for line in render_table(records)[2:5]] == [  # unsorted: as the tests finished
        "t.py::test_b", "t.py::test_c", "t.py::test_a"]


def test_memory_figures_are_columns_when_measured_and_can_be_picked_and_sorted() -> None:
    records = [record("t.py::test_a", 100, peak_memory=3 * 2**20, activations=1200, saved_memory=0),
               record("t.py::test_b", 100, peak_memory=5 * 2**20, activations=10, saved_memory=0)]
    lines = render_table(records, width=200, extra_columns=columns(records))
    assert cells(lines[0])[-4:] == ["peak mem", "activations", "saved", "outcome"]
    assert cells(lines[2])[-4:-1] == ["3.00 MiB", "1.20K", "0 B"]
    lines = render_table(records, width=200, columns=parse_columns("peak_memory,activations"), sort="peak_memory",
                         extra_columns=columns(records))
    assert cells(lines[0]) == ["test", "peak mem", "activations"]
    assert [cells(line)[0] for line in lines[2:4]] == ["t.py::test_b", "t.py::test_a"]  # by bytes, not by text
    assert "peak mem" not in render_table([record("t.py::test_a", 100)], width=200)[0]


@pytest.mark.parametrize("text", ["flops,bogus", "", " , "])
def test_bad_column_names_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="expected a comma-separated list of test, model, flops"):
        parse_columns(text)


def test_a_bad_sort_column_says_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="expected one of test, model, flops, .*baseline"):
        parse_sort("bogus")


PLUGIN_TESTS = """
import pytest
import torch


@pytest.mark.parametrize("width", [8, 64, 16])
def test_linear(flops, width):
    flops(torch.nn.Linear(width, width), torch.randn(2, width))
"""


def test_report_columns_and_sort_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lin=PLUGIN_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "--flops-report-columns=flops,outcome",
                                "--flops-report-sort=flops")
    result.assert_outcomes(passed=3)
    out = result.stdout.str().split("flops report")[1].splitlines()
    header = next(line for line in out if line.startswith("test "))
    assert cells(header) == ["test", "FLOPs", "outcome"]
    order = [cells(line)[0] for line in out if line.startswith("test_lin.py::")]
    assert order == ["test_lin.py::test_linear[64]", "test_lin.py::test_linear[16]", "test_lin.py::test_linear[8]"]
    pytester.makeini("[pytest]\nflops_report = short\nflops_report_sort = test\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    order = [cells(line)[0] for line in result.stdout.lines if line.startswith("test_lin.py::")]
    assert order == ["test_lin.py::test_linear[16]", "test_lin.py::test_linear[64]", "test_lin.py::test_linear[8]"]
