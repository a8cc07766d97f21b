"""pytest-flops: FLOP, MAC and parameter budgets for PyTorch models.

The library (``count``, ``FlopCounter``, ``Measurement``, formula registration)
is usable without pytest. Importing this package is cheap: torch is imported
only when a name that needs it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .units import format_quantity, parse_quantity

__version__ = "0.1.0"

__all__ = [
    "count",
    "FlopCounter",
    "Measurement",
    "UncountedOpsError",
    "ComputeFreeError",
    "FormulaError",
    "FlopsFixture",
    "DEFAULT_REGISTRY",
    "register_module_formula",
    "register_op_formula",
    "register_zero_cost",
    "Registry",
    "parse_quantity",
    "format_quantity",
    "__version__",
]

_LAZY = {
    "count": "counting.measure",
    "FlopCounter": "counting.counter",
    "UncountedOpsError": "counting.counter",
    "ComputeFreeError": "counting.counter",
    "FormulaError": "counting.counter",
    "FlopsFixture": "plugin.fixture",
    "DEFAULT_REGISTRY": "counting.registry",
    "Measurement": "counting.measurement",
    "register_module_formula": "counting.registry",
    "register_op_formula": "counting.registry",
    "register_zero_cost": "counting.registry",
    "Registry": "counting.registry",
}

if TYPE_CHECKING:  # pragma: no cover
    from .counting.counter import ComputeFreeError, FlopCounter, FormulaError, UncountedOpsError
    from .counting.measure import count
    from .counting.measurement import Measurement
    from .counting.registry import (DEFAULT_REGISTRY, Registry, register_module_formula, register_op_formula,
                                    register_zero_cost)
    from .plugin.fixture import FlopsFixture


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_flops' has no attribute {name!r}")
    import importlib

    try:
        imported = importlib.import_module(f".{module}", __name__)
    except AttributeError as exc:
        # ``from pytest_flops import count`` would turn an AttributeError raised here into
        # "ImportError: cannot import name 'count'", hiding the cause: name it instead.
        raise ImportError(f"importing pytest_flops.{name} failed: pytest_flops.{module} raised "
                          f"AttributeError: {exc}") from exc
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
