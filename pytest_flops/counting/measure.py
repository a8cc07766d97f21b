"""``count()``: one call under a :class:`FlopCounter`, on real tensors or compute-free.

With ``compute=False`` the model runs on ``meta`` copies of its parameters,
buffers and inputs (fastest), or on fake tensors where meta cannot express it.
"""

from __future__ import annotations

from typing import Any

import torch

from .counter import ComputeFreeError, FlopCounter, UncountedOpsError, device_name
from .measurement import Measurement
from .registry import Registry

__all__ = ["count"]


def count(model: Any, *inputs: Any, compute: bool = True, ops: str = "matmul", strict: bool = False,
          registry: Registry | None = None, timed: bool = False, memory: bool = False,
          **model_kwargs: Any) -> Measurement:
    """Run ``model(*inputs, **model_kwargs)`` under a :class:`FlopCounter` and return its Measurement.

    With ``compute=False`` the model runs on fake tensors: no arithmetic runs
    and no activations are allocated, and the counts equal a real run's.
    A model whose control flow needs tensor values raises
    :class:`ComputeFreeError` naming the op; use ``compute=True`` for it.
    With ``timed=True`` the model then runs once more, uncounted and timed
    (CUDA events on CUDA): ``extra["time_s"]`` and ``extra["flops_per_s"]``.
    With ``memory=True`` the Measurement also carries peak memory, activations,
    saved-for-backward and traffic figures (see docs/memory.md).
    """
    module = model if isinstance(model, torch.nn.Module) else None
    if timed and not compute:
        raise ValueError("count(timed=True) needs compute=True: a run on fake tensors takes no real time")
    if compute:
        with FlopCounter(ops, strict, registry=registry, model=module, memory=memory) as counter:
            model(*inputs, **model_kwargs)
        assert counter.measurement is not None
        if timed:
            from .timing import time_call, with_timing

            seconds, timer = time_call(lambda: model(*inputs, **model_kwargs), counter.measurement.devices)
            return with_timing(counter.measurement, seconds, timer)
        return counter.measurement
    return _count_fake(model, module, inputs, model_kwargs, ops, strict, registry, memory)


def _count_fake(model: Any, module: torch.nn.Module | None, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                registry: Registry | None, memory: bool = False) -> Measurement:
    """Count without arithmetic: on ``meta`` copies when the model allows it (fastest), else on fake tensors."""
    if module is not None:
        try:
            return _count_on_meta(module, inputs, kwargs, ops, strict, registry, memory)
        except UncountedOpsError:
            raise
        except Exception:  # value-dependent code, or tensors made on a fixed device: fake tensors handle those
            pass
    return _count_on_fake(model, module, inputs, kwargs, ops, strict, registry, memory)


def _count_on_meta(module: torch.nn.Module, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                   registry: Registry | None, memory: bool = False) -> Measurement:
    """Run ``module`` through ``torch.func.functional_call`` with ``meta`` copies of its parameters, buffers
    and inputs, and with ``meta`` as the default device; the module itself is not touched."""
    import dataclasses

    from torch.utils._pytree import tree_flatten, tree_map

    devices: set[str] = set()

    def to_meta(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        devices.add(device_name(value.device))
        copy = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
        return copy.requires_grad_(value.requires_grad) if value.is_leaf else copy

    if any(getattr(t, "is_nested", False) or type(t) not in (torch.Tensor, torch.nn.Parameter)
           for t in tree_flatten((inputs, kwargs))[0] if isinstance(t, torch.Tensor)):
        raise TypeError("tensor subclasses run on fake tensors")
    state = {name: to_meta(t) for name, t in module.named_parameters(remove_duplicate=False)}
    state.update({name: to_meta(t) for name, t in module.named_buffers(remove_duplicate=False)})
    meta_inputs, meta_kwargs = tree_map(to_meta, (inputs, kwargs))
    counter = FlopCounter(ops, strict, registry=registry, model=module, memory=memory, _computed=False)
    with torch.device("meta"), counter:
        torch.func.functional_call(module, state, meta_inputs, meta_kwargs, tie_weights=True, strict=False)
    assert counter.measurement is not None
    return dataclasses.replace(counter.measurement, devices=tuple(sorted(devices)) or counter.measurement.devices)


def _count_on_fake(model: Any, module: torch.nn.Module | None, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                   registry: Registry | None, memory: bool = False) -> Measurement:
    from torch._subclasses import fake_tensor as ft
    from torch.utils._pytree import tree_map

    fake_mode = ft.FakeTensorMode(allow_non_fake_inputs=True)

    def to_fake(value: Any) -> Any:
        return fake_mode.from_tensor(value) if isinstance(value, torch.Tensor) else value

    inputs, kwargs = tree_map(to_fake, (inputs, kwargs))
    errors = (ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedOperatorException)
    with fake_mode:
        counter = FlopCounter(ops, strict, registry=registry, model=module, memory=memory, _computed=False)
        try:
            with counter:
                model(*inputs, **kwargs)
        except errors as exc:
            op = getattr(exc, "func", None)
            raise ComputeFreeError(
                f"count(compute=False) cannot run {type(model).__name__}: op {op} needs real tensor values "
                f"({type(exc).__name__}); use compute=True for this model"
            ) from exc
        except RuntimeError as exc:
            if "data-dependent" in str(exc) or "Data dependent" in str(exc):
                raise ComputeFreeError(
                    f"count(compute=False) cannot run {type(model).__name__}: its control flow depends on "
                    f"tensor values ({str(exc).splitlines()[0]}); use compute=True for this model"
                ) from exc
            raise
    assert counter.measurement is not None
    return counter.measurement
