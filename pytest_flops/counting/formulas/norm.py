"""Normalisation layers: batch, layer, group, instance, RMS and weight norm (category ``norm``).

Counted only with ``ops="all"``. Per element of the input (see ``docs/flops.md``):

* a norm that computes its statistics (layer norm, group norm, batch norm in
  training, instance norm — which runs as batch norm over ``N·C`` channels)
  costs 3 FLOPs — mean, variance, normalise ``(x − μ)·rstd`` — plus 1 for the
  scale (``weight``) and 1 for the shift (``bias``) when present: 5 for the
  usual affine layer (``LAYER_NORM_FLOPS_PER_ELEMENT``);
* RMS norm costs 2 — mean of squares, normalise — plus 1 for the scale;
* batch norm with running statistics (inference) folds statistics and
  affine parameters into one per-channel multiply-add: 2 FLOPs;
* backward of any norm costs 2 × its forward (input, weight and bias
  gradients together, whatever ``output_mask`` asks for).

Per-row or per-channel work (``rsqrt(var + eps)``, running-stat updates) is
O(rows), not O(elements), and is not counted.
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import DEFAULT_REGISTRY
from . import names

aten = names.aten  # ops by name: absent ones (newer torch) are skipped
op = DEFAULT_REGISTRY.op

#: FLOPs per element to normalise with computed statistics (mean, variance, normalise).
NORMALIZE_FLOPS_PER_ELEMENT = 3
#: FLOPs per element of an affine layer norm: normalise (3) + scale (1) + shift (1).
LAYER_NORM_FLOPS_PER_ELEMENT = 5
#: FLOPs per element of RMS normalisation without scale (mean of squares, normalise).
RMS_NORM_FLOPS_PER_ELEMENT = 2
#: FLOPs per element of batch norm with running statistics (one folded multiply-add).
BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT = 2
#: Backward of a norm costs this many times its forward.
NORM_BACKWARD_FACTOR = 2


def _present(x: Any) -> int:
    return 0 if x is None else 1


def _with_stats(x: Any, weight: Any, bias: Any) -> int:
    return (NORMALIZE_FLOPS_PER_ELEMENT + _present(weight) + _present(bias)) * x.numel()


def _training_flag(args: tuple, kwargs: dict, default: bool = True) -> bool:
    """The ``training`` bool of a batch-norm op: its first bool argument after the tensors."""
    if "training" in kwargs:
        return bool(kwargs["training"])
    for a in args:
        if isinstance(a, bool):
            return a
    return default


# -- batch norm ---------------------------------------------------------------------
@op(aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
    aten.cudnn_batch_norm, aten.miopen_batch_norm, aten.batch_norm, aten._batch_norm_impl_index,
    category="norm")
def batch_norm_flop(x: Any, weight: Any = None, bias: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Training: numel(x) × (3 + [weight] + [bias]) (5 when affine). With running stats (``training=False``):
    numel(x) × 2."""
    if _training_flag(args, kwargs):
        return _with_stats(x, weight, bias)
    return BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT * x.numel()


@op(aten._batch_norm_with_update, aten._batch_norm_with_update_functional, category="norm")
def batch_norm_with_update_flop(x: Any, weight: Any = None, bias: Any = None, *args: Any, out: Any = None,
                                **kwargs: Any) -> int:
    """Training batch norm: numel(x) × (3 + [weight] + [bias])."""
    return _with_stats(x, weight, bias)


@op(aten._native_batch_norm_legit_no_training, aten._batch_norm_no_update, category="norm")
def batch_norm_inference_flop(x: Any, weight: Any = None, bias: Any = None, running_mean: Any = None, *args: Any,
                              out: Any = None, **kwargs: Any) -> int:
    """Batch norm with running statistics: numel(x) × 2 (stats and affine folded into one multiply-add per
    element). Without running statistics it normalises with batch statistics, as in training."""
    if running_mean is None:
        return _with_stats(x, weight, bias)
    return BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT * x.numel()


@op(aten.native_batch_norm_backward, aten.batch_norm_backward, category="norm")
def batch_norm_backward_flop(grad_out: Any, x: Any, weight: Any = None, *args: Any, out: Any = None,
                             **kwargs: Any) -> int:
    """2 × forward: numel(x) × 2·(3 + 2·[weight]) in training (bias assumed with weight), numel(x) × 4 with
    running statistics."""
    training = _training_flag(args, kwargs)
    if not training and len(args) > 0 and args[0] is None:  # batch_norm_backward(update=False) without stats
        training = True
    if training:
        return NORM_BACKWARD_FACTOR * _with_stats(x, weight, weight)
    return NORM_BACKWARD_FACTOR * BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT * x.numel()


@op(aten.cudnn_batch_norm_backward, aten.miopen_batch_norm_backward, category="norm")
def cudnn_batch_norm_backward_flop(x: Any, grad_output: Any, weight: Any = None, *args: Any, out: Any = None,
                                   **kwargs: Any) -> int:
    """Training batch-norm backward (cuDNN / MIOpen): numel(x) × 2·(3 + 2·[weight])."""
    return NORM_BACKWARD_FACTOR * _with_stats(x, weight, weight)


# SyncBatchNorm's pieces (statistics, per-rank reduction, element-wise apply).
@op(aten.batch_norm_stats, aten.batch_norm_update_stats, category="norm")
def batch_norm_stats_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 2: mean and variance (SyncBatchNorm's statistics pass)."""
    return 2 * x.numel()


@op(aten.batch_norm_elemt, category="norm")
def batch_norm_elemt_flop(x: Any, weight: Any = None, bias: Any = None, *args: Any, out: Any = None,
                          **kwargs: Any) -> int:
    """numel(x) × (1 + [weight] + [bias]): normalise, scale, shift (SyncBatchNorm's apply pass)."""
    return (1 + _present(weight) + _present(bias)) * x.numel()


@op(aten.batch_norm_gather_stats, aten.batch_norm_gather_stats_with_counts, category="norm")
def batch_norm_gather_stats_flop(x: Any, mean: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(per-rank means) × 4: combine every rank's mean and variance (O(ranks·C))."""
    return 4 * mean.numel()


@op(aten.batch_norm_backward_reduce, category="norm")
def batch_norm_backward_reduce_flop(grad_out: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 4: 2 × the statistics pass (Σ g and Σ g·(x − μ))."""
    return NORM_BACKWARD_FACTOR * 2 * x.numel()


@op(aten.batch_norm_backward_elemt, category="norm")
def batch_norm_backward_elemt_flop(grad_out: Any, x: Any, mean: Any = None, invstd: Any = None, weight: Any = None,
                                   *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 2·(1 + 2·[weight]): 2 × the apply pass."""
    return NORM_BACKWARD_FACTOR * (1 + 2 * _present(weight)) * x.numel()


# -- layer, group, RMS norm --------------------------------------------------------
@op(aten.native_layer_norm, aten.layer_norm, category="norm")
def layer_norm_flop(x: Any, normalized_shape: Any = None, weight: Any = None, bias: Any = None, *args: Any,
                    out: Any = None, **kwargs: Any) -> int:
    """numel(x) × (3 + [weight] + [bias]): mean, variance, normalise, scale, shift — 5 when affine."""
    return _with_stats(x, weight, bias)


@op(aten.native_layer_norm_backward, category="norm")
def layer_norm_backward_flop(grad_out: Any, x: Any, normalized_shape: Any = None, mean: Any = None, rstd: Any = None,
                             weight: Any = None, bias: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 × forward: numel(x) × 2·(3 + [weight] + [bias])."""
    return NORM_BACKWARD_FACTOR * _with_stats(x, weight, bias)


@op(aten.native_group_norm, aten.group_norm, category="norm")
def group_norm_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × (3 + [weight] + [bias]), as layer norm over each group."""
    # native_group_norm(input, weight, bias, N, C, HxW, group, eps); group_norm(input, num_groups, weight, bias, eps)
    tensors = [a for a in args[:3] if isinstance(a, torch.Tensor) or a is None]
    if args and not isinstance(args[0], (torch.Tensor, type(None))):  # group_norm: num_groups first
        tensors = list(args[1:3])
    weight = tensors[0] if len(tensors) > 0 else kwargs.get("weight")
    bias = tensors[1] if len(tensors) > 1 else kwargs.get("bias")
    return _with_stats(x, weight, bias)


@op(aten.native_group_norm_backward, category="norm")
def group_norm_backward_flop(grad_out: Any, x: Any, mean: Any = None, rstd: Any = None, weight: Any = None,
                             *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 × forward: numel(x) × 2·(3 + 2·[weight]) (bias assumed with weight)."""
    return NORM_BACKWARD_FACTOR * _with_stats(x, weight, weight)


@op(aten._fused_rms_norm, aten.rms_norm, category="norm")
def rms_norm_flop(x: Any, normalized_shape: Any = None, weight: Any = None, *args: Any, out: Any = None,
                  **kwargs: Any) -> int:
    """numel(x) × (2 + [weight]): mean of squares, normalise, scale. (On CPU ``nn.RMSNorm`` usually runs
    decomposed — pow, mean, add, rsqrt, mul — and those ops are counted instead.)"""
    return (RMS_NORM_FLOPS_PER_ELEMENT + _present(weight)) * x.numel()


@op(aten._fused_rms_norm_backward, category="norm")
def rms_norm_backward_flop(grad_out: Any, x: Any, normalized_shape: Any = None, rstd: Any = None, weight: Any = None,
                           *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 × forward: numel(x) × 2·(2 + [weight])."""
    return NORM_BACKWARD_FACTOR * (RMS_NORM_FLOPS_PER_ELEMENT + _present(weight)) * x.numel()


# -- weight norm --------------------------------------------------------------------
@op(aten._weight_norm_interface, category="norm")
def weight_norm_flop(v: Any, g: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(v) × 3 + numel(g) × 2: ‖v‖ (square-accumulate 2 per element, sqrt per slice), g/‖v‖ per slice,
    then one multiply per element."""
    return 3 * v.numel() + 2 * g.numel()


@op(aten._weight_norm_interface_backward, category="norm")
def weight_norm_backward_flop(grad_w: Any, v: Any, g: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 × forward."""
    return NORM_BACKWARD_FACTOR * (3 * v.numel() + 2 * g.numel())
