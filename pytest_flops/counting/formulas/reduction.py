"""Reductions, losses, pooling and resampling (categories ``reduction``, ``pooling``, ``upsample``).

Counted only with ``ops="all"``. Conventions (see ``docs/flops.md``):

* a reduction costs 1 FLOP per *input* element (n − 1 adds or comparisons,
  rounded to n); ``mean`` adds one divide per output element; variance is
  4 per input element (sum for the mean, subtract, square-and-accumulate as
  a multiply-add);
* losses cost their element-wise work per input element plus 1 for the
  reduction when they reduce;
* max pooling costs K − 1 comparisons per output element and average pooling
  K (K − 1 adds and a divide), K = the window's elements; adaptive pooling
  uses each output's real window; max-pool backward is a scatter (free),
  average-pool backward costs what its forward costs;
* interpolation with T taps per output element (linear: 2 per spatial
  dimension, cubic: 4) costs 2·T − 1 (T multiplies, T − 1 adds); nearest is
  free forward and 1 add per gradient element backward; backward costs what
  forward costs.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..registry import DEFAULT_REGISTRY
from . import names
from .pointwise import first_tensor, out_numel

aten = names.aten  # ops by name: absent ones (newer torch) are skipped
op = DEFAULT_REGISTRY.op


def _ops(*names: str) -> list:
    return [getattr(aten, n) for n in names if aten.has(n)]


def _is_reduce(reduction: Any) -> bool:
    """``reduction`` of a loss: 0 = none, 1 = mean, 2 = sum."""
    return reduction is None or reduction != 0


# -- reductions -----------------------------------------------------------------------
@op(*_ops("sum", "nansum", "prod", "amax", "amin", "argmax", "argmin", "cumsum", "cumsum_", "cumprod", "cumprod_",
          "cummax", "cummin", "count_nonzero", "_cummax_helper", "_cummin_helper"), category="reduction")
def reduce_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 1: one add, multiply or comparison per input element."""
    return x.numel()


@op(*_ops("histc", "bincount", "histogram", "_histogramdd_from_bin_cts", "_histogramdd_from_bin_tensors"),
    category="reduction")
def histogram_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 1: one add into the bin of each input element (finding the bin is a comparison or an
    index computation, as in ``searchsorted``, not counted). MoE routing counts tokens per expert this way."""
    return x.numel()


@op(*_ops("mean", "nanmean"), category="reduction")
def mean_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) + numel(out): the sum, then one divide per output."""
    return x.numel() + out_numel(out, x)


@op(aten.max, aten.min, category="reduction")
def max_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> Any:
    """Reduction (``max(x)``, ``max(x, dim)``): numel(input) comparisons. Element-wise ``max(x, y)``:
    numel(out), charged to ``pointwise``."""
    if args and isinstance(args[0], torch.Tensor):
        return {"pointwise": out_numel(out, x, args[0])}
    return x.numel()


@op(aten.aminmax, category="reduction")
def aminmax_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 2: a min and a max comparison per element."""
    return 2 * x.numel()


#: FLOPs per input element of a variance: sum for the mean (1), subtract (1), square-and-accumulate (2).
VAR_FLOPS_PER_ELEMENT = 4


@op(*_ops("var", "var_mean"), category="reduction")
def var_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 4 + numel(out): mean, subtract, square-and-accumulate, then divide per output."""
    return VAR_FLOPS_PER_ELEMENT * x.numel() + out_numel(out, x)


@op(*_ops("std", "std_mean"), category="reduction")
def std_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 4 + numel(out) × 2: the variance, then a square root per output."""
    return VAR_FLOPS_PER_ELEMENT * x.numel() + 2 * out_numel(out, x)


@op(*_ops("norm", "linalg_vector_norm", "native_norm", "frobenius_norm", "dist"), category="reduction")
def norm_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 2 + numel(out): |x|ᵖ-and-accumulate per element (a multiply-add for p = 2), a root per
    output (``dist`` subtracts first: +numel(input))."""
    extra = x.numel() if args and isinstance(args[0], torch.Tensor) else 0  # dist(x, y)
    return 2 * x.numel() + extra + out_numel(out, x)


@op(*_ops("renorm", "renorm_"), category="reduction")
def renorm_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 3: the norm of each slice (2 per element), then a rescale (1 per element)."""
    return 3 * x.numel()


@op(aten._foreach_norm, category="reduction")
def foreach_norm_flop(tensors: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ (numel × 2 + 1) over the list: as ``linalg_vector_norm`` per tensor."""
    return sum(2 * t.numel() + 1 for t in tensors)


@op(aten.logsumexp, category="reduction")
def logsumexp_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 4 + numel(out) × 2: max, subtract, exp, sum per element; log and add back per output."""
    return 4 * x.numel() + 2 * out_numel(out, x)


@op(aten.logcumsumexp, category="reduction")
def logcumsumexp_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 4: a running log-add-exp per element."""
    return 4 * x.numel()


@op(aten.trace, category="reduction")
def trace_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """min(rows, cols) adds along the diagonal."""
    return min(x.shape)


@op(aten._cdist_forward, category="reduction")
def cdist_flop(x1: Any, x2: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(out) × (3·M + 1): per pair and feature a subtract and |·|ᵖ-and-accumulate (2), a root per pair."""
    m = x1.shape[-1]
    return out_numel(out) * (3 * m + 1)


@op(aten._cdist_backward, category="reduction")
def cdist_backward_flop(grad: Any, x1: Any, x2: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 × forward."""
    return 2 * grad.numel() * (3 * x1.shape[-1] + 1)


# -- losses (category reduction) -----------------------------------------------------
def _loss(per_element: int, x: Any, reduction: Any, extra: int = 0) -> int:
    return (per_element + extra + (1 if _is_reduce(reduction) else 0)) * x.numel()


@op(aten.mse_loss, category="reduction")
def mse_loss_flop(x: Any, target: Any, reduction: Any = 1, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (2 + 1 if reduced): subtract, square, (accumulate)."""
    return _loss(2, x, reduction)


@op(aten.mse_loss_backward, category="reduction")
def mse_loss_backward_flop(grad: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 3: 2·(x − t)·g (÷ n folded into the scale)."""
    return 3 * x.numel()


@op(aten.l1_loss, category="reduction")
def l1_loss_flop(x: Any, target: Any, reduction: Any = 1, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (2 + 1 if reduced): subtract, abs, (accumulate). (Usually decomposed into those ops.)"""
    return _loss(2, x, reduction)


@op(aten.smooth_l1_loss, aten.huber_loss, category="reduction")
def huber_loss_flop(x: Any, target: Any, reduction: Any = 1, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (4 + 1 if reduced): subtract, abs, compare, then ½d²/β or |d| − ½β."""
    return _loss(4, x, reduction)


@op(aten.smooth_l1_loss_backward, aten.huber_loss_backward, aten.soft_margin_loss_backward, category="reduction")
def huber_loss_backward_flop(grad: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 3: subtract, clamp (or scale), multiply by the gradient."""
    return 3 * x.numel()


@op(aten.binary_cross_entropy, category="reduction")
def bce_flop(x: Any, target: Any, weight: Any = None, reduction: Any = 1, *args: Any, out: Any = None,
             **kwargs: Any) -> int:
    """numel(input) × (7 + [weight] + 1 if reduced): −(t·log x + (1 − t)·log(1 − x))."""
    return _loss(7, x, reduction, 1 if weight is not None else 0)


@op(aten.binary_cross_entropy_backward, category="reduction")
def bce_backward_flop(grad: Any, x: Any, target: Any = None, weight: Any = None, *args: Any, out: Any = None,
                      **kwargs: Any) -> int:
    """numel(input) × (5 + [weight]): g·(x − t)/(x·(1 − x))."""
    return (5 + (1 if weight is not None else 0)) * x.numel()


@op(aten.binary_cross_entropy_with_logits, category="reduction")
def bce_logits_flop(x: Any, target: Any, weight: Any = None, pos_weight: Any = None, reduction: Any = 1,
                    *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (6 + [weight] + 2·[pos_weight] + 1 if reduced): (1 − t)·x − log σ(x) in its stable
    form."""
    extra = (1 if weight is not None else 0) + (2 if pos_weight is not None else 0)
    return _loss(6, x, reduction, extra)


@op(aten.soft_margin_loss, category="reduction")
def soft_margin_loss_flop(x: Any, target: Any, reduction: Any = 1, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (5 + 1 if reduced): log(1 + exp(−t·x))."""
    return _loss(5, x, reduction)


@op(aten.kl_div, category="reduction")
def kl_div_flop(x: Any, target: Any, reduction: Any = 1, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × (3 + 1 if reduced): t·(log t − x). (Usually decomposed.)"""
    return _loss(3, x, reduction)


@op(aten.nll_loss_forward, aten.nll_loss2d_forward, aten.nll_loss, aten.nll_loss2d, category="reduction")
def nll_loss_flop(x: Any, target: Any, weight: Any = None, reduction: Any = 1, *args: Any, out: Any = None,
                  **kwargs: Any) -> int:
    """numel(target) × (1 + [weight]): pick −x[target] (free), weight it, accumulate."""
    return (1 + (1 if weight is not None else 0)) * target.numel()


@op(aten.nll_loss_backward, aten.nll_loss2d_backward, category="reduction")
def nll_loss_backward_flop(grad: Any, x: Any, target: Any, weight: Any = None, *args: Any, out: Any = None,
                           **kwargs: Any) -> int:
    """numel(target) × (1 + [weight]): scatter −g (÷ total weight) at each target."""
    return (1 + (1 if weight is not None else 0)) * target.numel()


@op(*_ops("multi_margin_loss", "multilabel_margin_loss_forward"), category="reduction")
def margin_loss_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 4: margin − x[y] + x[i], clamp, accumulate per class."""
    return 4 * x.numel()


@op(*_ops("multi_margin_loss_backward", "multilabel_margin_loss_backward"), category="reduction")
def margin_loss_backward_flop(grad: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(input) × 3: compare, scale, accumulate."""
    return 3 * x.numel()


# -- pooling -----------------------------------------------------------------------------
def _window(kernel: Any, dims: int) -> int:
    """Elements of a pooling window (``kernel_size`` as an int, a 1-element list or one per dimension)."""
    if isinstance(kernel, int):
        return kernel ** dims
    kernel = list(kernel)
    if len(kernel) == 1:
        return int(kernel[0]) ** dims
    return math.prod(int(k) for k in kernel[-dims:])


def _max_pool(dims: int) -> Any:
    def formula(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return out_numel(out) * (_window(kernel_size, dims) - 1)

    formula.__name__ = formula.__qualname__ = f"max_pool{dims}d_flop"
    formula.__doc__ = f"numel(out) × (K − 1): comparisons over each K-element window ({dims}-d)."
    return formula


def _avg_pool(dims: int) -> Any:
    def formula(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return out_numel(out) * _window(kernel_size, dims)

    formula.__name__ = formula.__qualname__ = f"avg_pool{dims}d_flop"
    formula.__doc__ = f"numel(out) × K: K − 1 adds and a divide per K-element window ({dims}-d)."
    return formula


def _avg_pool_backward(dims: int) -> Any:
    def formula(grad_output: Any, x: Any, kernel_size: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return grad_output.numel() * _window(kernel_size, dims)

    formula.__name__ = formula.__qualname__ = f"avg_pool{dims}d_backward_flop"
    formula.__doc__ = f"numel(grad_output) × K: as forward (divide, then add into K inputs) ({dims}-d)."
    return formula


op(*_ops("max_pool1d", "max_pool1d_with_indices", "quantized_max_pool1d"), category="pooling")(_max_pool(1))
op(*_ops("max_pool2d", "max_pool2d_with_indices", "mkldnn_max_pool2d", "quantized_max_pool2d"),
   category="pooling")(_max_pool(2))
op(*_ops("max_pool3d", "max_pool3d_with_indices", "mkldnn_max_pool3d"), category="pooling")(_max_pool(3))
op(*_ops("fractional_max_pool2d"), category="pooling")(_max_pool(2))
op(*_ops("fractional_max_pool3d"), category="pooling")(_max_pool(3))
op(*_ops("avg_pool1d"), category="pooling")(_avg_pool(1))
op(*_ops("avg_pool2d"), category="pooling")(_avg_pool(2))
op(*_ops("avg_pool3d"), category="pooling")(_avg_pool(3))
op(*_ops("avg_pool2d_backward"), category="pooling")(_avg_pool_backward(2))
op(*_ops("avg_pool3d_backward"), category="pooling")(_avg_pool_backward(3))


def adaptive_window_elements(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> int:
    """Σ over output positions of the window's elements, for PyTorch's adaptive windows
    [floor(i·in/out), ceil((i+1)·in/out)) — separable, so a product over dimensions."""
    total = 1
    for n_in, n_out in zip(in_sizes, out_sizes):
        n_in, n_out = int(n_in), int(n_out)
        if n_out <= 0:
            return 0
        total *= sum(-(-((i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))
    return total


def _adaptive_total(x: Any, out_shape: Sequence[int], dims: int) -> tuple[int, int]:
    """(window elements summed over all outputs, number of outputs)."""
    in_spatial = list(x.shape[-dims:])
    out_spatial = list(out_shape[-dims:])
    lead = math.prod(int(s) for s in x.shape[:-dims])
    return lead * adaptive_window_elements(in_spatial, out_spatial), lead * math.prod(int(s) for s in out_spatial)


def _adaptive_avg(dims: int) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        total, _ = _adaptive_total(x, first_tensor(out).shape, dims)
        return total

    formula.__name__ = formula.__qualname__ = f"adaptive_avg_pool{dims}d_flop"
    formula.__doc__ = (f"Σ over outputs of the window's elements: K − 1 adds and a divide per output, with each "
                       f"output's own "
                       f"window [⌊i·in/out⌋, ⌈(i+1)·in/out⌉) per dimension ({dims}-d).")
    return formula


def _adaptive_max(dims: int) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        total, outputs = _adaptive_total(x, first_tensor(out).shape, dims)
        return total - outputs

    formula.__name__ = formula.__qualname__ = f"adaptive_max_pool{dims}d_flop"
    formula.__doc__ = f"Σ over outputs of (window elements − 1) comparisons, adaptive windows as above ({dims}-d)."
    return formula


def _adaptive_avg_backward(dims: int) -> Any:
    def formula(grad_output: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        total, _ = _adaptive_total(x, grad_output.shape, dims)
        return total

    formula.__name__ = formula.__qualname__ = f"adaptive_avg_pool{dims}d_backward_flop"
    formula.__doc__ = f"As forward: divide each output gradient and add it into its window ({dims}-d)."
    return formula


op(*_ops("adaptive_avg_pool1d"), category="pooling")(_adaptive_avg(1))
op(*_ops("_adaptive_avg_pool2d", "adaptive_avg_pool2d", "mkldnn_adaptive_avg_pool2d"),
   category="pooling")(_adaptive_avg(2))
op(*_ops("_adaptive_avg_pool3d", "adaptive_avg_pool3d"), category="pooling")(_adaptive_avg(3))
op(*_ops("adaptive_max_pool1d"), category="pooling")(_adaptive_max(1))
op(*_ops("adaptive_max_pool2d"), category="pooling")(_adaptive_max(2))
op(*_ops("adaptive_max_pool3d"), category="pooling")(_adaptive_max(3))
op(*_ops("_adaptive_avg_pool2d_backward", "mkldnn_adaptive_avg_pool2d_backward"),
   category="pooling")(_adaptive_avg_backward(2))
op(*_ops("_adaptive_avg_pool3d_backward"), category="pooling")(_adaptive_avg_backward(3))


# -- upsampling / interpolation ------------------------------------------------------------
def interpolation_flops(outputs: int, taps: int) -> int:
    """outputs × (2·taps − 1): a multiply per tap and adds between them."""
    return outputs * (2 * taps - 1)


def _interp(taps: int, label: str) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return interpolation_flops(out_numel(out), taps)

    formula.__name__ = formula.__qualname__ = f"{label}_flop"
    formula.__doc__ = f"numel(out) × {2 * taps - 1}: {taps} taps per output element ({label})."
    return formula


def _interp_backward(taps: int, label: str) -> Any:
    def formula(grad_output: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return interpolation_flops(grad_output.numel(), taps)

    formula.__name__ = formula.__qualname__ = f"{label}_backward_flop"
    formula.__doc__ = (f"numel(grad_output) × {2 * taps - 1}: as forward, spreading each gradient over {taps} "
                       f"taps ({label}).")
    return formula


op(aten.upsample_linear1d, category="upsample")(_interp(2, "linear 1-d"))
op(aten.upsample_bilinear2d, category="upsample")(_interp(4, "bilinear"))
op(aten.upsample_trilinear3d, category="upsample")(_interp(8, "trilinear"))
op(aten.upsample_bicubic2d, category="upsample")(_interp(16, "bicubic"))
op(aten.upsample_linear1d_backward, category="upsample")(_interp_backward(2, "linear 1-d"))
op(aten.upsample_bilinear2d_backward, category="upsample")(_interp_backward(4, "bilinear"))
op(aten.upsample_trilinear3d_backward, category="upsample")(_interp_backward(8, "trilinear"))
op(aten.upsample_bicubic2d_backward, category="upsample")(_interp_backward(16, "bicubic"))


def _aa_taps(in_sizes: Sequence[int], out_sizes: Sequence[int], support: int) -> int:
    """Taps of an antialiased filter: per dimension 2·support·max(1, in/out), rounded up."""
    taps = 1
    for n_in, n_out in zip(in_sizes, out_sizes):
        scale = max(1.0, int(n_in) / max(1, int(n_out)))
        taps *= math.ceil(2 * support * scale)
    return taps


_AA_SUPPORT = {"_upsample_bilinear2d_aa": 1, "_upsample_bicubic2d_aa": 2, "_upsample_lanczos2d_aa": 3}


def _interp_aa(support: int, label: str) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        o = first_tensor(out)
        return interpolation_flops(o.numel(), _aa_taps(x.shape[-2:], o.shape[-2:], support))

    formula.__name__ = formula.__qualname__ = f"{label}_aa_flop"
    formula.__doc__ = (f"numel(out) × (2·T − 1), T = Π over H, W of ⌈2·{support}·max(1, in/out)⌉: "
                       f"the {label} "
                       f"filter widened when downsampling (antialias=True).")
    return formula


def _interp_aa_backward(support: int, label: str) -> Any:
    def formula(grad_output: Any, output_size: Any, input_size: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        taps = _aa_taps(list(input_size)[-2:], grad_output.shape[-2:], support)
        return interpolation_flops(grad_output.numel(), taps)

    formula.__name__ = formula.__qualname__ = f"{label}_aa_backward_flop"
    formula.__doc__ = "As forward, per element of grad_output."
    return formula


for _name, _support in _AA_SUPPORT.items():
    _label = _name.split("_")[2][:-2]
    op(*_ops(_name), category="upsample")(_interp_aa(_support, _label))
    op(*_ops(_name + "_backward"), category="upsample")(_interp_aa_backward(_support, _label))


@op(*_ops("upsample_nearest1d_backward", "upsample_nearest2d_backward", "upsample_nearest3d_backward",
          "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward",
          "_upsample_nearest_exact3d_backward"), category="upsample")
def upsample_nearest_backward_flop(grad_output: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(grad_output) × 1: each output gradient is added into the input it copied."""
    return grad_output.numel()


_GRID_TAPS = {0: 4, 1: 0, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic


def _grid_sample(x: Any, grid: Any, outputs: int, interpolation_mode: Any) -> int:
    taps = _GRID_TAPS.get(interpolation_mode if isinstance(interpolation_mode, int) else 0, 4)
    if x.dim() == 5 and taps == 4:  # trilinear
        taps = 8
    return (interpolation_flops(outputs, taps) if taps else 0) + 2 * grid.numel()


@op(aten.grid_sampler_2d, aten.grid_sampler_3d, aten.cudnn_grid_sampler, category="upsample")
def grid_sampler_flop(x: Any, grid: Any, interpolation_mode: Any = 0, *args: Any, out: Any = None,
                      **kwargs: Any) -> int:
    """numel(out) × (2·T − 1) (T = 4 bilinear, 8 trilinear, 16 bicubic; nearest 0) + 2 per grid coordinate
    (unnormalise: multiply-add)."""
    return _grid_sample(x, grid, out_numel(out), interpolation_mode)


@op(aten.grid_sampler_2d_backward, aten.grid_sampler_3d_backward, category="upsample")
def grid_sampler_backward_flop(grad_output: Any, x: Any, grid: Any, interpolation_mode: Any = 0, *args: Any,
                               out: Any = None, **kwargs: Any) -> int:
    """2 × forward: gradients of the input and of the grid."""
    return 2 * _grid_sample(x, grid, grad_output.numel(), interpolation_mode)


@op(aten.cudnn_grid_sampler_backward, category="upsample")
def cudnn_grid_sampler_backward_flop(x: Any, grid: Any, grad_output: Any, *args: Any, out: Any = None,
                                     **kwargs: Any) -> int:
    """2 × forward (bilinear)."""
    return 2 * _grid_sample(x, grid, grad_output.numel(), 0)


# Private twins of public ops: the same work.
op(aten._aminmax, category="reduction")(aminmax_flop)
op(aten._logcumsumexp, category="reduction")(logcumsumexp_flop)
