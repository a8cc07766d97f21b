"""A LLaMA-7B-shaped decoder, built on the meta device: a 29 TFLOP budget checked in a second.

On ``meta`` no weights are allocated and no arithmetic runs, yet every op
sees its real shapes, so the counts are exact. Build your own model inside
``with torch.device("meta"):``; here it comes from pytest_flops.zoo.
"""

import pytest
import torch

from pytest_flops import zoo


@pytest.mark.max_flops("30T", params="6.8G")
def test_llama_7b_prefill(flops):
    model = zoo.llama(device="meta")  # vocab 32000, dim 4096, 32 layers, 32 heads
    tokens = torch.zeros(1, 2048, dtype=torch.long, device="meta")  # one 2048-token prompt
    m = flops(model, tokens)
    # Per layer: attention projections 4·2·S·D² plus the score matrix 4·S²·D (full, though causal).
    seq, dim = 2048, 4096
    assert m.by_module["layers.0.self_attn"] == 4 * 2 * seq * dim * dim + 4 * seq * seq * dim
