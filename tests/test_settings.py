"""plugin/settings.py: every option and ini key read once, validated once, the same through both."""

from __future__ import annotations

from typing import Any, Callable

import dataclasses

import pytest

from pytest_flops.budgets import Tolerance
from pytest_flops.outputs.baseline import dump, merge
from pytest_flops.plugin.settings import FlopsSettings, PathSetting, get_settings

# A value of every setting that has both a command-line option and an ini key, other than its default.
BOTH = {
    "report": "full", "ops": "all", "strict": True, "baseline": "base.json", "baseline_strict": True,
    "tolerance": "2%", "json": "out/r.json", "markdown": "out/r.md", "flamegraph": "folded",
    "report_columns": "flops,outcome", "report_sort": "flops", "html": "out/r.html",
}


def _fields(kind: str) -> set[str]:
    out = set()
    for f in dataclasses.fields(FlopsSettings):
        spec = f.metadata.get("flops_option")
        if spec is not None and (spec.help if kind == "cli" else spec.ini):
            out.add(f.name)
    return out


def _cli(name: str, value: object) -> str:
    flag = "--flops-" + name.replace("_", "-")
    return flag if value is True else f"{flag}={value}"


def test_every_setting_with_both_forms_is_tested() -> None:
    assert _fields("cli") & _fields("ini") == set(BOTH)


def test_ini_and_command_line_give_the_same_settings(pytester: pytest.Pytester,
                                                    configure: Callable[..., Any]) -> None:
    (pytester.path / "base.json").write_text(dump(merge({}, [])))
    pytester.makeini("[pytest]\n" + "".join(f"flops_{k} = {str(v).lower() if v is True else v}\n"
                                            for k, v in BOTH.items()))
    from_ini = get_settings(configure())
    pytester.makeini("[pytest]\n")
    from_cli = get_settings(configure(*(_cli(k, v) for k, v in BOTH.items())))
    assert from_ini == from_cli
    assert from_cli.report == "full" and from_cli.ops == "all" and from_cli.strict and from_cli.baseline_strict
    assert from_cli.tolerance == Tolerance(percent=2.0)
    assert from_cli.json == PathSetting(pytester.path / "out/r.json", "out/r.json")


def test_defaults_and_command_line_wins(pytester: pytest.Pytester, configure: Callable[..., Any]) -> None:
    pytester.makeini("[pytest]\nflops_ops = all\nflops_gather_timeout = 2.5\n")
    settings = get_settings(configure("--flops-ops=matmul"))
    assert settings.ops == "matmul" and settings.gather_timeout == 2.5
    assert (settings.report, settings.strict, settings.tolerance, settings.baseline) == ("off", False, Tolerance(),
                                                                                          None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ops = "all"  # type: ignore[misc]


def test_ini_paths_are_relative_to_the_ini_file(pytester: pytest.Pytester, configure: Callable[..., Any]) -> None:
    pytester.mkdir("sub")
    pytester.makeini("[pytest]\nflops_json = results.json\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pytester.path / "sub")
        settings = get_settings(configure("-c", str(pytester.path / "tox.ini"), "--flops-markdown=r.md"))
    assert settings.json is not None and settings.json.path == pytester.path / "results.json"
    assert settings.markdown is not None and settings.markdown.path == pytester.path / "sub" / "r.md"


@pytest.mark.parametrize("args, ini, message", [
    (["--flops-ops=most"], "", "ERROR: --flops-ops='most' is not valid: expected 'matmul' or 'all'"),
    ([], "flops_ops = most", "ERROR: flops_ops (ini)='most' is not valid: expected 'matmul' or 'all'"),
    (["--flops-report=wide"], "", "ERROR: --flops-report='wide' is not valid: expected 'short', 'full' or 'off' "
                                  "(write paths before --flops-report, or use --flops-report=full)"),
    ([], "flops_report = wide", "ERROR: flops_report (ini)='wide' is not valid: expected 'short', 'full' or 'off'"),
    ([], "flops_gather_timeout = soon",
     "ERROR: flops_gather_timeout (ini)='soon' is not valid: expected a number of seconds >= 0 (0: no gathering)"),
    ([], "flops_strict = maybe", "ERROR: flops_strict (ini) is not valid: *maybe*"),
    (["--flops-tolerance=lots"], "", "ERROR: --flops-tolerance='lots' is not valid: expected a relative tolerance*"),
    # issue 12, case 11: a negative or NaN wait, an empty path, the ini key's case
    ([], "flops_gather_timeout = -5", "ERROR: flops_gather_timeout (ini)='-5' is not valid: expected a number of "
                                      "seconds >= 0 (0: no gathering)"),
    (["-o", "flops_gather_timeout=nan"], "", "ERROR: flops_gather_timeout (ini)='nan' is not valid*"),
    (["--flops-json="], "", "ERROR: --flops-json='' is not valid: expected a path"),
    (["--flops-ops=ALL"], "", "ERROR: --flops-ops='ALL' is not valid: expected 'matmul' or 'all'"),
    (["--flops-report", "--flops-report-columns=flops,size"], "",
     "ERROR: --flops-report-columns='flops,size' is not valid: expected a comma-separated list of test, model, flops*"),
    (["--flops-report", "--flops-report-sort=speed"], "",
     "ERROR: --flops-report-sort='speed' is not valid: expected one of test, model*"),
])
def test_bad_value_is_one_line_naming_what_was_typed(pytester: pytest.Pytester, args: list[str], ini: str,
                                                     message: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, errors
    result.stderr.fnmatch_lines([message])


def test_help_lists_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    text = pytester.runpytest("--help").stdout.str()
    for name in _fields("cli"):
        assert "--flops-" + name.replace("_", "-") in text
    for name in _fields("ini"):
        assert f"flops_{name} " in text
