"""Attention: scaled-dot-product attention in every backend, and PyTorch's fused layers.

Convention (as ``torch.utils.flop_counter``): attention costs the two batched
products ``Q·Kᵀ`` and ``P·V`` over the full score matrix,
4·B·H_q·S_q·S_k·D FLOPs (for D_qk = D_v = D), whether or not the mask is
causal, and with grouped-query attention the key/value heads are broadcast
to the query heads. The softmax over the scores (5 FLOPs per score, see
``docs/flops.md``) counts in the ``softmax`` category with ``ops="all"``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..registry import DEFAULT_REGISTRY, Split
from . import names
from .norm import LAYER_NORM_FLOPS_PER_ELEMENT
from .pointwise import GELU_FLOPS_PER_ELEMENT, RELU_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT

aten = names.aten  # ops by name: absent ones (newer torch) are skipped
op = DEFAULT_REGISTRY.op



def attention_flops(b: int, h: int, s_q: int, s_k: int, d_qk: int, d_v: int) -> int:
    """``Q·Kᵀ`` (2·B·H·S_q·S_k·D_qk) plus ``P·V`` (2·B·H·S_q·S_k·D_v)."""
    return 2 * b * h * s_q * s_k * (d_qk + d_v)


def _sdpa(q: Any, k: Any, v: Any) -> Mapping[str, int]:
    *batch, h, s_q, d_qk = q.shape
    s_k = k.shape[-2]
    d_v = v.shape[-1]
    b = math.prod(batch)
    return {
        "attention": attention_flops(b, h, s_q, s_k, d_qk, d_v),
        "softmax": SOFTMAX_FLOPS_PER_ELEMENT * b * h * s_q * s_k,
    }


@op(aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_fused_attention_overrideable,
    aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_attention_math_for_mps,
    category="attention")
def sdpa_flop(q: Any, k: Any, v: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """Fused SDPA kernels (CPU flash, CUDA flash / memory-efficient / cuDNN, overrideable):
    4·B·H_q·S_q·S_k·D with GQA broadcast; masks and causality do not change the count."""
    return _sdpa(q, k, v)


@op(aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_fused_attention_overrideable_backward,
    aten._scaled_dot_product_efficient_attention_backward, aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention_backward, category="attention")
def sdpa_backward_flop(grad_out: Any, q: Any, k: Any, v: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """SDPA backward: the gradients of P, V, Q and K, 4 batched products over the full score matrix,
    4·B·H_q·S_q·S_k·(D_qk + D_v) (twice the forward, 8·B·H·S_q·S_k·D for equal head dims), with GQA
    broadcast. This is what the math backend (and so ``FlopCounterMode`` on ``meta``) counts; the
    recomputation of the scores inside fused kernels is not counted, so every device gives the same figure."""
    *batch, h, s_q, d_qk = q.shape
    b = math.prod(batch)
    s_k, d_v = k.shape[-2], v.shape[-1]
    return 2 * attention_flops(b, h, s_q, s_k, d_qk, d_v)


def _tokens(x: Any, embed_dim: int) -> tuple[int, int, int]:
    """(batch, seq, tokens) of a [B, S, E] (or [S, E]) tensor."""
    if getattr(x, "is_nested", False):
        raise NotImplementedError("nested-tensor inputs to fused attention layers")
    tokens = x.numel() // embed_dim
    seq = x.shape[-2] if x.dim() >= 2 else 1
    return tokens // seq, seq, tokens


@op(aten._native_multi_head_attention, category="attention")
def native_mha_flop(query: Any, key: Any, value: Any, embed_dim: int, num_heads: int, *args: Any,
                    out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``nn.MultiheadAttention``'s fused inference path: Q/K/V and output projections (matmul),
    the attention products (attention) and its softmax."""
    b, s_q, t_q = _tokens(query, embed_dim)
    _, s_k, t_k = _tokens(key, embed_dim)
    e = embed_dim
    return {
        "matmul": 2 * t_q * e * e + 2 * 2 * t_k * e * e + 2 * t_q * e * e,
        "attention": attention_flops(b, num_heads, s_q, s_k, e // num_heads, e // num_heads),
        "softmax": SOFTMAX_FLOPS_PER_ELEMENT * b * num_heads * s_q * s_k,
        "pointwise": t_q * 3 * e + t_q * e,  # biases of the in and out projections
    }




@op(aten._transformer_encoder_layer_fwd, category="attention")
def transformer_encoder_layer_flop(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any,
                                   proj_weight: Any, proj_bias: Any, use_gelu: bool, norm_first: bool, eps: float,
                                   nw1: Any, nb1: Any, nw2: Any, nb2: Any, ffn_weight_1: Any, *args: Any,
                                   out: Any = None, **kwargs: Any) -> Split:
    """``nn.TransformerEncoderLayer``'s fused inference path: the same work as the unfused layer
    (QKV and output projections, attention, two FFN linears, two layer norms, activation, residuals)."""
    b, s, t = _tokens(src, embed_dim)
    e = embed_dim
    f = ffn_weight_1.shape[0]
    norm = {"norm": LAYER_NORM_FLOPS_PER_ELEMENT * t * e}
    return Split({
        # the layer's own ops: its activation and the two residual additions
        "": {"pointwise": (GELU_FLOPS_PER_ELEMENT if use_gelu else RELU_FLOPS_PER_ELEMENT) * t * f + 2 * t * e},
        "self_attn": {
            "matmul": 2 * t * e * 3 * e + 2 * t * e * e,
            "attention": attention_flops(b, num_heads, s, s, e // num_heads, e // num_heads),
            "softmax": SOFTMAX_FLOPS_PER_ELEMENT * b * num_heads * s * s,
            "pointwise": t * (3 * e + e),  # biases of the in and out projections
        },
        "linear1": {"matmul": 2 * t * e * f, "pointwise": t * f},
        "linear2": {"matmul": 2 * t * f * e, "pointwise": t * e},
        "norm1": norm,
        "norm2": dict(norm),
    }, {"self_attn": "MultiheadAttention", "linear1": "Linear", "linear2": "Linear", "norm1": "LayerNorm",
        "norm2": "LayerNorm"})
