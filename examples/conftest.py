"""Formulas for the layers the counter cannot see into, for every test in this folder."""

from __future__ import annotations

import pytest

from models import CausalSelfAttention


def attention_flops(module: CausalSelfAttention, inputs: tuple, output: object) -> int:
    """The whole layer: QKV and output projections plus the attention itself.

    A module formula replaces everything run inside the module, so it counts
    the projections too. Like the built-in attention formula, it charges the
    full score matrix (2·B·S·S·D for Q·Kᵀ and again for P·V), causal or not.
    """
    (x,) = inputs
    b, s, d = x.shape
    projections = 2 * b * s * d * (3 * d) + 2 * b * s * d * d
    attention = 4 * b * s * s * d
    return projections + attention


@pytest.hookimpl(optionalhook=True)  # the examples still run with -p no:flops or without pytest-flops
def pytest_flops_register_formulas(registry):
    registry.register_module_formula(CausalSelfAttention, attention_flops, category="attention")
