"""The pytest plugin, tested through real pytest runs (pytester)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

MODEL = """
import pytest, torch
from torch import nn

def make_model():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

# FLOPs of one sample: 2*(64*256 + 256*10) = 37888; params 64*256+256+256*10+10 = 19210
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    """Run ``body`` as a test file, in this process."""
    pytester.makepyfile(test_models=MODEL + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_within_budget_passes_and_fixture_returns_measurement(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("40K", params="20K")
        def test_ok(flops):
            m = flops(make_model(), torch.randn(1, 64))
            assert (m.flops, m.macs, m.params) == (37888, 18944, 19210)
            assert flops.measurements == [m]
    """)
    result.assert_outcomes(passed=1)


def test_over_budget_fails_with_message_naming_modules(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("30K")
        def test_over(flops):
            flops(make_model(), torch.randn(1, 64))
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*max_flops: Sequential used 37.89 KFLOPs, budget 30.00 KFLOPs (+26.3%)*",
        "*top modules by FLOPs:*",
        "*0*32.77 KFLOPs*86.5%*Linear*",
        "*2*5.12 KFLOPs*13.5%*Linear*",
    ])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    "marker, line",
    [
        ("macs='18K'", "*Sequential used 18.94 KMACs, budget 18.00 KMACs (+5.2%)*"),
        ("params='19K'", "*Sequential has 19.21K params, budget 19.00K params (+1.1%)*"),
        ("flops=37_000", "*Sequential used 37.89 KFLOPs, budget 37.00 KFLOPs (+2.4%)*"),
    ],
)
def test_macs_params_and_flops_budgets(pytester: pytest.Pytester, marker: str, line: str) -> None:
    result = run(pytester, f"""
        @pytest.mark.max_flops({marker})
        def test_over(flops):
            flops(make_model(), torch.randn(1, 64))
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([line])


@pytest.mark.parametrize(
    "marker, fragment",
    [
        ("'4.1Q'", "flops='4.1Q' is not a valid quantity"),
        ("macs='lots'", "macs='lots' is not a valid quantity"),
        ("'1G', '2G'", "at most one positional argument"),
        ("flops='1G', budget='2G'", "unexpected argument(s) budget"),
        ("'1G', ops='some'", "ops='some' is not valid"),
        ("", "needs at least one budget"),
    ],
)
def test_malformed_budget_is_a_usage_error_naming_test_and_value(
    pytester: pytest.Pytester, marker: str, fragment: str
) -> None:
    result = run(pytester, f"""
        @pytest.mark.max_flops({marker})
        def test_bad(flops):
            pass
    """)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_models.py::test_bad: max_flops*{fragment}*"])


def test_marked_test_that_measured_nothing_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("1G")
        def test_nothing(flops):
            pass

        @pytest.mark.max_flops("1G")
        def test_whole_nothing():
            pass
    """)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*max_flops: test_nothing measured nothing: call flops(model, *inputs)*",
        "*max_flops: test_whole_nothing measured nothing: no torch.nn module or counted op ran*",
    ])


def test_whole_test_is_measured_without_fixture(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        model = make_model()

        @pytest.mark.max_flops(macs="19K")
        def test_whole_ok():
            model(torch.randn(1, 64))

        @pytest.mark.max_flops(macs="30K")
        def test_whole_over():
            model(torch.randn(2, 64))
    """, "--flops-report")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Sequential used 37.89 KMACs, budget 30.00 KMACs (+26.3%)*"])
    result.stdout.fnmatch_lines(["*::test_whole_ok*18.94K*99.7%*passed*"])  # one line: the id cut from the left


def test_own_failure_is_reported_not_the_budget(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("1K")
        def test_fixture(flops):
            flops(make_model(), torch.randn(1, 64))
            assert 1 == 2, "the test's own assertion"

        @pytest.mark.max_flops("1K")
        def test_whole():
            make_model()(torch.randn(1, 64))
            raise KeyError("own error")
    """)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "the test's own assertion" in out and "KeyError: 'own error'" in out
    assert "max_flops:" not in out


def test_strict_markers_accepts_the_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("1G")
        def test_ok(flops):
            flops(make_model(), torch.randn(1, 64))
    """, "--strict-markers")
    result.assert_outcomes(passed=1)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("1")
        def test_marked():
            make_model()(torch.randn(1, 64))

        def test_fixture(flops):
            pass
    """, "-p", "no:flops", "--flops-report")
    # without the plugin its option is unknown
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = pytester.runpytest("-p", "no:flops", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'flops' not found*"])


@pytest.mark.parametrize("verbosity", ["-q", "-v", "-qq"])
def test_report_readable_under_verbosity(pytester: pytest.Pytester, verbosity: str) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("40K")
        def test_a(flops):
            flops(make_model(), torch.randn(1, 64))

        def test_b(flops):
            flops(make_model(), torch.randn(2, 64))
            flops(make_model(), torch.randn(3, 64))

        def test_not_measured():
            pass
    """, verbosity, "--flops-report")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert "flops report" in out
    result.stdout.fnmatch_lines([
        "*test*FLOPs*MACs*params*budget*used*device*outcome*",
        "test_models.py::test_a*37.89K*18.94K*19.21K*40K*94.7%*cpu*passed*",  # one line per test in 80 columns
    ])
    assert "::test_b [1]  " in out and "::test_b [2]  " in out  # longer ids cut from the left
    assert "test_not_measured" not in out.split("flops report")[1]
    result.stdout.fnmatch_lines(["total*227.33K*113.66K*", "2 tests, 3 measurements"])
    width = max(len(line) for line in out.split("flops report")[1].splitlines())
    assert width <= 80  # pytester's terminal is 80 columns


def test_full_report_lists_top_modules(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        def test_a(flops):
            flops(make_model(), torch.randn(1, 64))
    """, "--flops-report=full")
    result.stdout.fnmatch_lines(["*test_models.py::test_a*37.89K*", "    0  32.77 KFLOPs  86.5%"])


def test_report_option_before_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_models=MODEL + "\ndef test_a(flops):\n    flops(make_model(), torch.randn(1, 64))\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "test_models.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*flops report*"])


def test_ini_settings_and_command_line_precedence(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nflops_report = full\nflops_ops = all\n")
    body = """
        def test_a(flops):
            m = flops(make_model(), torch.randn(1, 64))
            print("OPS", m.ops, m.flops)
    """
    result = run(pytester, body, "-s")
    result.stdout.fnmatch_lines(["*OPS all *", "*flops report*", "    0  *"])
    ops_all_flops = int(result.stdout.str().split("OPS all ")[1].split()[0])
    assert ops_all_flops == 37888 + 266 + 256  # bias adds (256 + 10) and ReLU (256) count with ops=all
    result = run(pytester, body, "-s", "--flops-ops=matmul", "--flops-report=short")
    result.stdout.fnmatch_lines(["*OPS matmul 37888"])
    assert "    0  " not in result.stdout.str()


def test_bad_ini_value_is_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nflops_ops = most\n")
    result = run(pytester, "def test_a():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: flops_ops (ini)='most' is not valid: expected 'matmul' or 'all'"])


def test_marker_ops_all(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("37888", ops="all")
        def test_all(flops):
            flops(make_model(), torch.randn(1, 64))
    """)
    result.assert_outcomes(failed=1)  # with ops="all" bias adds and ReLU push it over


def test_strict_setting_fails_on_uncounted_ops(pytester: pytest.Pytester) -> None:
    # The op is registered in this process for good: a name of its own per run, so a rerun cannot clash.
    op = f"mystery_{uuid.uuid4().hex[:8]}"
    result = run(pytester, """
        import torch.library

        @torch.library.custom_op("flopstest_plugin::{op}", mutates_args=())
        def mystery(x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        @mystery.register_fake
        def _(x):
            return torch.empty_like(x)

        def test_mystery(flops):
            flops(lambda x: mystery(x), torch.randn(3))
    """.replace("{op}", op), "--flops-strict", "--flops-report")
    result.assert_outcomes(failed=1)
    # a clean failure like a budget's (issue 12, case 9): the ops and the setting to relax, no library traceback
    result.stdout.fnmatch_lines([
        f"*test_mystery ran ops without a FLOP formula (--flops-strict): flopstest_plugin.{op} x1",
        "*drop --flops-strict / set flops_strict = false in the ini file",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "counter.py" not in out and "strict=False" not in out
    # the test keeps its row in the report (what was counted before the check), with its outcome
    result.stdout.re_match_lines([r"=+ flops report =+", r"test +FLOPs .*", r"-+",
                                  r"test_models\.py::test_mystery +\S+ .* failed$"])


CUSTOM_LAYER = """
import torch
from torch import nn

class MyAttention(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(-1, -2), -1) @ v
"""


def test_conftest_registers_module_formula_through_hook(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(layer=CUSTOM_LAYER)
    pytester.mkpydir("sub")
    pytester.path.joinpath("sub", "conftest.py").write_text(textwrap.dedent("""
        from layer import MyAttention

        def pytest_flops_register_formulas(registry):
            registry.register_module_formula(MyAttention, lambda module, inputs, output: 1_000_000)

        def pytest_flops_measurement(item, measurement):
            print("OBSERVED", item.name, measurement.flops)
    """))
    test_body = textwrap.dedent("""
        import torch, pytest
        from layer import MyAttention

        @pytest.mark.max_flops("900K")
        def test_attention(flops):
            m = flops(MyAttention(), torch.randn(1, 4, 32))
            print("FLOPS", m.flops, m.by_module)
    """)
    pytester.path.joinpath("sub", "test_sub.py").write_text(test_body)
    pytester.path.joinpath("test_top.py").write_text(test_body.replace('"900K"', '"1G"'))
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--rootdir", str(pytester.path))
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    # below the conftest: the formula replaces the ops and blows the budget
    result.stdout.fnmatch_lines(["*MyAttention used 1.00 MFLOPs, budget 900.00 KFLOPs (+11.1%)*"])
    assert "OBSERVED test_attention 1000000" in out
    # beside it: the ops are counted (qkv 2*4*32*96 + two 4x4x32 products 2*2*4*4*32)
    assert "FLOPS 26624 " in out


def test_fixture_formulas_are_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(layer=CUSTOM_LAYER)
    result = run(pytester, """
        from layer import MyAttention

        def test_first(flops):
            flops.register_module_formula(MyAttention, lambda m, i, o: 7)
            assert flops(MyAttention(), torch.randn(1, 4, 32)).flops == 7

        def test_second(flops):
            assert flops(MyAttention(), torch.randn(1, 4, 32)).flops == 26624
    """)
    result.assert_outcomes(passed=2)


def test_counting_context_manager_forward_backward(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        @pytest.mark.max_flops("250K")
        def test_step(flops):
            model = make_model()
            x = torch.randn(2, 64, requires_grad=True)
            with flops.counting(model) as c:
                model(x).sum().backward()
            m = c.measurement
            assert m.forward_flops == 2 * 37888
            assert m.backward_flops == 2 * m.forward_flops
            assert m.params == 19210
    """)
    result.assert_outcomes(passed=1)


def test_user_properties_in_junitxml(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        def test_a(flops):
            flops(make_model(), torch.randn(1, 64))
    """, "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    xml = pytester.path.joinpath("out.xml").read_text()
    assert '<property name="flops" value="37888"' in xml
    assert '<property name="macs" value="18944"' in xml
    assert '<property name="params" value="19210"' in xml


def test_failure_in_model_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        from torch.nn.modules import module as nn_module

        @pytest.mark.max_flops("1G")
        def test_boom(flops):
            flops(make_model(), torch.randn(1, 63))

        @pytest.mark.max_flops("1G")
        def test_boom_whole():
            make_model()(torch.randn(1, 63))

        def test_after():
            assert not nn_module._global_forward_hooks
            assert not nn_module._global_forward_pre_hooks
            assert torch._C._len_torch_dispatch_stack() == 0
    """)
    result.assert_outcomes(failed=2, passed=1)


def test_plugin_import_does_not_import_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="""
        import sys

        def test_no_torch():
            assert "pytest_flops.plugin" in sys.modules
            assert "torch" not in sys.modules
    """)
    # hypothesis's plugin imports all of hypothesis (about 1 s), which this check does not need
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--flops-report")
    result.assert_outcomes(passed=1)


def test_package_import_is_cheap() -> None:
    code = "import sys, pytest_flops, pytest_flops.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
