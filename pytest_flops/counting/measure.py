"""``count()``: one call under a :class:`FlopCounter`, on real tensors or compute-free.

With ``compute=False`` the model runs as a *copy*: every module of the tree is
copied (``copy.copy``, its own ``__dict__``), with ``meta`` copies of its
parameters, buffers and tensor attributes and of the inputs. One copy is made
per tensor, so parameters tied in the model (a GPT-2 or T5 LM head) stay tied,
and the model itself is never touched: its buffers (BatchNorm running stats,
``num_batches_tracked``), attributes and hooks stay as they were, and its
``forward`` never runs on real data. Where ``meta`` cannot express the
forward (it makes a tensor on a fixed device, or uses a tensor subclass), the
same copy runs on fake tensors (``FakeTensorMode``) instead. An ordinary
exception in the model (a shape bug) raises as itself; no other path is tried.
``Measurement.extra["compute_path"]`` says which path counted: ``"meta"`` or
``"fake"``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from typing import Any, Callable, Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .counter import ComputeFreeError, FlopCounter, FormulaError, UncountedOpsError, device_name
from .measurement import Measurement
from .registry import Registry

__all__ = ["count", "COMPUTE_PATHS"]

#: The values of ``Measurement.extra["compute_path"]`` for ``compute=False``.
COMPUTE_PATHS = ("meta", "fake")

_NO_KWARGS: Mapping[str, Any] = {}


def count(model: Any, *inputs: Any, compute: bool = True, ops: str = "matmul", strict: bool = False,
          registry: Registry | None = None, timed: bool = False, memory: bool = False,
          kwargs: Mapping[str, Any] | None = None, **model_kwargs: Any) -> Measurement:
    """Run ``model(*inputs, **kwargs, **model_kwargs)`` under a :class:`FlopCounter` and return its Measurement.

    ``kwargs`` passes keyword arguments to the model whatever their names, also
    those that ``count()`` itself takes (``ops``, ``strict``, ``compute``, ...).
    With ``compute=False`` the model runs on ``meta`` copies (or fake tensors):
    no arithmetic runs and no activations are allocated, and the counts equal
    a real run's. A model whose control flow needs tensor values raises
    :class:`ComputeFreeError` naming the op; use ``compute=True`` for it.
    With ``timed=True`` the model then runs once more, uncounted and timed
    (CUDA events on CUDA): ``extra["time_s"]`` and ``extra["flops_per_s"]``.
    With ``memory=True`` the Measurement also carries peak memory, activations,
    saved-for-backward and traffic figures (see docs/memory.md).
    """
    model_kwargs = _merge_kwargs(kwargs, model_kwargs)
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


def _merge_kwargs(kwargs: Mapping[str, Any] | None, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs is None:
        return model_kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"count(kwargs={kwargs!r}): expected a dict of the model's keyword arguments by name")
    both = sorted(set(kwargs) & set(model_kwargs))
    if both:
        raise TypeError(f"count(): model keyword argument {both[0]!r} given both in kwargs= and directly; "
                        "pass it once")
    return {**model_kwargs, **kwargs}


# -- compute=False ---------------------------------------------------------------------
#: Messages of errors that only a run on ``meta`` tensors raises (the forward makes a tensor on a fixed
#: device, reads a value, or runs an op without a meta kernel): fake tensors can run such a forward.
_META_ONLY = re.compile(r"\bmeta\b|same device|two devices|expected device", re.IGNORECASE)


def _meta_cannot_express(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a run on meta copies, is a limit of ``meta`` rather than a bug of the model."""
    if isinstance(exc, (UncountedOpsError, FormulaError, ComputeFreeError)):
        return False
    if isinstance(exc, NotImplementedError):  # an op without a meta kernel: fake tensors may run it
        return True
    if not isinstance(exc, (RuntimeError, TypeError, ValueError)):
        return False
    return bool(_META_ONLY.search(str(exc)))


def _count_fake(model: Any, module: torch.nn.Module | None, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                registry: Registry | None, memory: bool = False) -> Measurement:
    """Count without arithmetic: on ``meta`` copies when the model allows it (fastest), else on fake tensors."""
    if module is not None and not _needs_fake(inputs, kwargs):
        try:
            return _shape_fallback(lambda shapes: _count_on_meta(module, inputs, kwargs, ops, strict, registry,
                                                                  memory, shapes))
        except Exception as exc:
            if not _meta_cannot_express(exc):
                raise
    return _shape_fallback(lambda shapes: _count_on_fake(model, module, inputs, kwargs, ops, strict, registry,
                                                          memory, shapes))


#: Ops whose meta kernels accept fewer dtypes than their CPU or CUDA kernels (``_grouped_mm``: bf16 only).
_SHAPE_ONLY_OPS = ("_grouped_mm", "_scaled_grouped_mm", "_scaled_grouped_mm_v2")


def _shape_fallback(run: Callable[[bool], Measurement]) -> Measurement:
    """``run(False)``; if a grouped matmul's meta kernel rejected its inputs, ``run(True)``: with the outputs of
    those ops made from their shapes (their formulas read shapes only). Any other error raises as itself."""
    try:
        return run(False)
    except RuntimeError as exc:
        if not _failed_in_grouped_mm(exc):
            raise
        first = exc
    try:
        return run(True)
    except RuntimeError as exc:
        if isinstance(exc, GroupedShapeError) or not _failed_in_grouped_mm(exc):
            raise
        raise ComputeFreeError(
            f"count(compute=False) cannot run a grouped matmul on these inputs: torch's meta kernel says "
            f"{str(first).splitlines()[0]!r}; use compute=True, or bfloat16 weights"
        ) from exc


def _failed_in_grouped_mm(exc: BaseException) -> bool:
    import traceback

    frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    return any("grouped_mm" in name for name in frames) or "grouped" in str(exc).lower()


def _grouped_mm_shape(a: torch.Tensor, b: torch.Tensor, offs: Any) -> list[int]:
    """The output shape of ``_grouped_mm(a, b, offs)`` (as torch's meta kernel computes it)."""
    if a.dim() == 2:
        return [offs.shape[0], a.shape[0], b.shape[1]] if b.dim() == 2 else [a.shape[0], b.shape[-1]]
    return [a.shape[1], b.shape[1]] if b.dim() == 2 else [a.shape[0], a.shape[1], b.shape[-1]]


class GroupedShapeError(RuntimeError):
    """The shapes of a grouped matmul do not fit (a bug in the model, raised as such)."""


class _ShapeOnlyMode(TorchDispatchMode):
    """Below the counter: a grouped matmul whose meta kernel rejects its dtype returns an empty output of the
    right shape, so the count goes on (the formula reads shapes only)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func._overloadpacket.__name__ not in _SHAPE_ONLY_OPS:
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except RuntimeError:
            a, b = args[0], args[1]
            if a.shape[-1] != (b.shape[0] if b.dim() == 2 else b.shape[-2]):
                raise GroupedShapeError(f"{func}: mat_a of shape {tuple(a.shape)} and mat_b of shape "
                                        f"{tuple(b.shape)} cannot be multiplied") from None
            offs = kwargs.get("offs", args[2] if len(args) > 2 and func._overloadpacket.__name__ == "_grouped_mm"
                              else args[4] if len(args) > 4 else None)
            dtype = kwargs.get("out_dtype") or a.dtype
            return torch.empty(_grouped_mm_shape(a, b, offs), dtype=dtype, device=a.device)


def _needs_fake(inputs: tuple, kwargs: dict) -> bool:
    """Nested tensors and tensor subclasses among the inputs cannot be copied to ``meta``."""
    from torch.utils._pytree import tree_leaves

    return any(getattr(t, "is_nested", False) or type(t) not in (torch.Tensor, torch.nn.Parameter)
               for t in tree_leaves((inputs, kwargs)) if isinstance(t, torch.Tensor))


class _Copier:
    """Copies of a module tree and its tensors, one per original object (so ties stay tied).

    The memo holds each original beside its copy, so no key is the ``id()`` of an object it does not keep
    alive.
    """

    def __init__(self, convert: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.convert = convert
        self._tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._modules: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self.devices: set[str] = set()

    def tensor(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        entry = self._tensors.get(id(value))
        if entry is None:
            self.devices.add(device_name(value.device))
            copied = self.convert(value)
            if isinstance(value, torch.nn.Parameter) and not isinstance(copied, torch.nn.Parameter):
                copied = torch.nn.Parameter(copied, requires_grad=value.requires_grad)
            entry = self._tensors[id(value)] = (value, copied)
        return entry[1]

    def module(self, original: torch.nn.Module) -> torch.nn.Module:
        entry = self._modules.get(id(original))
        if entry is not None:
            return entry[1]
        new = copy.copy(original)  # a new object with its own __dict__; nothing below writes to the original
        self._modules[id(original)] = (original, new)
        state = new.__dict__
        for key, value in list(state.items()):
            if key == "_parameters" or key == "_buffers":
                state[key] = type(value)((k, self.tensor(v)) for k, v in value.items())
            elif key == "_modules":
                state[key] = type(value)((k, None if c is None else self.module(c)) for k, c in value.items())
            elif isinstance(value, torch.Tensor):
                state[key] = self.tensor(value)
            elif isinstance(value, (dict, list, set)):  # hooks, caches: the copy's own containers
                state[key] = copy.copy(value)
        return new


def _to_meta(value: torch.Tensor) -> torch.Tensor:
    copied = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    return copied.requires_grad_(value.requires_grad) if value.is_leaf else copied


def _copy_module(module: torch.nn.Module, copier: _Copier) -> torch.nn.Module:
    try:
        return copier.module(module)
    except Exception as exc:
        raise ComputeFreeError(
            f"count(compute=False) cannot copy {type(module).__name__} ({type(exc).__name__}: {exc}); "
            "use compute=True for this model"
        ) from exc


def _count_on_meta(module: torch.nn.Module, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                   registry: Registry | None, memory: bool = False, shapes: bool = False) -> Measurement:
    """Run a copy of ``module`` on ``meta`` copies of its tensors and of the inputs, with ``meta`` as the
    default device."""
    from torch.utils._pytree import tree_map

    copier = _Copier(_to_meta)
    meta_inputs, meta_kwargs = tree_map(copier.tensor, (inputs, kwargs))
    twin = _copy_module(module, copier)
    counter = FlopCounter(ops, strict, registry=registry, model=twin, memory=memory, _computed=False)
    with torch.device("meta"), _ShapeOnlyMode() if shapes else contextlib.nullcontext(), counter:
        twin(*meta_inputs, **meta_kwargs)
    assert counter.measurement is not None
    return _with_path(counter.measurement, "meta", copier.devices)


def _with_path(measurement: Measurement, path: str, devices: set[str]) -> Measurement:
    return dataclasses.replace(measurement, devices=tuple(sorted(devices)) or measurement.devices,
                              extra={**measurement.extra, "compute_path": path})


def _count_on_fake(model: Any, module: torch.nn.Module | None, inputs: tuple, kwargs: dict, ops: str, strict: bool,
                   registry: Registry | None, memory: bool = False, shapes: bool = False) -> Measurement:
    """Run on fake tensors: a copy of ``module`` with fake copies of its tensors, or, for a callable that
    is not a module, the callable itself on fake inputs."""
    from torch._subclasses import fake_tensor as ft
    from torch.utils._pytree import tree_map

    fake_mode = ft.FakeTensorMode(allow_non_fake_inputs=True)
    copier = _Copier(fake_mode.from_tensor)
    inputs, kwargs = tree_map(copier.tensor, (inputs, kwargs))
    target = model if module is None else _copy_module(module, copier)
    errors = (ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedOperatorException)
    with fake_mode:
        counter = FlopCounter(ops, strict, registry=registry, model=None if module is None else target,
                              memory=memory, _computed=False)
        try:
            with _ShapeOnlyMode() if shapes else contextlib.nullcontext(), counter:
                target(*inputs, **kwargs)
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
    return _with_path(counter.measurement, "fake", copier.devices)
