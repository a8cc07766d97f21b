"""The HTML report's data and page (outputs/html.py); the browser test is tests/test_html_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_flops import count, zoo
from pytest_flops.outputs.baseline import compare, entry_from_record
from pytest_flops.outputs.html import module_tree, render_html, report_data, write_html


def mlp_dict() -> dict[str, Any]:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 2, bias=False)))
    return count(model, torch.randn(3, 4)).to_dict()


def record(nodeid: str, *measurements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "outcome": "passed", "worker": None, "budget": None, "verdicts": None,
            "measurements": list(measurements), **extra}


def embedded(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="flops-data" type="application/json">(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


def test_the_module_tree_nests_children_under_their_parent_with_flops_and_params() -> None:
    m = mlp_dict()
    types: dict[str, int] = {}
    tree = module_tree(m, ["flops", "params"], types)
    names = list(types)
    # [name below its parent, type index, [FLOPs, params], children...]; ReLU spent nothing and holds nothing: left out
    assert tree == ["Sequential", names.index("Sequential"), [2 * 3 * (4 * 8 + 8 * 2 + 2 * 2), 62],
                    ["0", names.index("Linear"), [2 * 3 * 32, 40]],
                    ["2", names.index("Sequential"), [2 * 3 * 20, 22],
                     ["0", names.index("Linear"), [2 * 3 * 16, 18]], ["1", names.index("Linear"), [2 * 3 * 4, 4]]]]
    assert tree[2][0] == m["flops"] and tree[2][1] == m["params"]


def test_a_module_whose_container_never_ran_hangs_under_the_nearest_ancestor_that_did() -> None:
    m = count(zoo.bert_base(num_layers=2), torch.randn(1, 4, 768), compute=False).to_dict()
    tree = module_tree(m, ["flops"], {})
    top = {child[0] for child in tree[3:]}
    assert "layers.0" in top and "layers" not in top  # a ModuleList is never called
    layer = next(child for child in tree[3:] if child[0] == "layers.0")
    assert {child[0] for child in layer[3:]} >= {"self_attn", "linear1", "linear2"}  # named below layers.0
    assert layer[2][0] == m["by_module"]["layers.0"]


def test_one_tree_per_distinct_model_and_one_row_per_measurement() -> None:
    m = mlp_dict()
    data = report_data([record("t.py::test_a", m), record("t.py::test_b", m, m)])
    assert [r["test"] for r in data["rows"]] == ["t.py::test_a", "t.py::test_b [1]", "t.py::test_b [2]"]
    assert len(data["trees"]) == 1 and {r["tree"] for r in data["rows"]} == {0}
    assert [x["key"] for x in data["metrics"]] == ["flops", "params"] and data["rows"][0]["metrics"] == ["flops", "params"]


def test_budget_use_and_outcome_reach_the_rows() -> None:
    m = mlp_dict()
    rec = record("t.py::test_a", m, budget={"flops": 1000, "macs": None, "params": 50},
                 verdicts=[{"usage": {"flops": 0.6, "params": 1.24}, "excesses": [{"metric": "params"}]}],
                 outcome="failed", worker="gw1")
    (row,) = report_data([rec])["rows"]
    assert row["budget"] == "1K, 50 params" and row["usage"] == 1.24 and row["over"]
    assert row["outcome"] == "failed" and row["worker"] == "gw1"
    zero = record("t.py::z", m, budget={"flops": 0}, verdicts=[{"usage": {"flops": float("inf")}, "excesses": [{}]}])
    assert report_data([zero])["rows"][0]["usage"] == "inf"  # JSON has no infinity


def test_memory_figures_become_columns_and_chart_metrics_when_present() -> None:
    m = mlp_dict()
    m["peak_memory"] = 4096
    m["activations"] = 90
    m["memory_by_module"] = {"Sequential": {"peak_forward": 4096, "peak_backward": 3000, "activations": 90},
                             "0": {"peak_forward": 2048, "activations": 72}, "2": {"peak_forward": 1024, "activations": 18}}
    data = report_data([record("t.py::test_a", m)])
    assert [x["key"] for x in data["metrics"]] == ["flops", "params", "peak_memory", "activations"]
    (row,) = data["rows"]
    assert row["v"]["peak_memory"] == 4096 and row["metrics"] == ["flops", "params", "peak_memory", "activations"]
    root = data["trees"][row["tree"]]
    assert root[2] == [m["flops"], m["params"], 4096, 90]
    assert next(c for c in root[3:] if c[0] == "0")[2][2:] == [2048, 72]


def test_a_baseline_gives_each_test_its_delta_and_per_module_old_values() -> None:
    old = mlp_dict()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 2), nn.Linear(2, 2, bias=False)))
    new = count(model, torch.randn(3, 4)).to_dict()
    entry = entry_from_record(record("t.py::test_a", old), "2.13")
    comparison = compare("t.py::test_a", [new], entry)
    data = report_data([record("t.py::test_a", new), record("t.py::test_b", old)],
                       comparisons={"t.py::test_a": comparison}, baseline={"t.py::test_a": entry},
                       baseline_summary="1 regressed")
    row, other = data["rows"]
    assert row["delta"]["status"] == "regressed" and row["delta"]["text"] == comparison.measurements[0].delta_text()
    assert row["delta"]["old"]["flops"] == old["flops"]
    assert row["delta"]["nodes"][:2] == [old["flops"], old["by_module"]["0"]]  # pre-order: root, then "0"
    assert {c["module"] for c in row["delta"]["modules"]} >= {"0"}
    assert "delta" not in other and data["baseline"] == "1 regressed"


def test_the_page_is_one_file_with_nothing_to_fetch_and_the_data_cannot_close_its_script(tmp_path: Path) -> None:
    m = mlp_dict()
    nasty = "t.py::test_x[</script><script>alert(1)</script><!--]"
    path = write_html(tmp_path / "r.html", [record(nasty, m)], environment={"pytest_flops": "0.1.0"},
                      title="run <1> & co")
    page = path.read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the data and the report's own script; the nodeid did not add any
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<link" not in page
    assert "@import" not in page and "url(" not in page
    assert "<title>run &lt;1&gt; &amp; co</title>" in page
    data = embedded(page)
    assert data["rows"][0]["nodeid"] == nasty and data == {**report_data([record(nasty, m)]), "created": data["created"],
                                                            "environment": {"pytest_flops": "0.1.0"},
                                                            "title": "run <1> & co"}


def test_two_hundred_resnet50_tests_stay_under_one_megabyte() -> None:
    m = count(zoo.resnet50(), torch.randn(1, 3, 224, 224), compute=False).to_dict()

    def variant(k: int) -> dict[str, Any]:  # every test a different tree: nothing shared
        return {**m, "flops": m["flops"] * k, "by_module": {n: v * k for n, v in m["by_module"].items()}}

    page = render_html([record(f"tests/test_models.py::test_resnet50[{i}]", variant(i + 1)) for i in range(200)])
    assert len(embedded(page)["trees"]) == 200
    assert len(page.encode("utf-8")) < 1_000_000


def test_pytest_flops_count_html_writes_the_report_of_one_model(tmp_path: Path, capsys: Any) -> None:
    from pytest_flops.cli import main

    out = tmp_path / "resnet.html"
    code = main(["count", "pytest_flops.zoo:resnet50", "--input", "1x3x224x224", "--json", "--html", str(out)])
    printed = capsys.readouterr()
    assert code == 0 and json.loads(printed.out)["name"] == "ResNet"  # stdout stays the JSON document
    assert printed.err.strip() == f"HTML report written to {out}"
    data = embedded(out.read_text(encoding="utf-8"))
    (row,) = data["rows"]
    assert row["test"] == "pytest_flops.zoo:resnet50 [1x3x224x224]" and row["v"]["flops"] == 8_178_368_512
    assert data["trees"][0][2] == [8_178_368_512, 25_557_032] and data["title"] == "pytest-flops count pytest_flops.zoo:resnet50"
    code = main(["count", "torch.nn:Identity", "--input", "2x3", "--html", str(tmp_path)])  # a folder: refused
    assert code == 2 and capsys.readouterr().err.startswith(f"pytest-flops: cannot write --html '{tmp_path}': ")


PLUGIN_TESTS = """
import pytest
import torch

WIDTH = {width}


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(16, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 4))


@pytest.mark.max_flops("1M")
def test_mlp(flops):
    flops(mlp(), torch.randn(2, 16))


def test_fixed(flops):
    flops(torch.nn.Linear(8, 8), torch.randn(1, 8))
"""


def test_flops_html_writes_the_report_with_baseline_deltas(pytester: Any) -> None:
    pytester.makepyfile(test_models=PLUGIN_TESTS.format(width=32))
    pytester.runpytest("-p", "no:cacheprovider", "--flops-save-baseline=b.json").assert_outcomes(passed=2)
    pytester.makepyfile(test_models=PLUGIN_TESTS.format(width=48))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-baseline=b.json", "--flops-tolerance=100%",
                                "--flops-html=out/report.html")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["flops html report written to out*report.html"])
    data = embedded((pytester.path / "out" / "report.html").read_text(encoding="utf-8"))
    rows = {r["nodeid"]: r for r in data["rows"]}
    assert set(rows) == {"test_models.py::test_mlp", "test_models.py::test_fixed"}
    grown, fixed = rows["test_models.py::test_mlp"], rows["test_models.py::test_fixed"]
    assert grown["v"]["flops"] == 2 * 2 * (16 * 48 + 48 * 4) and grown["budget"] == "1M"
    assert abs(grown["usage"] - grown["v"]["flops"] / 1e6) < 1e-9 and grown["outcome"] == "passed"
    assert grown["delta"]["status"] == "within" and grown["delta"]["text"] == "+50.0%"
    assert grown["delta"]["old"]["flops"] == 2 * 2 * (16 * 32 + 32 * 4)
    assert grown["delta"]["nodes"][1] == 2 * 2 * 16 * 32  # the first Linear, as the baseline had it
    assert fixed["delta"]["status"] == "equal" and "nodes" not in fixed["delta"]
    assert "1 within" in data["baseline"]  # the run's baseline headline
    assert data["environment"]["pytest_flops"] and data["settings"]["baseline"] == "b.json"


def test_the_html_writer_is_imported_only_when_asked_for(pytester: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No module of the plugin or the other writers imports it (a fresh interpreter: here, a module imported by
    an earlier test would hide that); a run writing the report and the JSON does not either, and one writing
    the HTML does (in process, with the writer taken out of sys.modules first)."""
    import pytest_flops.outputs as outputs

    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import pytest_flops.outputs, pytest_flops.plugin
        for package in (pytest_flops.plugin, pytest_flops.outputs):
            for module in pkgutil.iter_modules(package.__path__):
                if module.name != "html":
                    importlib.import_module(f"{package.__name__}.{module.name}")
        print("pytest_flops.outputs.html" in sys.modules)
    """)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    monkeypatch.delitem(sys.modules, "pytest_flops.outputs.html", raising=False)
    monkeypatch.delattr(outputs, "html", raising=False)
    pytester.makeconftest("import sys\n\ndef pytest_unconfigure():\n"
                          "    print('HTML loaded:', 'pytest_flops.outputs.html' in sys.modules)\n")
    pytester.makepyfile(test_models=PLUGIN_TESTS.format(width=8))
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--flops-report", "--flops-json=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["HTML loaded: False"])
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--flops-html=r.html")  # the probe sees it
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["HTML loaded: True"])
