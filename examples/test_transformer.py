"""A stack of torch.nn.TransformerEncoder layers, in inference mode."""

import pytest
import torch
from torch import nn


@pytest.mark.max_flops("3.6G")
def test_encoder_inference(flops):
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False).eval()
    x = torch.randn(4, 128, 256)  # batch 4, sequence 128
    with torch.no_grad():
        m = flops(encoder, x)
    # Each layer costs the same; attention's share grows with the sequence length.
    assert m.by_module["layers.0"] == m.flops // 4
