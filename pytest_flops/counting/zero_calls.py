"""Torch functions whose every op is free under a counter's selection: run without a signature or a trace.

Most calls of an inference forward count nothing under the default ``ops="matmul"``:
norms, activations, additions, pooling, views. The function layer would still
key each one (every tensor's shape, strides, dtype and device) to find a trace
that charges nothing. A function listed here is called directly instead when

* every op it can dispatch (:data:`ZERO_CALLS`, for any input: each device's
  and layout's branch of its decomposition) resolves to a handler that counts
  nothing for this counter's registry and selection (a user's formula for one
  of them, or ``ops="all"`` for a norm, takes the function off the list), and
* at the call, grad mode is off (a call under grad is keyed, so that the
  autograd nodes it makes can be traced to it) and no argument's type
  overrides ``__torch_function__`` (a subclass may run other ops).

The ops of each entry are checked against the ops it dispatches, input by
input, in ``tests/test_zero_calls.py``; an op of a torch release that is not
listed (``getattr`` finds none) is skipped.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .handlers import KNOWN_ZERO, ValueDependent

__all__ = ["ZERO_CALLS", "free_under"]

_T = torch.Tensor
_VIEWS = ("view", "_unsafe_view", "_reshape_alias", "clone", "_mkldnn_reshape")
_BATCH_NORM = ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
               "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_no_update",
               "cudnn_batch_norm", "miopen_batch_norm", "empty", "_to_copy",
               "clone", "select", "mul", "add")  # the last: an empty input's output, scaled and shifted


def _entries() -> dict[Any, tuple[str, ...]]:
    table: list[tuple[tuple[Any, ...], tuple[str, ...]]] = [
        # views and copies
        ((_T.view,), ("view", "detach", "alias")),  # a view as its own dtype: an alias
        ((_T.reshape, torch.reshape), _VIEWS),
        ((_T.flatten, torch.flatten), _VIEWS),
        ((_T.permute, torch.permute), ("permute",)),
        ((_T.transpose, torch.transpose), ("transpose", "_mkldnn_transpose")),
        ((_T.unbind, torch.unbind), ("unbind",)),
        ((_T.contiguous,), ("clone",)),
        ((_T.unsqueeze, torch.unsqueeze), ("unsqueeze",)),
        ((_T.expand,), ("expand",)),
        ((torch.cat,), ("cat",)),
        ((_T.to, _T.float, _T.half, _T.bfloat16), ("_to_copy", "clone", "copy_", "empty_strided", "detach", "alias")),
        ((torch.arange,), ("arange",)),
        ((F.embedding,), ("embedding", "embedding_renorm_", "clone", "detach")),
        # pointwise: free unless ops="all"
        ((F.relu, torch.relu, _T.relu), ("relu", "relu_")),
        ((torch.relu_, _T.relu_), ("relu_",)),
        ((F.gelu,), ("gelu",)),
        ((F.silu,), ("silu", "silu_")),
        ((_T.add, torch.add), ("add",)),  # a mode sees `a + b` and `1 + a` as add, `a += b` as add_
        ((_T.add_,), ("add_",)),
        ((_T.mul, torch.mul), ("mul",)),
        ((_T.mul_,), ("mul_",)),
        ((_T.sub, torch.sub), ("sub",)),
        ((_T.div, torch.div), ("div",)),
        ((F.dropout,), ("native_dropout", "_fused_dropout", "bernoulli", "bernoulli_", "div", "div_", "mul", "mul_",
                        "empty_like", "zeros", "zeros_like", "clone")),
        ((F.softmax, _T.softmax, torch.softmax), ("_softmax", "_safe_softmax", "_to_copy")),
        # norms and pooling: free unless ops="all"
        ((F.batch_norm,), _BATCH_NORM),
        ((F.layer_norm,), ("native_layer_norm", "_to_copy")),
        ((F.max_pool2d,), ("max_pool2d_with_indices", "max_pool2d", "mkldnn_max_pool2d", "quantized_max_pool2d",
                           "_mps_max_pool2d")),
        ((F.adaptive_avg_pool2d,), ("_adaptive_avg_pool2d", "mean", "mkldnn_adaptive_avg_pool2d", "clone",
                                    "as_strided_", "_to_copy")),
    ]
    out: dict[Any, tuple[str, ...]] = {}
    for funcs, ops in table:
        for func in funcs:
            out[func] = ops
    return out


#: Each function, and the names of the aten ops it can dispatch.
ZERO_CALLS: dict[Any, tuple[str, ...]] = _entries()


def free_under(func: Any, handler_of: Callable[[Any], Any]) -> bool:
    """Whether every op ``func`` can dispatch gets a handler that counts nothing (``handler_of(op overload)``)."""
    names = ZERO_CALLS.get(func)
    if names is None:
        return False
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue
        for overload in packet.overloads():
            handler = handler_of(getattr(packet, overload))
            if isinstance(handler, ValueDependent):
                handler = handler.inner  # no trace is kept of a direct call: its values cannot matter
            if handler is not KNOWN_ZERO:
                return False
    return True
