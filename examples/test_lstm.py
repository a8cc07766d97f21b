"""An LSTM language model."""

import pytest
import torch

from models import CharLSTM


@pytest.mark.max_flops("1G")
def test_char_lstm(flops):
    model = CharLSTM()
    tokens = torch.randint(0, 96, (8, 64))  # batch 8, 64 characters
    m = flops(model, tokens)
    assert m.by_module["lstm"] > 0.9 * m.flops
