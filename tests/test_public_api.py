"""The names pytest_flops exports (lazily) and the types users annotate with."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest


def test_new_exports_are_the_library_objects() -> None:
    import pytest_flops
    from pytest_flops.counting import counter, registry
    from pytest_flops.plugin import fixture

    assert pytest_flops.FormulaError is counter.FormulaError
    assert pytest_flops.DEFAULT_REGISTRY is registry.DEFAULT_REGISTRY
    assert pytest_flops.FlopsFixture is fixture.FlopsFixture
    assert {"FormulaError", "FlopsFixture", "DEFAULT_REGISTRY"} <= set(pytest_flops.__all__)


def test_exports_stay_lazy() -> None:
    code = ("import sys, pytest_flops; assert 'torch' not in sys.modules; pytest_flops.FlopsFixture; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the fixture type needs no torch


def test_fixture_and_hookspecs_are_typed() -> None:
    from pytest_flops import FlopsFixture, Measurement, Registry
    from pytest_flops.counting.counter import FlopCounter
    from pytest_flops.plugin import hookspecs

    # the annotations name the real classes (imported for type checkers only, so resolved with them here)
    names = {"Measurement": Measurement, "Registry": Registry, "FlopCounter": FlopCounter}

    def hints(fn: typing.Any) -> dict[str, typing.Any]:
        return typing.get_type_hints(fn, localns=names)

    assert hints(FlopsFixture.__call__)["return"] is Measurement
    assert hints(FlopsFixture.registry.fget)["return"] is Registry
    assert hints(FlopsFixture.counting)["return"] == typing.Iterator[FlopCounter]
    assert hints(hookspecs.pytest_flops_register_formulas)["registry"] is Registry
    assert hints(hookspecs.pytest_flops_measurement)["measurement"] is Measurement


def test_fixture_is_the_exported_type(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from pytest_flops import FlopsFixture

        def test_a(flops: FlopsFixture):
            assert isinstance(flops, FlopsFixture)
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
