"""The signature of a torch call: what a replayed call must share with the call that was traced.

A call's signature is the function, grad mode and autocast, and a key of each
argument: for a plain tensor its shape, strides, dtype, device and
``requires_grad`` (its values never matter: a call whose ops depend on them is
never replayed); for numbers, strings, dtypes, devices and the like the value;
tuples, lists and slices element by element. Anything else (a tensor
subclass, an arbitrary object) has no key: :class:`NoSignature`.

For functions that pick their kernel by global switches (:data:`SWITCHES`: the attention kernels,
cuDNN and oneDNN) the switches' state is part of the key too.

A call made under another torch-function mode has no signature either, unless that mode is listed in
:data:`TRANSPARENT_MODES` with the functions it changes (``modes_allow``): any other mode may run other
ops for a call (or none), which a trace made without it, or replayed without it, would not show.
"""

from __future__ import annotations

from typing import Any

import torch

from ._torch import DeviceContext, any_autocast, backend_switches, function_stack_at, sdp_switches

__all__ = ["PLAIN_TENSORS", "NoSignature", "value_key", "call_key", "SWITCHES", "TRANSPARENT_MODES", "modes_allow"]

#: The tensor types a key describes: a subclass may run other ops than its metadata says.
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_Tensor, _Parameter = PLAIN_TENSORS
_ATOMS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                    torch.memory_format, type(Ellipsis)})
_grad_enabled = torch.is_grad_enabled


#: Functions whose ops depend on global switches as well as on their arguments: the switches' state is part
#: of their signature (after the arguments' keys).
SWITCHES: dict[Any, Any] = {torch.nn.functional.scaled_dot_product_attention: sdp_switches}
SWITCHES.update(dict.fromkeys((
    torch.nn.functional.batch_norm, torch.nn.functional.instance_norm, torch.batch_norm, torch.instance_norm,
    torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu, torch.nn.functional.grid_sample, torch.grid_sampler,
    torch.nn.functional.ctc_loss, torch.ctc_loss), backend_switches))


class NoSignature(Exception):
    """An argument the signature cannot describe: the call is not replayed."""


def value_key(value: Any) -> Any:
    """The key of one argument (see the module doc)."""
    t = type(value)
    if t in PLAIN_TENSORS:
        return (value.shape, value.stride(), value.dtype, value.device, value.requires_grad)
    if t in _ATOMS:
        return (t, value)
    if t is tuple or t is list or t is torch.Size:
        return (t, *map(value_key, value))
    if t is slice:
        return (slice, value_key(value.start), value_key(value.stop), value_key(value.step))
    raise NoSignature


def call_key(func: Any, args: tuple, kwargs: dict) -> tuple:
    """The signature of ``func(*args, **kwargs)``: once per replayable call, so the common cases are inline.

    Keyword arguments add their names, as one tuple, after grad mode and autocast (where a positional
    argument's key is never a tuple of strings), and their values after the positional ones.
    """
    if kwargs:
        key: list[Any] = [func, _grad_enabled(), any_autocast(), tuple(kwargs)]
        values: Any = (*args, *kwargs.values())
    else:
        key = [func, _grad_enabled(), any_autocast()]
        values = args
    append = key.append
    for value in values:
        t = type(value)
        if t is _Tensor or t is _Parameter:
            append((value.shape, value.stride(), value.dtype, value.device, value.requires_grad))
        elif t in _ATOMS:
            append((t, value))
        else:
            append(value_key(value))
    switches = SWITCHES.get(func)
    if switches is not None:
        append(switches())
    return tuple(key)


#: Torch-function modes a call may run under and keep its signature, each with the functions whose ops it
#: changes: ``with torch.device(...)`` (it only fills in the device of factory calls), and, registered where
#: they are defined, another counter's function mode and the memory tracker's attention mode.
TRANSPARENT_MODES: dict[type, frozenset[Any]] = {DeviceContext: frozenset()}


def modes_allow(func: Any, depth: int) -> bool:
    """Whether the ``depth`` torch-function modes under the running one leave ``func``'s ops as they are."""
    for i in range(depth):
        changes = TRANSPARENT_MODES.get(type(function_stack_at(i)))
        if changes is None or func in changes:
            return False
    return True
