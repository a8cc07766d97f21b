"""Model code under test: in your project this is your package (``from mypackage.models import ...``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """A small CIFAR-style classifier: three conv blocks and a linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class CharLSTM(nn.Module):
    """A character-level language model: embedding, a 2-layer LSTM, a linear head."""

    def __init__(self, vocab: int = 96, dim: int = 128, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)


# A fused attention kernel that the counter cannot see into, standing in for a
# Triton or CUDA extension: a custom op, with a "fake" implementation so that it
# also runs on meta tensors and with compute=False.
# An explicit schema: torch 2.4 cannot infer one from string annotations (``from __future__ import annotations``).
@torch.library.custom_op("examples::fused_causal_attention", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v) -> Tensor")
def fused_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@fused_causal_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention on top of the fused kernel above.

    Its FLOPs are declared by a formula in ``conftest.py``: without it the
    kernel would be reported as an uncounted op.
    """

    def __init__(self, dim: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = fused_causal_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))
