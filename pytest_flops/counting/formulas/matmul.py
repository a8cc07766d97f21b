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


# In-place variants (``x.addmm_(a, b)``): the same work as the out-of-place op.
op(aten.addmm_, category="matmul")(addmm_flop)
op(aten.baddbmm_, category="matmul")(baddbmm_flop)
op(aten.addbmm_, category="matmul")(addbmm_flop)
op(aten.addmv_, category="matmul")(addmv_flop)


def grouped_mm_flops(a: Any, b: Any) -> int:
    """2·M·K·N of a grouped matmul, from the shapes alone (whatever ``offs`` holds)."""
    if a.dim() == 2 and b.dim() == 3:  # (M, K) rows split over groups × (G, K, N): the MoE expert forward
        return 2 * a.shape[0] * a.shape[1] * b.shape[-1]
    if a.dim() == 3 and b.dim() == 3:  # (G, M, K) × (G, K, N): a batched matmul
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[-1]
    if a.dim() == 2 and b.dim() == 2:  # (M, K) × (K, N) with K split over groups: the weight gradient
        return 2 * a.shape[0] * a.shape[1] * b.shape[-1]
    return 2 * a.shape[1] * a.shape[2] * b.shape[-1]  # (G, M, K) × (K, N) with N split over groups


@op(aten._grouped_mm, aten._scaled_grouped_mm, aten._scaled_grouped_mm_v2, category="matmul")
def grouped_mm_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Grouped matmul (the experts of MoE layers): 2·M·K·N, from shapes alone — 2-D ``(M, K)`` × 3-D
    ``(G, K, N)`` with ``offs`` splitting the rows over groups: 2·M·K·N; 3-D × 3-D (batched): 2·G·M·K·N;
    2-D × 2-D with ``offs`` splitting K (the weight gradient): 2·M·K·N; 3-D × 2-D splitting N: 2·M·K·N."""
    return grouped_mm_flops(a, b)


@op(aten._scaled_mm_v2, aten._weight_int4pack_mm, aten._weight_int4pack_mm_for_cpu,
    aten._weight_int4pack_mm_with_scales_and_zeros, aten._weight_int8pack_mm, aten._dyn_quant_matmul_4bit,
    aten._mixed_dtypes_linear, aten.mkldnn_linear, category="matmul")
def packed_mm_flop(a: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """A product ``a @ W`` whose weight is scaled, packed or quantized (int4/int8, fp8, oneDNN):
    2·numel(out)·K, K = the last dimension of ``a``."""
    return 2 * _numel(_first(out).shape) * a.shape[-1]


if DEFAULT_REGISTRY.lookup_op(aten._scaled_mm) is None:  # torch < 2.5: no formula of its own in flop_counter
    op(aten._scaled_mm, category="matmul")(packed_mm_flop)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


@op(aten._foreach_mm, category="matmul")
def foreach_mm_flop(a: Any, b: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ 2·m·k·n over the pairs of matrices."""
    return sum(2 * x.shape[0] * x.shape[1] * y.shape[-1] for x, y in zip(a, b))


def _conv_variant(transposed: bool, bias_at: int | None, doc: str) -> Any:
    def formula(x: Any, w: Any, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
        output = _first(out)
        flops = {"conv": _fc.conv_flop_count(x.shape, w.shape, output.shape, transposed=transposed)}
        bias = args[bias_at] if bias_at is not None and len(args) > bias_at else kwargs.get("bias")
        if isinstance(bias, torch.Tensor):
            flops["pointwise"] = _numel(output.shape)
        return flops

    formula.__name__ = formula.__qualname__ = ("conv_transpose" if transposed else "conv") + "_variant_flop"
    formula.__doc__ = doc
    return formula


_CONV_DOC = "As ``convolution``: 2·N·C_out·prod(out spatial)·(C_in/groups)·prod(kernel) (+ bias, pointwise)."
_CONV_T_DOC = "As a transposed ``convolution``: 2·N·C_in·prod(in spatial)·(C_out/groups)·prod(kernel) (+ bias)."
# Backend and slow-path convolutions: (input, weight, kernel_size, bias, ...) ...
op(aten._conv_depthwise2d, aten.conv_depthwise3d, aten.slow_conv3d_forward, aten.slow_conv_dilated2d,
   aten.slow_conv_dilated3d, aten.slow_conv3d, category="conv")(_conv_variant(False, 1, _CONV_DOC))
op(aten.slow_conv_transpose2d, aten.slow_conv_transpose3d, category="conv")(_conv_variant(True, 1, _CONV_T_DOC))
# ... (input, weight, bias, ...) ...
op(aten.cudnn_convolution_relu, aten.miopen_convolution, aten.miopen_depthwise_convolution,
   aten.miopen_convolution_relu, aten._mps_convolution, aten._nnpack_spatial_convolution,
   category="conv")(_conv_variant(False, 0, _CONV_DOC))
op(aten.miopen_convolution_transpose, category="conv")(_conv_variant(True, 0, _CONV_T_DOC))
# ... (input, weight, z, alpha, bias, ...) and without a bias.
op(aten.cudnn_convolution_add_relu, aten.miopen_convolution_add_relu, category="conv")(
    _conv_variant(False, 2, _CONV_DOC))
op(aten.cudnn_convolution_transpose, aten._mps_convolution_transpose, category="conv")(
    _conv_variant(True, None, _CONV_T_DOC))


@op(aten.conv_tbc, category="conv")
def conv_tbc_flop(x: Any, w: Any, bias: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> Mapping[str, int]:
    """Time-batch-channel 1-d convolution, input ``(T, B, C_in)``, weight ``(K, C_in, C_out)``:
    2·T_out·B·C_out·C_in·K, + T_out·B·C_out pointwise for the bias."""
    t_out, batch, c_out = out.shape
    return {"conv": 2 * t_out * batch * c_out * w.shape[1] * w.shape[0], "pointwise": t_out * batch * c_out}


def _conv_backward(transposed: bool, grad_first: bool, doc: str) -> Any:
    def formula(*args: Any, out: Any = None, **kwargs: Any) -> int:
        grad, x, w = (args[0], args[1], args[2]) if grad_first else (args[1], args[0], args[2])
        mask = next((a for a in reversed(args) if isinstance(a, (list, tuple)) and len(a) == 3
                     and all(isinstance(m, bool) for m in a)), (True, True, True))
        flops = 0
        if mask[0]:  # input gradient: a convolution of the gradient with the weight
            flops += _fc.conv_flop_count(grad.shape, w.shape, x.shape, transposed=not transposed)
        if mask[1]:  # weight gradient
            flops += _fc.conv_flop_count(x.shape, w.shape, grad.shape, transposed=transposed)
        return flops

    formula.__name__ = formula.__qualname__ = "conv_variant_backward_flop"
    formula.__doc__ = doc
    return formula


_CONV_BACKWARD_DOC = ("As ``convolution_backward``: the input gradient and the weight gradient each cost what the "
                      "forward convolution costs, as ``output_mask`` asks.")
op(aten._slow_conv2d_backward, aten.convolution_backward_overrideable, category="conv")(
    _conv_backward(False, True, _CONV_BACKWARD_DOC))
op(aten.mps_convolution_backward, category="conv")(_conv_backward(False, False, _CONV_BACKWARD_DOC))


@op(aten.linear_backward, aten.mkldnn_linear_backward, category="matmul")
def linear_backward_flop(x: Any, grad: Any, w: Any, mask: Any = (True, True, True), *args: Any, out: Any = None,
                         **kwargs: Any) -> int:
    """``output_mask`` = (input, weight, bias): 2·rows·in·out for each of the input and weight gradients."""
    rows = _numel(x.shape[:-1])
    each = 2 * rows * w.shape[0] * w.shape[1]
    return each * (bool(mask[0]) + bool(mask[1]))


@op(aten.mkldnn_linear_backward_input, category="matmul")
def linear_backward_input_flop(input_size: Any, grad: Any, w: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """The input gradient of a linear layer: 2·rows·in·out."""
    return 2 * _numel(grad.shape[:-1]) * w.shape[0] * w.shape[1]


@op(aten.mkldnn_linear_backward_weights, category="matmul")
def linear_backward_weights_flop(grad: Any, x: Any, w: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """The weight gradient of a linear layer: 2·rows·in·out."""
    return 2 * _numel(x.shape[:-1]) * w.shape[0] * w.shape[1]


@op(aten._trilinear, category="matmul")
def trilinear_flop(i1: Any, i2: Any, i3: Any, expand1: Any, expand2: Any, expand3: Any, *args: Any, out: Any = None,
                   **kwargs: Any) -> int:
    """``Σ i1·i2·i3`` over the summed dimensions (``nn.Bilinear``): 2 per term of the sum (a multiply-add), the
    terms being the elements of the three inputs broadcast together: 2·N·out·in1·in2 for ``bilinear``."""
    shapes = []
    for t, expand in ((i1, expand1), (i2, expand2), (i3, expand3)):
        shape = list(t.shape)
        for d in sorted(expand):
            shape.insert(d, 1)
        shapes.append(shape)
    return 2 * _numel(torch.broadcast_shapes(*shapes))
