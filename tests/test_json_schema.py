"""The shipped JSON Schemas (docs/json-schema.md) describe what pytest-flops really writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_flops.outputs.json_results import json_schema

jsonschema = pytest.importorskip("jsonschema")

TESTS = """
    import pytest
    import torch

    @pytest.mark.max_flops("1M")
    def test_budget(flops):
        flops(torch.nn.Linear(64, 32), torch.randn(8, 64))

    def test_two(flops):
        model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        x = torch.randn(4, 16, requires_grad=True)
        with flops.counting(model):
            model(x).sum().backward()
        flops(model, torch.randn(2, 16), timed=True, memory=True)

    @pytest.mark.max_flops(flops=10, params="1K")
    def test_over_budget(flops):
        flops(torch.nn.Linear(64, 32), torch.randn(8, 64))
"""


def _validate(path: Path, kind: str) -> dict:
    document = json.loads(path.read_text(encoding="utf-8"))
    schema = json_schema(kind)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.validate(document, schema)
    return document


def test_results_and_baseline_files_match_their_schemas(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_models=TESTS)
    first = pytester.runpytest("-p", "no:cacheprovider", "--flops-json=first.json",
                               "--flops-save-baseline=baseline.json")
    first.assert_outcomes(passed=2, failed=1)
    results = _validate(pytester.path / "first.json", "results")
    baseline = _validate(pytester.path / "baseline.json", "baseline")
    assert len(baseline["tests"]) == 3 and results["summary"]["failed"] == 1
    two = next(t for t in results["tests"] if t["nodeid"].endswith("test_two"))
    assert two["measurements"][1]["peak_memory"] > 0 and "flops_per_s" in two["measurements"][1]["extra"]
    assert "peak_memory" in baseline["tests"]["test_models.py::test_two"]["measurements"][1]
    # compared with the baseline: every test carries its comparison, the summary the baseline's
    second = pytester.runpytest("-p", "no:cacheprovider", "--flops-json=second.json",
                                "--flops-baseline=baseline.json", "--flops-tolerance=1%")
    second.assert_outcomes(passed=2, failed=1)
    compared = _validate(pytester.path / "second.json", "results")
    assert all(t["baseline"]["status"] == "equal" for t in compared["tests"])
    assert compared["summary"]["baseline"]["counts"]["equal"] == 3


def test_an_interrupted_run_matches_the_schema(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_models=TESTS.replace("def test_two(flops):", "def test_two(flops):\n        raise KeyboardInterrupt"))
    pytester.runpytest("-p", "no:cacheprovider", "--flops-json=r.json", no_reraise_ctrlc=True)
    results = _validate(pytester.path / "r.json", "results")
    assert results["complete"] is False and results["incomplete"]["reasons"] == ["the run was interrupted (Ctrl-C)"]


def test_schemas_reject_what_readers_refuse() -> None:
    baseline = {"format": "pytest-flops-baseline", "schema_version": 1, "tests": {
        "t::a": {"measurements": [{"flops": -1, "macs": 0, "params": 0}]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(baseline, json_schema("baseline"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": "pytest-flops-baseline", "schema_version": 1, "tests": {}},
                            json_schema("results"))


def test_schemas_are_package_data() -> None:
    from importlib.resources import files

    folder = files("pytest_flops.outputs").joinpath("schemas")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) == [
        "baseline.schema.json", "results.schema.json"]
