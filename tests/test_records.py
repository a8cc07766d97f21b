"""outputs/records.py (the typed record and row every writer reads) and plugin/artifacts.py (writers on demand)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pytest_flops.outputs import records as rec
from pytest_flops.plugin.artifacts import writers_for
from pytest_flops.plugin.settings import get_settings


def _m(name: str, flops: int) -> dict:
    return {"name": name, "flops": flops, "macs": flops // 2, "params": 3, "devices": ["cpu"]}


def test_rows_label_several_measurements_and_count_tests_by_nodeid() -> None:
    one = rec.make_record("t.py::a", [_m("A", 10)])
    two = rec.make_record("t.py::b [x]", [_m("B", 20), _m("C", 30)], budget={"flops": 25, "macs": None,
                          "params": None, "ops": None}, verdicts=[
        {"ok": True, "usage": {"flops": 0.8}, "excesses": []}, {"ok": False, "usage": {"flops": 1.2}, "excesses": []}])
    table = rec.rows([one, two])
    assert [r["test"] for r in table] == ["t.py::a", "t.py::b [x] [1]", "t.py::b [x] [2]"]
    assert [(r["index"], r["usage"]) for r in table] == [(0, None), (0, 0.8), (1, 1.2)]
    # a nodeid that itself contains " [" (a parametrized id) is still one test
    assert rec.count_tests(table) == 2
    assert rec.totals([one, two])["flops"] == 60


def test_outcome_and_rank_are_added_to_copies() -> None:
    record = rec.make_record("t::a", [_m("A", 1)], worker="gw0")
    done = rec.with_outcome(record, "passed")
    ranked = rec.with_rank(done, 1)
    assert "outcome" not in record and "rank" not in done
    assert (ranked["outcome"], ranked["rank"], ranked["worker"]) == ("passed", 1, "gw0")
    assert "rank" not in rec.make_record("t::a", [], rank=None) and rec.make_record("t::a", [], rank=0)["rank"] == 0


@pytest.mark.parametrize("args, writers", [
    ([], []),
    (["--flops-json=r.json"], ["_Json"]),
    (["--flops-save-baseline=b.json", "--flops-flamegraph=fg", "--flops-markdown=r.md"],
     ["_Baseline", "_Markdown", "_FlameGraphs"]),
])
def test_only_the_writers_asked_for(configure: Callable[..., Any], args: list[str], writers: list[str]) -> None:
    config = configure(*args)
    assert [type(w).__name__ for w in writers_for(get_settings(config))] == writers
    assert config.pluginmanager.has_plugin("flops-artifacts") == bool(writers)
    assert config.pluginmanager.has_plugin("flops-gate") is False  # no --flops-baseline: no gate
    assert config.pluginmanager.has_plugin("flops-collected") == any("baseline" in a for a in args)


def test_step_summary_only_with_something_to_report(pytester: pytest.Pytester, configure: Callable[..., Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "summary.md"))
    assert writers_for(get_settings(configure())) == []
    assert [type(w).__name__ for w in writers_for(get_settings(configure("--flops-report")))] == [
        "_Markdown"]
