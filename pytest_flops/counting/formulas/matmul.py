"""Matrix products, convolutions and recurrent layers (category ``matmul`` / ``conv``).

Where ``torch.utils.flop_counter`` has a formula we use it unchanged, so the
default totals equal ``FlopCounterMode``'s. Bias additions are reported in the
``pointwise`` category (counted only with ``ops="all"``), as PyTorch's counter
leaves them out of the matmul figure.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.utils import flop_counter as _fc

from ..registry import DEFAULT_REGISTRY
from . import names

aten = names.aten  # ops by name: absent ones (newer torch) are skipped
op = DEFAULT_REGISTRY.op


def _numel(shape: Any) -> int:
    return math.prod(shape)


def _from_torch(fn: Any) -> Any:
    def formula(*args: Any, out: Any = None, **kwargs: Any) -> int:
        return fn(*args, out_val=out, **kwargs)

    formula.__name__ = getattr(fn, "__name__", "torch_formula")
    formula.__doc__ = getattr(fn, "__doc__", None)
    return formula


def _category(key: Any) -> str:
    name = str(getattr(key, "__name__", key)).lower()
    if "conv" in name:
        return "conv"
    if "attention" in name or "flex" in name or "varlen" in name:
        return "attention"
    return "matmul"


# Everything PyTorch's own counter knows, with its own formula.
for _key, _fn in list(_fc.flop_registry.items()):
    DEFAULT_REGISTRY.op(_key, category=_category(_key))(_from_torch(_fn))


@op(aten.mm, category="matmul")
def mm_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """``(m, k) @ (k, n)``: 2·m·k·n."""
    m, k = a.shape
    return 2 * m * k * b.shape[-1]


@op(aten.addmm, category="matmul")
def addmm_flop(bias: Any, a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``bias + (m, k) @ (k, n)``: 2·m·k·n matmul, m·n pointwise for the bias."""
    m, k = a.shape
    n = b.shape[-1]
    return {"matmul": 2 * m * k * n, "pointwise": m * n}


@op(aten._addmm_activation, category="matmul")
def addmm_activation_flop(bias: Any, a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``act(bias + a @ b)``: as addmm, plus m·n pointwise for the activation."""
    m, k = a.shape
    n = b.shape[-1]
    return {"matmul": 2 * m * k * n, "pointwise": 2 * m * n}


@op(aten.bmm, category="matmul")
def bmm_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """``(b, m, k) @ (b, k, n)``: 2·b·m·k·n."""
    bs, m, k = a.shape
    return 2 * bs * m * k * b.shape[-1]


@op(aten.baddbmm, category="matmul")
def baddbmm_flop(bias: Any, a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``bias + (b, m, k) @ (b, k, n)``: 2·b·m·k·n matmul, b·m·n pointwise."""
    bs, m, k = a.shape
    n = b.shape[-1]
    return {"matmul": 2 * bs * m * k * n, "pointwise": bs * m * n}


@op(aten.addbmm, category="matmul")
def addbmm_flop(bias: Any, a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``bias + sum_b (b, m, k) @ (b, k, n)``: 2·b·m·k·n (the batch sum is part of the adds)."""
    bs, m, k = a.shape
    n = b.shape[-1]
    return {"matmul": 2 * bs * m * k * n, "pointwise": m * n}


@op(aten.mv, category="matmul")
def mv_flop(a: Any, v: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """``(m, k) @ (k,)``: 2·m·k."""
    return 2 * _numel(a.shape)


@op(aten.addmv, category="matmul")
def addmv_flop(bias: Any, a: Any, v: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``bias + (m, k) @ (k,)``: 2·m·k matmul, m pointwise."""
    return {"matmul": 2 * _numel(a.shape), "pointwise": a.shape[0]}


@op(aten.dot, aten.vdot, category="matmul")
def dot_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """``(k,) · (k,)``: 2·k."""
    return 2 * a.shape[0]


@op(aten._int_mm, category="matmul")
def int_mm_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """int8 ``(m, k) @ (k, n)``: 2·m·k·n."""
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


@op(aten.linear, category="matmul")
def linear_flop(x: Any, w: Any, bias: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """``x @ W.T (+ b)``, any leading dims: 2·rows·in·out (+ rows·out pointwise for the bias).

    Only seen when ``aten.linear`` is not decomposed (it usually is, into addmm/matmul).
    """
    rows = _numel(x.shape[:-1])
    flops = {"matmul": 2 * rows * w.shape[1] * w.shape[0]}
    if bias is not None:
        flops["pointwise"] = rows * w.shape[0]
    return flops


@op(aten.matmul, category="matmul")
def matmul_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Broadcast matmul (only seen when not decomposed): 2·numel(out)·k."""
    k = a.shape[-1]
    return 2 * _numel(out.shape) * k


@op(aten.convolution, aten._convolution, aten.cudnn_convolution, aten._slow_conv2d_forward,
    aten.convolution_overrideable, aten.mkldnn_convolution, category="conv")
def conv_flop(x: Any, w: Any, bias: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """Any convolution (1d/2d/3d, strided, dilated, grouped, transposed).

    2·N·C_out·prod(out spatial)·(C_in/groups)·prod(kernel) for a regular
    convolution; for a transposed one the roles of input and output swap
    (2·N·C_in·prod(in spatial)·(C_out/groups)·prod(kernel)). This is
    ``torch.utils.flop_counter.conv_flop_count``. A bias adds N·C_out·prod(out spatial) pointwise.
    """
    transposed = bool(args[3]) if len(args) > 3 else bool(kwargs.get("transposed", False))
    flops = {"conv": _fc.conv_flop_count(x.shape, w.shape, out.shape, transposed=transposed)}
    if bias is not None:
        flops["pointwise"] = _numel(out.shape)
    return flops


def _rnn_matmul_flops(input: Any, weights: Any, batch_first: bool, batch_sizes: Any = None) -> int:
    """2·steps·batch·Σ numel(2-D weights): every step multiplies the input and the hidden state by their weights."""
    if batch_sizes is not None and len(batch_sizes) > 0:  # packed sequence: Σ batch over steps = rows of input
        rows = int(input.shape[0])
    elif input.dim() == 3:
        rows = int(input.shape[0]) * int(input.shape[1])
    else:
        rows = int(input.shape[0])
    return 2 * rows * sum(_numel(w.shape) for w in weights if w is not None and w.dim() == 2)


@op(aten.mkldnn_rnn_layer, category="matmul")
def mkldnn_rnn_layer_flop(input: Any, w_ih: Any, w_hh: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """One oneDNN LSTM/GRU layer and direction (the CPU fast path): the products of input and hidden state."""
    return _rnn_matmul_flops(input, (w_ih, w_hh), False, args[5] if len(args) > 5 else None)


@op(aten.mkldnn_rnn_layer_backward, category="matmul")
def mkldnn_rnn_layer_backward_flop(input: Any, w1: Any, w2: Any, w3: Any = None, w4: Any = None, hx: Any = None,
                                   *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Backward of one oneDNN RNN layer: the gradient products that autograd needs, as the unfused
    (``meta``) path counts them: weight gradients of weights that require grad, the input gradient if
    the input requires grad, and the hidden-state gradient of every step (the first step's only if the
    initial state requires grad). Without ``requires_grad`` information it is twice the forward."""
    rows = input.numel() // input.shape[-1] if input.dim() else 0
    ih, hh = _numel(w1.shape), _numel(w2.shape)
    batch = hx.numel() // w2.shape[1] if hx is not None and w2.dim() == 2 and w2.shape[1] else 0
    flops = 2 * rows * (ih * w1.requires_grad + hh * w2.requires_grad)  # weight gradients
    flops += 2 * rows * ih * input.requires_grad  # input gradient
    flops += 2 * (rows - batch) * hh + 2 * batch * hh * bool(hx is not None and hx.requires_grad)  # hidden state
    return flops


@op(aten._cudnn_rnn, aten.miopen_rnn, category="matmul")
def cudnn_rnn_flop(input: Any, weights: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """A whole cuDNN/MIOpen RNN (all layers and directions): 2·rows·Σ numel(2-D weights)."""
    batch_sizes = args[12] if len(args) > 12 else kwargs.get("batch_sizes")
    return _rnn_matmul_flops(input, weights, False, batch_sizes)


@op(aten._cudnn_rnn_backward, aten.miopen_rnn_backward, category="matmul")
def cudnn_rnn_backward_flop(input: Any, weights: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Backward of a cuDNN/MIOpen RNN: twice the forward products."""
    return 2 * _rnn_matmul_flops(input, weights, False)
