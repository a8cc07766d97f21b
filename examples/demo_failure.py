"""What a failure looks like. Not collected by ``pytest examples`` (the name
does not match ``test_*.py``); run it on purpose::

    pytest examples/demo_failure.py

The budget was set for a feed-forward width of 1024; a change to 4096
pushed the encoder past it. The message gives the measured value, the
budget, the excess and the modules that spend the most.
"""

import pytest
import torch
from torch import nn


@pytest.mark.max_flops("3.6G")
def test_encoder_after_widening_the_ffn(flops):
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=4096, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
    flops(encoder, torch.randn(4, 128, 256))
