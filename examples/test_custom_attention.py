"""A layer whose kernel the counter cannot see into, counted by the formula in conftest.py."""

import pytest
import torch

from models import CausalSelfAttention


@pytest.mark.max_flops("350M")
def test_fused_attention_layer(flops):
    layer = CausalSelfAttention(dim=256, heads=8)
    m = flops(layer, torch.randn(4, 128, 256))
    assert not m.uncounted  # without the conftest formula: {'examples.fused_causal_attention': 1}
