"""Hooks that pytest-flops adds to pytest (documented in docs/hooks.md).

Implement them in a ``conftest.py`` (they then apply to the tests at and
below its folder) or in an installed plugin (they apply to every test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from ..counting.measurement import Measurement
    from ..counting.registry import Registry


@pytest.hookspec
def pytest_flops_register_formulas(registry: Registry) -> None:
    """Register formulas for the tests this conftest/plugin applies to.

    ``registry.register_module_formula(module_type, fn)`` and
    ``registry.register_op_formula(op, fn)`` work as the library functions of
    the same names, but only for those tests. Called once per measured test.
    """


@pytest.hookspec
def pytest_flops_measurement(item: pytest.Item, measurement: Measurement) -> None:
    """Called for every Measurement a test records (fixture call, ``counting()`` block or whole test)."""
