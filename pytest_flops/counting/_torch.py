"""Every private torch API the counting core uses, one line each on what it is for.

Nothing else under ``counting/`` reaches into ``torch._C`` or other private
names; when torch renames one, this is the one file to change.
"""

from __future__ import annotations

from typing import Any

import torch
# The mode of ``with torch.device(...)`` and ``torch.set_default_device``: it only fills in the device of factory
# calls, so a call's ops under it are those of the same call without it (a transparent mode for the counter).
from torch.utils._device import DeviceContext

__all__ = [
    "current_autograd_node", "sequence_nr", "dispatch_stack_len", "dispatch_stack_at", "push_dispatch",
    "pop_dispatch", "function_stack_len", "function_stack_at", "push_function", "pop_function",
    "has_composite_kernel", "any_autocast", "DeviceContext", "sdp_switches", "backend_switches", "DYNAMIC_TAGS",
    "engine_run_backward", "functorch_active", "autograd_engine_call", "set_autograd_engine_call",
]

#: The autograd node running now (None in forward): a backward op is charged to the module that created it.
current_autograd_node = torch._C._current_autograd_node
#: The sequence number the next autograd node made on this thread gets: the bounds of the nodes a module call
#: or a function call makes (backward attribution; the backward replay of backward.py).
sequence_nr = torch.autograd._get_sequence_nr
#: How many dispatch modes this thread has pushed: to pop ours only when it is on top.
dispatch_stack_len = torch._C._len_torch_dispatch_stack
#: The dispatch mode at a given depth of this thread's stack: to check that the top one is ours.
dispatch_stack_at = torch._C._get_dispatch_stack_at
#: Push a dispatch mode without a ``with`` block: for the length of one function call, or a worker thread's.
push_dispatch = torch._C._push_on_torch_dispatch_stack
#: Pop this thread's top dispatch mode (the argument selects an infra mode; None: a user mode).
pop_dispatch = torch._C._pop_torch_dispatch_stack
#: How many torch-function modes this thread has pushed: to pop ours only when it is on top.
function_stack_len = torch._C._len_torch_function_stack
#: The torch-function mode at a given depth of this thread's stack.
function_stack_at = torch._C._get_function_stack_at
#: Push a torch-function mode for a worker thread's module call (a ``with`` block cannot span hooks).
push_function = torch._C._push_on_torch_function_stack
#: Pop this thread's top torch-function mode.
pop_function = torch._C._pop_torch_function_stack
#: The switches that choose the kernel of ``F.scaled_dot_product_attention`` (``torch.nn.attention.sdpa_kernel``,
#: ``torch.backends.cuda.enable_*_sdp``), each where this torch has it: the kernel chosen is the op that runs.
_SDP_SWITCHES = tuple(getattr(torch._C, name) for name in (
    "_get_flash_sdp_enabled", "_get_mem_efficient_sdp_enabled", "_get_math_sdp_enabled", "_get_cudnn_sdp_enabled",
    "_get_overrideable_sdp_enabled", "_get_fa3_sdp_enabled") if hasattr(torch._C, name))
_sdp_order = getattr(torch._C, "_get_sdp_priority_order", None)  # torch 2.6 on: the order they are tried in


def sdp_switches() -> tuple:
    """The state of the attention-kernel switches, as a key."""
    flags = tuple(get() for get in _SDP_SWITCHES)
    return flags + (tuple(_sdp_order()),) if _sdp_order is not None else flags


_cudnn_enabled, _mkldnn_enabled = torch._C._get_cudnn_enabled, torch._C._get_mkldnn_enabled


def backend_switches() -> tuple:
    """Whether cuDNN and oneDNN may be used, as a key: the decompositions of batch norm, instance norm, RNNs,
    grid sampling and CTC loss pick their backend's op by them (``cudnn_batch_norm`` or ``native_batch_norm``)."""
    return (_cudnn_enabled(), _mkldnn_enabled())


#: Whether autocast is on for any device: it changes the ops a function runs, so it is part of a call's signature.
any_autocast = torch._C._is_any_autocast_enabled
#: The autograd engine call at the end of ``torch.autograd.backward`` (arguments as ``run_backward``'s): the
#: counter runs a replayed backward through it with its function mode pushed (``backward.py``).
engine_run_backward = getattr(torch.autograd.graph, "_engine_run_backward", None)


def autograd_engine_call() -> Any:
    """``torch.autograd``'s name for that call, which ``torch.autograd.backward`` looks up when it runs: on torch
    before 2.10, where no function mode sees that function, the counter wraps it while it counts."""
    return torch.autograd._engine_run_backward  # type: ignore[attr-defined]


def set_autograd_engine_call(fn: Any) -> None:
    """Put ``fn`` (the counter's wrapper, or torch's own function back) under that name."""
    torch.autograd._engine_run_backward = fn  # type: ignore[attr-defined]


#: Whether a functorch transform is active: ``backward()`` refuses to run inside one, so no replay either.
functorch_active = torch._C._are_functorch_transforms_active
#: Tags of ops whose output shape or value depends on tensor values: a call that ran one is never replayed.
DYNAMIC_TAGS = frozenset(getattr(torch.Tag, name) for name in ("dynamic_output_shape", "data_dependent_output")
                         if hasattr(torch.Tag, name))


def has_composite_kernel(func: Any) -> bool:
    """Whether an op decomposes into other ops above autograd (``CompositeImplicitAutograd``)."""
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"))
    except Exception:  # pragma: no cover - an op torch cannot look up by name
        return False


def pop_dispatch_if_top(mode: Any) -> bool:
    """Pop ``mode`` if it is on top of this thread's dispatch stack; whether it was."""
    n = dispatch_stack_len()
    if n and dispatch_stack_at(n - 1) is mode:
        pop_dispatch(None)
        return True
    return False


def pop_function_if_top(mode: Any) -> bool:
    """Pop ``mode`` if it is on top of this thread's torch-function stack; whether it was."""
    n = function_stack_len()
    if n and function_stack_at(n - 1) is mode:
        pop_function()
        return True
    return False


__all__ += ["pop_dispatch_if_top", "pop_function_if_top"]
