"""The ``pytest-flops`` console script: ``count`` and ``compare``, good and bad arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_flops import count
from pytest_flops.outputs.baseline import dump, merge
from pytest_flops.cli import main, parse_input, InputSpec, UsageError
from pytest_flops.outputs.json_results import build_results

RESNET50_FLOPS = 8_178_368_512

MODELS = '''
import torch
from torch import nn


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.fc = nn.Linear(32, 8)

    def forward(self, tokens, scale):
        return self.fc(self.embed(tokens)) * scale.sum()


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))


instance = nn.Linear(16, 8)
not_a_model = {"a": 1}


def returns_a_string():
    return "model"


def raises():
    raise RuntimeError("no weights here")


class NeedsArguments(nn.Module):
    def __init__(self, width):
        super().__init__()


class DataDependent(nn.Module):
    def forward(self, x):
        return x[x > 0]


class Spectral(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()
'''


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of models in the current directory, importable as ``cli_models`` (as a user's would be)."""
    (tmp_path / "cli_models.py").write_text(MODELS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_models"
    sys.modules.pop("cli_models", None)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- count: good arguments ---------------------------------------------------
def test_count_prints_table_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "count", "pytest_flops.zoo:resnet50", "--input", "1x3x224x224")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "pytest_flops.zoo:resnet50 on 1x3x224x224 (no compute, ops=matmul)"
    assert "ResNet: 8.18 GFLOPs, 4.09 GMACs, 25.56M params, on cpu" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert rows[:2] == ["conv1", "bn1"] and "layer1.0" in rows and "layer1.0.conv1" not in rows  # depth 2


@pytest.mark.parametrize("depth,present,absent", [("0", [], ["conv1"]), ("1", ["layer1"], ["layer1.0"]),
                                                  ("all", ["layer1.0.conv1"], [])])
def test_count_depth(capsys: pytest.CaptureFixture[str], depth: str, present: list[str], absent: list[str]) -> None:
    code, out, _ = run(capsys, "count", "pytest_flops.zoo:resnet50", "-i", "1x3x224x224", "--depth", depth)
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert code == 0 and set(present) <= names and not set(absent) & names


def test_count_json_is_the_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "count", "pytest_flops.zoo:resnet50", "--input", "1x3x224x224", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["name"], data["flops"], data["params"], data["computed"]) == ("ResNet", RESNET50_FLOPS, 25_557_032, False)
    assert data["by_module"]["layer1.0.conv1"] > 0


def test_count_meta_builds_on_meta(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "count", "pytest_flops.zoo:resnet50", "-i", "1x3x224x224", "--meta", "--json")
    data = json.loads(out)
    assert code == 0 and data["devices"] == ["meta"] and data["flops"] == RESNET50_FLOPS


def test_count_factory_that_builds_on_meta(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "count", "pytest_flops.zoo:llama", "--input", "long:1x2048", "--depth", "0")
    assert code == 0, out
    assert "(meta, ops=matmul)" in out.splitlines()[0]
    assert "Llama: 29.26 TFLOPs, 14.63 TMACs, 6.74G params, on meta" in out


def test_count_compute_runs_real_arithmetic(capsys: pytest.CaptureFixture[str], models: str) -> None:
    code, out, _ = run(capsys, "count", f"{models}:mlp", "-i", "8x16", "--compute", "--json")
    data = json.loads(out)
    expected = count(nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4)),
                     torch.randn(8, 16)).flops
    assert code == 0 and data["computed"] is True and data["flops"] == expected == 2 * 8 * (16 * 32 + 32 * 4)


def test_count_ops_all_adds_categories(capsys: pytest.CaptureFixture[str], models: str) -> None:
    _, out, _ = run(capsys, "count", f"{models}:mlp", "-i", "8x16", "--json")
    matmul = json.loads(out)
    code, out, _ = run(capsys, "count", f"{models}:mlp", "-i", "8x16", "--ops", "all", "--json")
    everything = json.loads(out)
    assert code == 0 and everything["ops"] == "all" and everything["flops"] > matmul["flops"]
    assert {"norm", "pointwise"} <= set(everything["by_category"])


def test_count_several_inputs_with_dtypes(capsys: pytest.CaptureFixture[str], models: str) -> None:
    code, out, err = run(capsys, "count", f"{models}:TwoInputs", "--input", "long:2x10", "--input", "1x4")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{models}:TwoInputs on long:2x10, 1x4 (no compute, ops=matmul)"
    assert "TwoInputs: 10.24 KFLOPs" in out  # 2 * 20 tokens * 32 * 8


def test_count_module_level_instance(capsys: pytest.CaptureFixture[str], models: str) -> None:
    code, out, _ = run(capsys, "count", f"{models}:instance", "-i", "4x16", "--json")
    assert code == 0 and json.loads(out)["flops"] == 2 * 4 * 16 * 8


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "fp64"])
def test_count_dtype(capsys: pytest.CaptureFixture[str], models: str, dtype: str) -> None:
    code, out, _ = run(capsys, "count", f"{models}:instance", "-i", "4x16", "--dtype", dtype, "--json")
    assert code == 0 and json.loads(out)["flops"] == 2 * 4 * 16 * 8


def test_count_reports_uncounted_ops_and_strict_fails(capsys: pytest.CaptureFixture[str], models: str) -> None:
    code, out, _ = run(capsys, "count", f"{models}:Spectral", "-i", "4x256")
    assert code == 0 and "uncounted ops (no formula, counted as 0): aten._fft_r2c x1" in out
    code, out, err = run(capsys, "count", f"{models}:Spectral", "-i", "4x256", "--strict")
    assert code == 1 and out == ""
    assert err.startswith("pytest-flops: ops without a FLOP formula ran: aten._fft_r2c x1")


def test_count_data_dependent_model_suggests_compute(capsys: pytest.CaptureFixture[str], models: str) -> None:
    code, _, err = run(capsys, "count", f"{models}:DataDependent", "-i", "4x4")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("pytest-flops: count(compute=False) cannot run DataDependent") and "--compute" in err
    code, out, _ = run(capsys, "count", f"{models}:DataDependent", "-i", "4x4", "--compute")
    assert code == 0 and "DataDependent: 0 FLOPs" in out


# -- count: bad arguments ----------------------------------------------------------
@pytest.mark.parametrize("target,message", [
    ("x.y:z", "pytest-flops: cannot import 'x.y:z': No module named 'x'"),
    ("pytest_flops.zoo:nothing", "pytest-flops: cannot import 'pytest_flops.zoo:nothing': "
                                 "'pytest_flops.zoo' has no attribute 'nothing'"),
    ("pytest_flops.zoo", "pytest-flops: invalid model 'pytest_flops.zoo': expected MODULE:FACTORY, "
                         "such as pytest_flops.zoo:resnet50"),
    (":resnet50", "pytest-flops: invalid model ':resnet50': expected MODULE:FACTORY"),
    ("pytest_flops.zoo:LLAMA_7B", "pytest-flops: 'pytest_flops.zoo:LLAMA_7B' is a dict: expected a torch.nn.Module"),
    ("torch.nn:Linear", "pytest-flops: 'torch.nn:Linear' cannot be called without arguments"),
])
def test_count_bad_target(capsys: pytest.CaptureFixture[str], target: str, message: str) -> None:
    code, out, err = run(capsys, "count", target, "--input", "1x3x224x224")
    assert (code, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize("name,code,message", [
    ("returns_a_string", 2, "'cli_models:returns_a_string' returned a str: expected a torch.nn.Module"),
    ("raises", 1, "calling 'cli_models:raises' failed: RuntimeError: no weights here"),
    ("NeedsArguments", 2, "'cli_models:NeedsArguments' cannot be called without arguments"),
    ("not_a_model", 2, "'cli_models:not_a_model' is a dict"),
])
def test_count_bad_factory(capsys: pytest.CaptureFixture[str], models: str, name: str, code: int,
                           message: str) -> None:
    result, _, err = run(capsys, "count", f"{models}:{name}", "-i", "1x16")
    assert result == code and err.startswith("pytest-flops: " + message)


def test_count_module_that_fails_to_import(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_models.py").write_text("raise ValueError('bad config')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(capsys, "count", "broken_models:Net", "-i", "1x3")
    assert code == 2 and err == "pytest-flops: cannot import 'broken_models:Net': ValueError: bad config\n"


def test_count_model_that_fails_on_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "count", "pytest_flops.zoo:resnet50", "--input", "1x3")
    assert code == 1 and out == ""
    assert err.startswith("pytest-flops: running 'pytest_flops.zoo:resnet50' on 1x3 failed: RuntimeError: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("spec", ["1x3xQ", "", "x", "1x", "float:", "complex:1x3", "0x3", "1x-3", "1,3", "long:long:1"])
def test_count_bad_input_spec(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    code, out, err = run(capsys, "count", "pytest_flops.zoo:resnet50", "--input", spec)
    assert (code, out) == (2, "")
    assert err == (f"pytest-flops: invalid --input {spec!r}: expected sizes like 1x3x224x224, "
                   "optionally dtype: long:1x128\n")


def test_count_needs_an_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "count", "pytest_flops.zoo:resnet50")
    assert code == 2 and err == "pytest-flops: count needs at least one --input, e.g. --input 1x3x224x224\n"


@pytest.mark.parametrize("args,message", [
    ([], "pytest-flops: the following arguments are required: COMMAND"),
    (["frobnicate"], "pytest-flops: argument COMMAND: invalid choice: 'frobnicate'"),
    (["count"], "pytest-flops count: the following arguments are required: MODULE:FACTORY"),
    (["count", "a:b", "-i", "1", "--depth", "x"], "pytest-flops count: argument --depth: expected a number >= 0"),
    (["count", "a:b", "-i", "1", "--dtype", "long"], "pytest-flops count: argument --dtype: expected one of"),
    (["count", "a:b", "-i", "1", "--ops", "some"], "pytest-flops count: argument --ops: invalid choice: 'some'"),
    (["compare", "a.json"], "pytest-flops compare: the following arguments are required: new"),
])
def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_flops import __version__

    code, out, _ = run(capsys, "--help")
    assert code == 0 and "count" in out and "compare" in out
    code, out, _ = run(capsys, "count", "--help")
    assert code == 0 and "--input" in out and "--no-compute" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"pytest-flops {__version__}\n"


@pytest.mark.parametrize("text,spec", [("1x3x224x224", InputSpec((1, 3, 224, 224))),
                                       ("long:1x128", InputSpec((1, 128), "int64")),
                                       ("BF16:2x4", InputSpec((2, 4), "bfloat16")), ("7", InputSpec((7,)))])
def test_parse_input(text: str, spec: InputSpec) -> None:
    assert parse_input(text) == spec
    with pytest.raises(UsageError):
        parse_input(text + "xq")


# -- compare -------------------------------------------------------------------------
def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _results(path: Path, tests: dict[str, list[int]]) -> str:
    """A --flops-json file: one record per test, one measurement per hidden width."""
    x = torch.randn(4, 64)
    records = [{"nodeid": nodeid, "outcome": "passed", "measurements": [count(_mlp(h), x).to_dict() for h in widths]}
               for nodeid, widths in tests.items()]
    path.write_text(json.dumps(build_results(records, {"torch": torch.__version__}, {})), encoding="utf-8")
    return str(path)


@pytest.fixture
def reports(tmp_path: Path) -> dict[str, str]:
    old = _results(tmp_path / "old.json", {"t.py::test_a": [128], "t.py::test_b": [256], "t.py::test_c": [64, 32]})
    grown = _results(tmp_path / "grown.json", {"t.py::test_a": [128], "t.py::test_b": [300], "t.py::test_c": [64, 30]})
    added = _results(tmp_path / "added.json", {"t.py::test_a": [128], "t.py::test_b": [256], "t.py::test_c": [64, 32],
                                               "t.py::test_new": [8]})
    return {"old": old, "grown": grown, "added": added}


def test_compare_equal_files(capsys: pytest.CaptureFixture[str], reports: dict[str, str]) -> None:
    code, out, err = run(capsys, "compare", reports["old"], reports["old"])
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "3 tests: 3 unchanged (tolerance 0)"


def test_compare_growth_fails_with_tests_and_modules(capsys: pytest.CaptureFixture[str],
                                                     reports: dict[str, str]) -> None:
    code, out, _ = run(capsys, "compare", reports["old"], reports["grown"])
    lines = out.splitlines()
    assert code == 1
    row = next(line for line in lines if line.startswith("t.py::test_b "))
    assert row.split() == ["t.py::test_b", "151.55K", "177.60K", "+17.2%", "regressed", "(fails)"]
    assert next(line for line in lines if line.startswith("t.py::test_c [2]")).split()[-2:] == ["-6.2%", "improved"]
    assert "t.py::test_b: Sequential" in lines
    assert ["FLOPs", "151.55", "KFLOPs", "->", "177.60", "KFLOPs", "+26.05", "KFLOPs", "+17.2%"] in \
        [line.split() for line in lines if line.startswith("  FLOPs")]
    assert "  modules whose FLOPs changed most (old -> new):" in lines
    assert ["0", "Linear", "131.07", "KFLOPs", "->", "153.60", "KFLOPs", "+22.53", "KFLOPs", "+17.2%"] in \
        [line.split() for line in lines if line.startswith("    0 ")]
    assert lines[-2:] == ["3 tests: 1 regressed, 1 improved, 1 unchanged (tolerance 0)",
                          "FAILED: 1 test: t.py::test_b"]


@pytest.mark.parametrize("tolerance,code", [("20%", 0), ("17%", 1), ("30K", 0), ("20K", 1), ("0", 1)])
def test_compare_tolerance(capsys: pytest.CaptureFixture[str], reports: dict[str, str], tolerance: str,
                           code: int) -> None:
    assert run(capsys, "compare", reports["old"], reports["grown"], "--tolerance", tolerance)[0] == code


def test_compare_added_test_fails_only_when_strict(capsys: pytest.CaptureFixture[str],
                                                   reports: dict[str, str]) -> None:
    code, out, _ = run(capsys, "compare", reports["old"], reports["added"])
    assert code == 0 and "1 new" in out.splitlines()[-1]
    code, out, _ = run(capsys, "compare", reports["old"], reports["added"], "--strict")
    assert code == 1 and out.splitlines()[-1] == "FAILED: 1 test: t.py::test_new"
    code, out, _ = run(capsys, "compare", reports["added"], reports["old"], "--strict")
    assert code == 1 and "removed" in out and out.splitlines()[-1] == "FAILED: 1 test: t.py::test_new"


def test_compare_reads_baseline_files(capsys: pytest.CaptureFixture[str], reports: dict[str, str],
                                      tmp_path: Path) -> None:
    results = json.loads(Path(reports["old"]).read_text(encoding="utf-8"))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(dump(merge(None, results["tests"], torch=torch.__version__)), encoding="utf-8")
    assert run(capsys, "compare", str(baseline), reports["old"])[0] == 0
    code, out, _ = run(capsys, "compare", str(baseline), reports["grown"])
    assert code == 1 and "t.py::test_b" in out.splitlines()[-1]


def test_compare_files_written_by_the_plugin(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    def suite(hidden: int, name: str) -> Path:
        pytester.makepyfile(test_model=f"""
            import torch
            from torch import nn

            def test_model(flops):
                flops(nn.Sequential(nn.Linear(64, {hidden}), nn.ReLU(), nn.Linear({hidden}, 10)), torch.randn(2, 64))
        """)
        result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", f"--flops-json={name}")
        result.assert_outcomes(passed=1)
        return pytester.path / name

    old, new = suite(128, "old.json"), suite(160, "new.json")
    code, out, _ = run(capsys, "compare", str(old), str(new), "--tolerance", "10%")
    assert code == 1 and "test_model.py::test_model" in out and "+25.0%" in out
    assert run(capsys, "compare", str(old), str(new), "--tolerance", "25%")[0] == 0
    doc = json.loads(new.read_text())
    doc.update(complete=False, incomplete={"why": "the run was stopped by SIGTERM"})
    new.write_text(json.dumps(doc))
    out = run(capsys, "compare", str(old), str(new), "--tolerance", "25%")[1]
    assert (f"note: {new} is from a run that did not finish (the run was stopped by SIGTERM): tests it lacks show "
            "as new or removed") in out


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("not json", "not valid JSON"),
    ('{"tests": []}', "not a --flops-json results file nor a --flops-save-baseline file"),
    ('{"format": "pytest-flops-results", "tests": [{"outcome": "passed"}]}', "corrupt --flops-json file"),
    ('{"format": "pytest-flops-results", "complete": "no", "tests": []}', '"complete" is not true or false'),
    ('{"format": "pytest-flops-results", "complete": false, "incomplete": [1], "tests": []}',
     '"incomplete" is not an object with a "why" string'),
    ('{"format": "pytest-flops-baseline", "schema_version": 1, "tests": []}', "is corrupt"),
])
def test_compare_bad_files(capsys: pytest.CaptureFixture[str], reports: dict[str, str], tmp_path: Path,
                           content: str | None, message: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "compare", reports["old"], str(bad))
    assert (code, out) == (2, "")
    assert err.startswith("pytest-flops: ") and message in err and err.count("\n") == 1


def test_compare_bad_tolerance(capsys: pytest.CaptureFixture[str], reports: dict[str, str]) -> None:
    code, _, err = run(capsys, "compare", reports["old"], reports["old"], "--tolerance", "1x")
    assert code == 2 and err.startswith("pytest-flops: --tolerance: invalid tolerance '1x'")


# -- the installed script ------------------------------------------------------------
def _script() -> str:
    path = Path(sys.executable).parent / ("pytest-flops.exe" if os.name == "nt" else "pytest-flops")
    if not path.exists():
        pytest.skip("the pytest-flops script is not installed next to this Python")
    return str(path)


def test_installed_entry_point(tmp_path: Path) -> None:
    """The console script, on a model of the current folder (a small one: the counts are tested in process)."""
    (tmp_path / "tiny.py").write_text("import torch\n\ndef mlp():\n    return torch.nn.Sequential(\n"
                                      "        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))\n")
    proc = subprocess.run([_script(), "count", "tiny:mlp", "--input", "2x8", "--compute"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # 2 * batch 2 * (8*16 + 16*4) FLOPs; (8*16 + 16) + (16*4 + 4) parameters
    assert "Sequential: 768 FLOPs, 384 MACs, 212 params, on cpu" in proc.stdout
    assert re.search(r"^  2 +Linear +256 ", proc.stdout, re.MULTILINE), proc.stdout
    proc = subprocess.run([_script(), "count", "x.y:z", "--input", "1x3"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, "pytest-flops: cannot import 'x.y:z': No module named 'x'\n")


def test_import_is_cheap() -> None:
    code = textwrap.dedent("""
        import sys
        import pytest_flops.cli
        parser = pytest_flops.cli.build_parser()
        parser.parse_args(["count", "a:b", "--input", "1x3"])
        assert "torch" not in sys.modules, "importing pytest_flops.cli imported torch"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
