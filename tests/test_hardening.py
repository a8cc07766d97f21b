"""Issue 12: bad input gives one line, nothing is lost, nothing untrusted is believed.

Each test names the case of the issue it covers (docs/failure-modes.md lists what the user sees).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import hypothesis  # noqa: F401  (see tests/conftest.py)
from pytest_flops.outputs.baseline import BaselineError, file_lock, load_baseline, save
from pytest_flops.outputs.io import write_text_atomic

MODEL = """
import pytest
import torch


@pytest.mark.max_flops("1G")
def test_a():
    torch.nn.Linear(4, 4)(torch.randn(1, 4))
"""


def record(nodeid: str, flops: int = 32) -> dict:
    return {"nodeid": nodeid, "measurements": [{"name": "Linear", "flops": flops, "macs": flops // 2, "params": 20,
                                                "forward_flops": flops, "backward_flops": 0,
                                                "by_module": {"Linear": flops}}]}


def baseline_doc(**measurement: object) -> dict:
    m = {"name": "Linear", "flops": 32, "macs": 16, "params": 20, "forward_flops": 32, "backward_flops": 0,
         "by_module": {"Linear": 32}}
    m.update(measurement)
    return {"format": "pytest-flops-baseline", "schema_version": 1, "torch": None,
            "tests": {"test_model.py::test_a": {"torch": None, "measurements": [m]}}}


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


# -- 7: baseline values checked at load ---------------------------------------------------------------
@pytest.mark.parametrize("field, text, shown", [
    ("forward_flops", "NaN", "NaN"),
    ("backward_flops", "Infinity", "Infinity"),
    ("flops", '"32"', '"32"'),
    ("macs", "1e400", "1e400"),
    ("params", str(10**400), "...(401 characters)"),
    ("params", "-1", "-1"),
    ("flops", "true", "true"),
])
def test_7_bad_baseline_value_is_one_line_naming_entry_and_field(pytester: pytest.Pytester, field: str,
                                                                  text: str, shown: str) -> None:
    pytester.makepyfile(test_model=MODEL)
    doc = json.dumps(baseline_doc(**{field: "@@"})).replace('"@@"', text)
    pytester.path.joinpath("b.json").write_text(doc)
    result = pytester.runpytest("--flops-baseline=b.json", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = "\n".join(result.errlines)
    assert "Traceback" not in line and "INTERNALERROR" not in result.stdout.str()
    assert "b.json is corrupt: entry 'test_model.py::test_a' measurement 0 field " in line
    assert repr(field) in line and shown in line


def test_7_by_module_value_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(baseline_doc(by_module={"Linear": "7"})))
    with pytest.raises(BaselineError, match=r"field 'by_module'\['Linear'\] is \"7\""):
        load_baseline(path)


def test_7_deep_nesting_and_huge_integers_are_one_line(tmp_path: Path) -> None:
    deep = '{"format": "pytest-flops-baseline", "schema_version": 1, "tests": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "b.json"
    path.write_text(deep)
    with pytest.raises(BaselineError, match="nested deeper than 32 levels"):
        load_baseline(path)
    path.write_text('{"format": "pytest-flops-baseline", "schema_version": 1, "x": ' + "9" * 5000 + ', "tests": {}}')
    with pytest.raises(BaselineError, match=r"field 'x' = 999.*\(5000 characters\)"):
        load_baseline(path)
    nested: object = 1
    for _ in range(40):
        nested = [nested]
    path.write_text(json.dumps(baseline_doc(extra=nested)))
    with pytest.raises(BaselineError, match="nested deeper than 32 levels"):
        load_baseline(path)


def test_7_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_flops.outputs import io

    path = tmp_path / "b.json"
    path.write_text(json.dumps(baseline_doc()))
    monkeypatch.setattr(io, "MAX_DOCUMENT_BYTES", 100)
    monkeypatch.setattr(io.read_json_document, "__defaults__", (100,))
    with pytest.raises(BaselineError, match=r"b.json is larger than"):
        load_baseline(path)


# -- 2: concurrent saves lose nothing -----------------------------------------------------------------
def test_2_a_save_during_the_run_is_kept(pytester: pytest.Pytester) -> None:
    """Another job saves to the baseline while this run is going: both runs' entries survive."""
    pytester.makepyfile(test_model=MODEL + """

def test_other_job_saves_meanwhile():
    from pytest_flops.outputs.baseline import save
    save("b.json", [{"nodeid": "elsewhere.py::test_x", "measurements": [
        {"name": "M", "flops": 7, "macs": 3, "params": 1, "by_module": {}}]}], None, None)
""")
    save(pytester.path / "b.json", [record("old.py::test_old")], None, None)
    result = pytester.runpytest("--flops-save-baseline=b.json", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    tests = json.loads((pytester.path / "b.json").read_text())["tests"]
    assert set(tests) == {"old.py::test_old", "elsewhere.py::test_x", "test_model.py::test_a"}


def test_2_save_holds_an_os_lock_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    with file_lock(path):
        held = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "b.json.lock")])
    free = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "b.json.lock")])
    assert (held.returncode, free.returncode) == (3, 0)


def test_2_save_does_not_replace_a_file_that_became_foreign(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("not json")
    with pytest.raises(BaselineError, match="not overwritten"):
        save(path, [record("a.py::t")], None, None)
    assert path.read_text() == "not json"
    save(path, [record("a.py::t")], None, None, overwrite=True)
    assert load_baseline(path).tests.keys() == {"a.py::t"}


# -- 3: symlinks followed, modes kept ---------------------------------------------------------------
def test_3_save_through_a_symlink_updates_its_target(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=MODEL)
    (pytester.path / "store").mkdir()
    target = pytester.path / "store" / "real.json"
    save(target, [record("old.py::test_old")], None, None)
    target.chmod(0o644)
    (pytester.path / "b.json").symlink_to(target)
    result = pytester.runpytest("--flops-save-baseline=b.json", "-p", "no:cacheprovider")
    assert result.ret == 0
    assert (pytester.path / "b.json").is_symlink()
    assert set(json.loads(target.read_text())["tests"]) == {"old.py::test_old", "test_model.py::test_a"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_3_atomic_write_keeps_the_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    path.chmod(mode)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == mode


def test_3_new_file_gets_0644_under_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.json", "x")
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_3_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    (tmp_path / "link.json").symlink_to(tmp_path / "sub" / "real.json")
    write_text_atomic(tmp_path / "link.json", "x")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "sub" / "real.json").read_text() == "x"


# -- 18: the torchrun file fallback trusts nothing it did not write ------------------------------------
from pytest_flops.plugin.gather import RankInfo, exchange_dir, gather  # noqa: E402

PLANTED = {"rank": 1, "world_size": 2, "records": [record("test_suite.py::test_planted", 10**12)]}
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _rank_env(tag: str) -> dict[str, str]:
    return {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": f"{tag}-{os.getpid()}"}


@pytest.fixture
def exchange(request: pytest.FixtureRequest) -> tuple[dict[str, str], Path]:
    env = _rank_env(request.node.name[:40])
    folder = exchange_dir(env)
    yield env, folder
    for child in folder.glob("*") if folder.is_dir() and not folder.is_symlink() else ():
        child.unlink()
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        folder.rmdir()


def test_18_a_folder_open_to_others_is_refused(exchange: tuple[dict[str, str], Path]) -> None:
    env, folder = exchange
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # as another user would leave it, writable by all
    (folder / "rank-1.json").write_text(json.dumps(PLANTED))
    result = gather([], RankInfo(0, 2), timeout=0.2, environ=env)
    assert result is not None and result.records == []
    assert result.missing == [1] and "open to other users (mode 777, expected 700)" in result.refused[1]


@pytest.mark.skipif(not ROOT, reason="needs root to create files as another user")
def test_18_a_folder_or_file_of_another_user_is_refused(exchange: tuple[dict[str, str], Path]) -> None:
    env, folder = exchange
    folder.mkdir(mode=0o700)
    os.chown(folder, 54321, 54321)
    (folder / "rank-1.json").write_text(json.dumps(PLANTED))
    result = gather([], RankInfo(0, 2), timeout=0.2, environ=env)
    assert result is not None and result.records == [] and "belongs to uid 54321" in result.refused[1]
    os.chown(folder, os.getuid(), os.getgid())
    os.chown(folder / "rank-1.json", 54321, 54321)
    result = gather([], RankInfo(0, 2), timeout=0.2, environ=env)
    assert result is not None and result.records == [] and "rank-1.json belongs to uid 54321" in result.refused[1]


def test_18_a_symlinked_folder_is_refused(exchange: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, folder = exchange
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "elsewhere" / "rank-1.json").write_text(json.dumps(PLANTED))
    folder.symlink_to(tmp_path / "elsewhere")
    result = gather([], RankInfo(0, 2), timeout=0.2, environ=env)
    assert result is not None and result.records == [] and "is not a directory" in result.refused[1]


@pytest.mark.parametrize("message, reason", [
    ({"rank": 1, "records": [{"nodeid": "t", "measurements": [{"flops": "1T", "macs": 0, "params": 0}]}]},
     "record 't' measurement 0 field 'flops' is \"1T\""),
    ({"rank": 1, "records": [{"nodeid": "t", "measurements": [1, 2]}]}, "measurement 0 is 1, not an object"),
    ({"rank": 1, "records": "x"}, "not a pytest-flops message from rank 1"),
    ({"rank": 0, "records": []}, "not a pytest-flops message from rank 1"),
])
def test_18_every_record_is_validated(exchange: tuple[dict[str, str], Path], message: dict, reason: str) -> None:
    env, folder = exchange
    folder.mkdir(mode=0o700)
    (folder / "rank-1.json").write_text(json.dumps(message))
    result = gather([record("t0")], RankInfo(0, 2), timeout=5, environ=env)
    assert result is not None and [r["nodeid"] for r in result.records] == ["t0"]
    assert result.missing == [1] and reason in result.refused[1]


def test_18_planted_records_do_not_reach_the_report(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                   exchange: tuple[dict[str, str], Path]) -> None:
    env, folder = exchange
    pytester.makepyfile(test_suite=MODEL)
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    (folder / "rank-1.json").write_text(json.dumps(PLANTED))
    for key in ("LOCAL_RANK", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "-o", "flops_gather_timeout=0.5")
    result.assert_outcomes(passed=1)
    assert "1.00T" not in result.stdout.str() and "test_planted" not in result.stdout.str()
    result.stdout.fnmatch_lines(["incomplete run: rank 1's measurements were refused (the exchange directory * is "
                                 "open to other users (mode 777, expected 700))"])


# -- 8: pytest-flops compare / count: one line, exit 2 (or 1), never a traceback ---------------------
from pytest_flops.cli import main  # noqa: E402


def _results(**test: object) -> dict:
    t = {"nodeid": "t.py::test_a", "measurements": [{"name": "M", "flops": 10, "macs": 5, "params": 1}]}
    t.update(test)
    return {"format": "pytest-flops-results", "schema_version": 1, "environment": {"torch": "2"}, "tests": [t]}


@pytest.mark.parametrize("document, message", [
    (_results(measurements=[{"name": "M", "macs": 5, "params": 1}]), "measurement 0 has no valid 'flops' count"),
    (_results(measurements=[{"name": "M", "flops": "10", "macs": 5, "params": 1}]),
     "measurement 0 field 'flops' is \"10\""),
    (json.dumps(_results()).replace('"flops": 10', '"flops": NaN'), "measurement 0 field 'flops' is NaN"),
    (_results(measurements=[1, 2]), "measurement 0 is 1, not an object"),
    ({**_results(), "environment": [1]}, "\"environment\" is not an object"),
    ({**_results(), "tests": {"a": 1}}, "\"tests\" is not a list"),
    ('{"format": "pytest-flops-results", "tests": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested deeper than 32"),
])
def test_8_compare_malformed_results_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                         document: object, message: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_results()))
    bad = tmp_path / "bad.json"
    bad.write_text(document if isinstance(document, str) else json.dumps(document))
    for args in ([str(good), str(bad)], [str(bad), str(good)]):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pytest-flops: cannot read ") and message in err, err


def test_8_compare_does_not_read_without_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_results()))
    assert main(["compare", str(good), "/dev/zero"]) == 2
    assert capsys.readouterr().err == "pytest-flops: cannot read '/dev/zero': the file is larger than 64 MiB, the most read\n"


@pytest.mark.parametrize("spec, code, message", [
    ("99999999999999999999999x8", 2, "invalid --input '99999999999999999999999x8': 8e+23 elements, more than a "
                                     "tensor can hold"),
    ("100000x100000x100000", 1, "cannot allocate --input 100000x100000x100000 on cpu: RuntimeError: "),
])
def test_8_count_huge_inputs(capsys: pytest.CaptureFixture[str], spec: str, code: int, message: str) -> None:
    assert main(["count", "torch.nn:Identity", "--input", spec, "--compute"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pytest-flops: " + message), err


def test_8_count_reports_system_exit(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "exits_in_factory.py").write_text("import sys\n\ndef make():\n    sys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["count", "exits_on_import:x", "--input", "1x4"]) == 2
    assert capsys.readouterr().err == ("pytest-flops: cannot import 'exits_on_import:x': importing "
                                       "'exits_on_import' called sys.exit(0)\n")
    assert main(["count", "exits_in_factory:make", "--input", "1x4"]) == 1
    assert capsys.readouterr().err == "pytest-flops: calling 'exits_in_factory:make' failed: it called sys.exit(3)\n"


# -- 12, 13, 14: budgets say what they check ------------------------------------------------------------
from pytest_flops.budgets import Budget, BudgetError, merge_markers, parse_budget  # noqa: E402


@pytest.mark.parametrize("args, kwargs, expected", [
    (("300K MACs",), {}, Budget(macs=300_000)),
    (("4.1 GMACs",), {}, Budget(macs=4_100_000_000)),
    (("25.6M params",), {}, Budget(params=25_600_000)),
    (("8G FLOPs",), {"macs": "4G"}, Budget(flops=8 * 10**9, macs=4 * 10**9)),
    ((), {"macs": "3 MACs", "params": "1M params"}, Budget(macs=3, params=10**6)),
])
def test_12_a_unit_in_the_string_picks_the_metric(args: tuple, kwargs: dict, expected: Budget) -> None:
    assert parse_budget(args, kwargs) == expected


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"params": "1G FLOPs"}, "max_flops params='1G FLOPs' names FLOPs, not params: write flops='1G FLOPs'"),
    ((), {"flops": "3 MACs"}, "max_flops flops='3 MACs' names MACs, not FLOPs"),
    (("300K MACs",), {"macs": "1M"}, "max_flops got the MAC budget twice: '300K MACs' and macs='1M'"),
])
def test_12_a_contradicting_unit_is_a_usage_error(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(BudgetError, match=message.replace("(", r"\(")):
        parse_budget(args, kwargs)


def test_12_a_macs_marker_fails_on_macs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="""
import pytest, torch

@pytest.mark.max_flops("10 MACs")
def test_a():
    torch.nn.Linear(4, 4)(torch.randn(1, 4))
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_flops: Linear used 16 MACs, budget 10 MACs (+60.0%)*"])


def test_13_stacked_markers_merge(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="""
import pytest, torch

pytestmark = pytest.mark.max_flops(macs="1G")

@pytest.mark.max_flops("1G")
@pytest.mark.max_flops(params="10")
def test_params_over():
    torch.nn.Linear(4, 4)(torch.randn(1, 4))
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-json=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_flops: Linear has 20 params, budget 10 params*"])
    budget = json.loads((pytester.path / "r.json").read_text())["tests"][0]["budget"]
    assert (budget["flops"], budget["macs"], budget["params"]) == (10**9, 10**9, 10)


def test_13_a_key_set_twice_is_a_usage_error_naming_both(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="""
import pytest, torch

@pytest.mark.max_flops("1G")
@pytest.mark.max_flops("2G")
def test_a():
    torch.nn.Linear(4, 4)(torch.randn(1, 4))
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_model.py::test_a: stacked max_flops markers set flops twice: "
                                 "'2G' and '1G'; keep one, or merge them into one marker"])


def test_13_a_nearer_level_overrides_key_by_key() -> None:
    assert merge_markers([[((), {"params": "1M"})], [(("1G",), {}), ((), {"params": "9M"})]]) == \
        Budget(flops=10**9, params=10**6)


def test_14_params_failure_lists_the_modules_holding_them_and_names_the_measurement(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="""
import pytest, torch
from torch import nn

@pytest.mark.max_flops(params="100")
def test_two(flops):
    flops(nn.Linear(2, 2), torch.randn(1, 2))
    flops(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4))), torch.randn(1, 8))
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(["*max_flops: measurement 2 (Sequential) has 212 params, budget 100 params (+112.0%)",
                                 "modules holding the parameters:",
                                 "  0    *144 params   67.9%  Linear",
                                 "  2.0  * 68 params   32.1%  Linear"])
    assert "top modules by FLOPs" not in text and "measurement 1 " not in text


# -- 1: an output never replaces the baseline or another output -----------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--flops-baseline=b.json", "--flops-json=b.json"],
     "--flops-json=b.json is the same file as --flops-baseline=b.json: expected a path of its own "
     "(writing it would replace the baseline)"),
    (["--flops-baseline=b.json", "--flops-markdown=./link.json"],
     "--flops-markdown=./link.json is the same file as --flops-baseline=b.json*"),
    (["--flops-save-baseline=b.json", "--flops-json=b.json"],
     "--flops-json=b.json is the same file as --flops-save-baseline=b.json*(writing it would replace the save "
     "baseline)"),
    (["--flops-json=r.json", "--flops-markdown=r.json"], "--flops-markdown=r.json is the same file as --flops-json*"),
    (["--flops-baseline=b.json", "--flops-html=b.json"], "--flops-html=b.json is the same file as --flops-baseline*"),
])
def test_1_output_paths_must_differ(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(test_model=MODEL)
    save(pytester.path / "b.json", [record("test_model.py::test_a")], None, None)
    (pytester.path / "link.json").symlink_to(pytester.path / "b.json")
    before = (pytester.path / "b.json").read_text()
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + message])
    assert (pytester.path / "b.json").read_text() == before


def test_1_saving_to_the_compared_baseline_is_still_allowed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=MODEL)
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-baseline=b.json", "--flops-save-baseline=b.json")
    assert result.ret == 0


# -- 11: every setting's bad value is one line naming it ---------------------------------------------------
# case 11's bad values are in tests/test_settings.py's one-line table


# -- 15: xfail outcomes -----------------------------------------------------------------------------------
def test_15_xfailed_and_xpassed_outcomes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="""
import pytest, torch

@pytest.mark.xfail(reason="known")
def test_xfails(flops):
    flops(torch.nn.Linear(4, 4), torch.randn(1, 4))
    assert False

@pytest.mark.xfail(reason="fixed?")
def test_xpasses(flops):
    flops(torch.nn.Linear(4, 4), torch.randn(1, 4))
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "--flops-json=r.json")
    result.assert_outcomes(xfailed=1, xpassed=1)
    outcomes = {t["nodeid"].split("::")[1]: t["outcome"]
                for t in json.loads((pytester.path / "r.json").read_text())["tests"]}
    assert outcomes == {"test_xfails": "xfailed", "test_xpasses": "xpassed"}
    result.stdout.re_match_lines([r"test_model.py::test_xfails .* xfailed", r"test_model.py::test_xpasses .* xpassed"])


# -- 17: the update hint works from the current directory --------------------------------------------------
def test_17_update_hint_from_a_subfolder(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nflops_baseline = sub/b.json\n")
    pytester.mkdir("sub")
    tests = pytester.mkdir("tests")
    (tests / "test_model.py").write_text(MODEL)
    save(pytester.path / "sub" / "b.json", [record("tests/test_model.py::test_a", 1)], None, None)
    monkeypatch.chdir(tests)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    expected = str(pytester.path / "sub" / "b.json")
    result.stdout.fnmatch_lines([f"*if the change is intended, update the baseline: pytest --flops-save-baseline="
                                 f"{expected}"])


# -- 10: jagged nested tensors ----------------------------------------------------------------------------
def test_10_jagged_nested_tensor_is_a_formula_error() -> None:
    import torch

    from pytest_flops import count
    from pytest_flops.counting.handlers import FormulaError

    nt = torch.nested.nested_tensor([torch.randn(2, 8), torch.randn(3, 8)], layout=torch.jagged)
    with pytest.raises(FormulaError, match="cannot count aten.linear on a jagged nested tensor"):
        count(torch.nn.Linear(8, 4), nt)


# -- 16: conftest hooks survive -p no:flops --------------------------------------------------------------
def test_16_the_examples_conftest_runs_without_the_plugin(pytester: pytest.Pytester) -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    pytester.makeconftest((root / "conftest.py").read_text())
    (pytester.path / "models.py").write_text((root / "models.py").read_text())
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = pytester.runpytest("-p", "no:flops", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "unknown hook" not in result.stdout.str() + result.stderr.str()


def test_16_docs_mark_every_conftest_hook_optional() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in [*root.joinpath("docs").glob("*.md"), *root.joinpath("examples").glob("*.py")]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("def pytest_flops_") and "..." not in line:
                assert lines[i - 1].startswith("@pytest.hookimpl(optionalhook=True)"), f"{path.name}:{i + 1}"


# -- 6: a collection error with --flops-save-baseline ------------------------------------------------
def test_6_collection_error_says_the_baseline_was_not_saved(pytester: pytest.Pytester) -> None:
    """The run stops at a collection error: the baseline keeps its entries and the terminal says why."""
    pytester.makepyfile(test_model=MODEL, test_broken="import no_such_module_here\n")
    save(pytester.path / "b.json", [record("old.py::test_old")], None, None)
    before = (pytester.path / "b.json").read_text()
    result = pytester.runpytest("--flops-save-baseline=b.json", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["flops baseline not saved to b.json: the run was interrupted: 1 error during "
                                 "collection; nothing in it was changed"])
    assert (pytester.path / "b.json").read_text() == before


# -- 4: an interrupted run's files say so ------------------------------------------------------------
INTERRUPTED = """
import os, signal, pytest, torch

def test_a(flops):
    flops(torch.nn.Linear(4, 4), torch.randn(1, 4))

def test_b(flops):
    flops(torch.nn.Linear(8, 8), torch.randn(1, 8))
    {stop}

def test_c(flops):
    flops(torch.nn.Linear(16, 16), torch.randn(1, 16))
"""
_OUTPUTS = ("--flops-report", "--flops-json=r.json", "--flops-markdown=r.md", "--flops-html=r.html",
            "--flops-save-baseline=b.json", "-p", "no:cacheprovider")


def _check_incomplete(path: Path, why: str, nodeids: list[str]) -> None:
    doc = json.loads((path / "r.json").read_text())
    assert doc["complete"] is False and doc["incomplete"]["why"] == why and doc["incomplete"]["stopped"] == why
    assert [t["nodeid"].split("::")[1] for t in doc["tests"]] == nodeids  # what was measured before the stop
    assert f"> **Incomplete run:** {why}." in (path / "r.md").read_text()
    assert '"incomplete":"' + why in (path / "r.html").read_text()


def test_4_ctrl_c_marks_every_file_incomplete_and_keeps_the_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=INTERRUPTED.format(stop="raise KeyboardInterrupt"))
    save(pytester.path / "b.json", [record("old.py::test_old")], None, None)
    before = (pytester.path / "b.json").read_text()
    result = pytester.runpytest(*_OUTPUTS, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    why = "the run was interrupted (Ctrl-C)"
    result.stdout.fnmatch_lines([f"incomplete run: {why}",
                                 f"flops baseline not saved to b.json: {why}; nothing in it was changed",
                                 "flops results written to r.json"])
    _check_incomplete(pytester.path, why, ["test_a"])
    assert (pytester.path / "b.json").read_text() == before


def test_4_sigterm_ends_the_run_like_ctrl_c(pytester: pytest.Pytester) -> None:
    """A CI job's time limit: SIGTERM mid-run. The files are written and marked; nothing is saved. (A real
    signal, to this process: the inner test sends it only once the plugin's handler is in place, so a
    missing handler fails the test instead of ending this process.)"""
    pytester.makepyfile(test_model=INTERRUPTED.format(
        stop="assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)\n"
             "    os.kill(os.getpid(), signal.SIGTERM)"))
    save(pytester.path / "b.json", [record("old.py::test_old")], None, None)
    before = (pytester.path / "b.json").read_text()
    result = pytester.runpytest(*_OUTPUTS, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    why = "the run was stopped by SIGTERM"
    result.stdout.fnmatch_lines([f"incomplete run: {why}", f"flops baseline not saved to b.json: {why}*"])
    _check_incomplete(pytester.path, why, ["test_a"])  # test_b was stopped in its call: no report for it
    assert (pytester.path / "b.json").read_text() == before


def test_4_stopping_early_is_incomplete_and_a_finished_run_complete(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=INTERRUPTED.format(stop="assert False"))
    result = pytester.runpytest("-x", *_OUTPUTS[1:3])
    result.assert_outcomes(passed=1, failed=1)
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["complete"] is False and doc["incomplete"]["why"] == "the run stopped early: stopping after 1 failures"
    assert "**Incomplete run:** the run stopped early" in (pytester.path / "r.md").read_text()
    result = pytester.runpytest("--deselect=test_model.py::test_b", *_OUTPUTS[1:3])
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["complete"] is True and doc["incomplete"] is None
    assert "Incomplete" not in (pytester.path / "r.md").read_text()


def test_4_a_handler_of_the_suite_is_left_alone(pytester: pytest.Pytester) -> None:
    """A suite that handles SIGTERM itself keeps its handler; the plugin removes its own after the run."""
    pytester.makeconftest("""
        import signal
        def mine(signum, frame):
            pass
        def pytest_configure(config):
            if config.getoption("--mine"):
                config._before = signal.signal(signal.SIGTERM, mine)
        def pytest_unconfigure(config):
            if config.getoption("--mine"):
                signal.signal(signal.SIGTERM, config._before)
        def pytest_addoption(parser):
            parser.addoption("--mine", action="store_true")
    """)
    pytester.makepyfile(test_model="""
        import signal
        def test_handler(request):
            name = getattr(signal.getsignal(signal.SIGTERM), "__name__", "")
            assert name == ("mine" if request.config.getoption("--mine") else "_handle"), name
    """)
    import signal

    before = signal.getsignal(signal.SIGTERM)
    pytester.runpytest("--flops-json=r.json", "--mine").assert_outcomes(passed=1)
    if before is signal.SIG_DFL:  # else the outer run already handles SIGTERM and the inner leaves it alone
        pytester.runpytest("--flops-json=r.json").assert_outcomes(passed=1)
    assert signal.getsignal(signal.SIGTERM) is before
