"""Counting: ``FlopCounter`` (a context manager) and ``count()`` (one call).

Every aten op that runs inside the counter goes through a
``TorchDispatchMode`` and is looked up once in the registry: it has a
formula (counted if its category is selected), is known to cost nothing,
decomposes into ops that are looked up in turn, or is recorded in
``uncounted``. Module hooks (``tracker.py``) say which module it belongs to.

For speed, with ``ops="matmul"`` and no user op formulas, a plain
``nn.Linear``/``nn.Conv*`` (no hooks, no parametrizations, plain tensors) is
counted from its module call, with the same formula as its op, while the
dispatch mode steps aside; modules such as ``nn.BatchNorm2d`` or ``nn.ReLU``
whose ops are all outside the matmul categories likewise. Backward ops always
go through the dispatch mode.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
import threading
from collections import Counter
from typing import Any, Callable, Iterable, Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils import flop_counter as _fc

from . import formulas as _formulas  # noqa: F401  (registers the built-in formulas)
from .measurement import Measurement, uncounted_calls
from .registry import DEFAULT_REGISTRY, MATMUL_CATEGORIES, Registry
from ..units import OPS_CHOICES

__all__ = ["FlopCounter", "UncountedOpsError", "ComputeFreeError", "FormulaError", "OPS_CHOICES", "device_name"]

_NOT_MATMUL_BUILTIN = frozenset({"norm", "softmax", "pointwise", "reduction", "pooling", "upsample"})
_current_node = torch._C._current_autograd_node
_grad_enabled = torch.is_grad_enabled
_len_stack = torch._C._len_torch_dispatch_stack
_stack_at = torch._C._get_dispatch_stack_at
_pop_stack = torch._C._pop_torch_dispatch_stack
_push_stack = torch._C._push_on_torch_dispatch_stack

# Handler markers
_PASS = 0
_DECOMPOSE = 1
_UNCOUNTED = 2
_COLLECTIVE = 3
#: Namespaces of collective ops: zero FLOPs, but the bytes of their payload are recorded.
_COLLECTIVE_NAMESPACES = frozenset({"c10d", "_c10d_functional"})
_NO_PAYLOAD = frozenset({"barrier", "monitored_barrier_", "wait_tensor"})


class UncountedOpsError(RuntimeError):
    """Raised by ``FlopCounter(strict=True)`` when ops without a formula ran."""


class ComputeFreeError(RuntimeError):
    """Raised by ``count(..., compute=False)`` when the model needs real tensor values."""


class FormulaError(RuntimeError):
    """A formula raised while counting an op or a module."""


def _conv_fast(module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[str, str, int]:
    transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
    return "aten.convolution", "conv", _fc.conv_flop_count(x.shape, module.weight.shape, out.shape,  # type: ignore[arg-type]
                                                           transposed)


def _zero_fast(module: torch.nn.Module, x: torch.Tensor, out: Any) -> None:
    return None


#: Module attribute types that select which ops a zero-cost fast-path module runs (training, inplace, ...).
_CONFIG_TYPES = (bool, int, float, str, tuple, type(None))
#: Per zero-cost module type: an attrgetter of the settings that select its ops.
_SETTINGS: dict[type, Callable[[Any], Any]] = {}


_nn = torch.nn
#: Exact module types counted from their call with ops="matmul": formula, and the input rank they need.
_FAST_TYPES: dict[type, tuple[Callable[..., Any], int | None]] = {
    _nn.Conv1d: (_conv_fast, 3), _nn.Conv2d: (_conv_fast, 4), _nn.Conv3d: (_conv_fast, 5),
    _nn.ConvTranspose1d: (_conv_fast, 3), _nn.ConvTranspose2d: (_conv_fast, 4), _nn.ConvTranspose3d: (_conv_fast, 5),
}
for _t in (
    _nn.BatchNorm1d, _nn.BatchNorm2d, _nn.BatchNorm3d, _nn.LayerNorm, _nn.GroupNorm, _nn.ReLU, _nn.ReLU6,
    _nn.GELU, _nn.SiLU, _nn.Sigmoid, _nn.Tanh, _nn.LeakyReLU, _nn.Hardswish, _nn.Hardsigmoid, _nn.Mish,
    _nn.Dropout, _nn.Dropout1d, _nn.Dropout2d, _nn.Identity, _nn.MaxPool1d, _nn.MaxPool2d, _nn.MaxPool3d,
    _nn.AvgPool1d, _nn.AvgPool2d, _nn.AvgPool3d, _nn.AdaptiveAvgPool1d, _nn.AdaptiveAvgPool2d,
    _nn.AdaptiveAvgPool3d, _nn.Flatten,
):
    _FAST_TYPES[_t] = (_zero_fast, None)


class _Mode(TorchDispatchMode):
    """The op-level layer: one dict lookup per op on the common path."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo by default, which imports
        # torch._dynamo (over a second) on the first op. Only _CompileSafeMode takes that wrapper.
        return False

    def __init__(self, counter: "FlopCounter", tracker: Any) -> None:
        super().__init__()
        self.counter = counter
        self.tracker = tracker  # the module tracker of the thread this mode is pushed in

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        counter = self.counter
        handler = counter._handlers.get(func)
        if handler is None:
            handler = counter._resolve(func)
        if handler is _PASS or self.tracker.suppress:
            return func(*args, **kwargs) if kwargs else func(*args)
        if handler is _DECOMPOSE:
            with self:
                result = func.decompose(*args, **(kwargs or {}))
            if result is not NotImplemented:
                return result
            counter._handlers[func] = handler = _UNCOUNTED
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if handler is _UNCOUNTED:
            counter._record_uncounted(func)
            return out
        if handler is _COLLECTIVE:
            counter._record_collective(func, args)
            return out
        fn, category, label = handler  # type: ignore[misc]
        if "out" in kwargs:  # an out= variant: the formula gets the output as ``out``
            kwargs = {k: v for k, v in kwargs.items() if k != "out"}
        try:
            flops = fn(*args, out=out, **kwargs)
        except Exception as exc:
            raise FormulaError(f"the formula for {label} failed: {type(exc).__name__}: {exc}") from exc
        counter._record(self.tracker, label, category, flops, out)
        return out


class _CompileSafeMode(_Mode):
    """The same mode with torch's guard that keeps torch.compile from tracing into it.

    Used when ``torch._dynamo`` is already imported (the user compiles), so the guard costs no import.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return True

    __torch_dispatch__ = _Mode.__torch_dispatch__  # in this class's __dict__, so torch wraps it


class FlopCounter:
    """Count FLOPs, MACs and parameters of everything run inside the ``with`` block.

    ``ops="matmul"`` (default) counts matmul, convolution and attention;
    ``ops="all"`` also norms, softmax, pointwise ops, reductions, pooling and
    upsampling. ``strict=True`` raises :class:`UncountedOpsError` at exit when
    an op without a formula ran. ``registry`` defaults to the global one.
    ``memory=True`` also measures peak memory, activations, saved tensors and
    memory traffic (``counting/memory.py``; every op then goes through a
    dispatch mode, so it costs more).
    After the block, ``.measurement`` holds the result.
    """

    def __init__(
        self,
        ops: str = "matmul",
        strict: bool = False,
        *,
        registry: Registry | None = None,
        model: torch.nn.Module | None = None,
        fast_path: bool = True,
        memory: bool = False,
        _computed: bool = True,
    ) -> None:
        if ops not in OPS_CHOICES:
            raise ValueError(f"invalid ops={ops!r}: expected one of {', '.join(repr(c) for c in OPS_CHOICES)}")
        self.ops = ops
        self.strict = bool(strict)
        self.registry = registry if registry is not None else DEFAULT_REGISTRY
        self.model = model
        self.measurement: Measurement | None = None
        self._fast_path = fast_path and ops == "matmul" and not self.registry.user_op_formulas
        self._computed = _computed
        self.memory = bool(memory)
        self._memory: Any = None  # the memory tracker (counting/memory.py), from __enter__ on with memory=True
        self._active = False
        self._reset()

    def _reset(self) -> None:
        self._handlers: dict[Any, Any] = {}
        self._module_formulas: dict[type, Any] = {}
        self._has_module_formulas = self.registry.has_module_formulas()
        self._stacks: dict[tuple[str, str], int] = {}
        self._by_category: dict[str, int] = {}
        self._by_module_seen: dict[str, None] = {}
        self._uncounted: Counter[str] = Counter()
        self._uncounted_calls = 0
        # Zero-cost fast-path modules, by call signature: True once a call through the dispatch mode
        # showed that all their ops are known (so skipping them loses nothing), False if not.
        self._zero_known: dict[tuple, bool] = {}
        self._fast_cache: dict[tuple, tuple[str, str, int]] = {}
        self._lock = threading.Lock()
        self._collective_bytes: dict[str, int] = {}
        self._devices: set[Any] = set()
        self._forward = 0
        self._backward = 0
        self._tracker: Any = None  # the module tracker, from __enter__ on

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> "FlopCounter":
        if self._active:
            raise RuntimeError("this FlopCounter is already active; nest a new FlopCounter instead")
        from .tracker import ModuleTracker

        self._reset()
        self.measurement = None
        self._tracker = ModuleTracker(self, self.model)
        self._mode = self._tracker.mode = self._new_mode(self._tracker)
        self._tracker.install()
        try:
            if self.memory:  # entered below our mode, so the fast paths that step our mode aside keep it
                self._memory = self._new_memory_tracker(self._tracker)
                self._memory.__enter__()
            self._mode.__enter__()
        except BaseException:
            self._tracker.remove()
            if self._memory is not None:
                self._memory.__exit__(None, None, None)
            raise
        self._active = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._tracker.remove()  # also restores our mode if a fast-path module raised
        finally:
            self._active = False
            try:
                self._mode.__exit__(exc_type, exc, tb)
            finally:
                if self._memory is not None:
                    self._memory.__exit__(exc_type, exc, tb)
        self.measurement = self._measure()
        if self._memory is not None:
            self.measurement = dataclasses.replace(self.measurement, **self._memory.figures())
            self._memory = None
        if self.strict and exc_type is None and self.measurement.uncounted:
            calls = uncounted_calls(self.measurement.uncounted)
            raise UncountedOpsError(
                f"ops without a FLOP formula ran: {calls}; register one with "
                "pytest_flops.register_op_formula(op, fn) or use strict=False"
            )

    def _new_memory_tracker(self, tracker: Any) -> Any:
        from .memory import MemoryTracker

        def where(node: Any) -> str:
            return tracker.path if node is None else tracker.backward_path(node)

        model = self.model
        return MemoryTracker(where, (lambda: (model,)) if model is not None else (lambda: tracker.roots.values()))

    def _new_mode(self, tracker: Any) -> _Mode:
        """A dispatch mode for one thread's tracker (the main thread's, or a worker's: see tracker.py)."""
        return (_CompileSafeMode if "torch._dynamo" in sys.modules else _Mode)(self, tracker)

    # -- called by the dispatch mode -----------------------------------------
    def _selected(self, category: str) -> bool:
        return self.ops == "all" or category not in _NOT_MATMUL_BUILTIN

    def _resolve(self, func: Any) -> Any:
        packet = func._overloadpacket
        entry = self.registry.lookup_op(packet)
        if entry is None:
            try:
                composite = torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")
            except Exception:  # pragma: no cover
                composite = False
            handler: Any = _DECOMPOSE if composite else _UNCOUNTED
        elif isinstance(entry, str):
            collective = func.namespace in _COLLECTIVE_NAMESPACES and packet.__name__ not in _NO_PAYLOAD
            handler = _COLLECTIVE if collective else _PASS
        else:
            fn, category = entry
            handler = (fn, category, str(packet)) if self._selected(category) else _PASS
        self._handlers[func] = handler
        return handler

    def _record(self, tracker: Any, label: str, category: str, flops: Any, out: Any) -> None:
        # Worker threads (DataParallel replicas) and autograd's per-device backward threads may record
        # at the same time: one update at a time. The counting thread's forward needs no lock.
        node = _current_node()
        if tracker.worker or node is not None:
            with self._lock:
                self._record_unlocked(tracker, node, label, category, flops, out)
        else:
            self._record_unlocked(tracker, node, label, category, flops, out)

    def _record_unlocked(self, tracker: Any, node: Any, label: str, category: str, flops: Any, out: Any) -> None:
        if type(flops) is int:
            if not flops:
                return
            total = flops
            by_cat = self._by_category
            by_cat[category] = by_cat.get(category, 0) + flops
        else:
            total = 0
            by_cat = self._by_category
            for cat, value in flops.items():
                if value and self._selected(cat):
                    by_cat[cat] = by_cat.get(cat, 0) + int(value)
                    total += int(value)
            if not total:
                return
        if node is None:
            parts = getattr(flops, "parts", None)
            if parts is not None and self._record_parts(tracker, label, flops):
                self._forward += total
                self._record_device(out)
                return
            key = (tracker.path, label)
            self._forward += total
        else:
            key = (tracker.backward_path(node), label + " (backward)")
            self._backward += total
        self._stacks[key] = self._stacks.get(key, 0) + total
        self._record_device(out)

    def _record_parts(self, tracker: Any, label: str, flops: Any) -> bool:
        """Charge a fused op's parts to the children of the running module (formulas/attention.Parts)."""
        if not tracker.stack:
            return False
        inner = tracker.stack[-1]
        children = {child: f"{inner}.{child}" for child in flops.parts if child}
        known = tracker.known_names()
        if not all(name in known for name in children.values()):
            return False
        for child, part in flops.parts.items():
            value = sum(v for cat, v in part.items() if self._selected(cat))
            if child:
                name = children[child]
                if name not in tracker.types:  # listed like a child that ran, even at 0 FLOPs
                    tracker.types[name] = flops.types.get(child, "")
                    self._seen_module(name)
            if not value:
                continue
            if child:
                key = (f"{tracker.path};{name}", label)
            else:
                key = (tracker.path, label)
            self._stacks[key] = self._stacks.get(key, 0) + value
        return True

    def _record_device(self, out: Any) -> None:
        device = getattr(out, "device", None)
        if device is None and isinstance(out, (tuple, list)) and out:
            device = getattr(out[0], "device", None)
        if device is not None:
            self._devices.add(device)

    def _record_collective(self, func: Any, args: tuple) -> None:
        """Bytes of a collective's payload: its first argument (the tensors it reduces, sends or fills)."""
        from torch.utils._pytree import tree_leaves

        payload = sum(t.numel() * t.element_size() for t in tree_leaves(args[:1]) if isinstance(t, torch.Tensor))
        label = str(func._overloadpacket)
        with self._lock:
            self._collective_bytes[label] = self._collective_bytes.get(label, 0) + payload

    def _record_uncounted(self, func: Any) -> None:
        with self._lock:
            self._uncounted[str(func._overloadpacket)] += 1
            self._uncounted_calls += 1

    # -- called by the tracker ---------------------------------------------
    def _seen_module(self, name: str) -> None:
        self._by_module_seen[name] = None

    def _module_formula(self, module_type: type) -> Any:
        if not self._has_module_formulas:
            return None
        try:
            return self._module_formulas[module_type]
        except KeyError:
            entry = self._module_formulas[module_type] = self.registry.lookup_module(module_type)
            return entry

    def _fast_spec(self, module: torch.nn.Module) -> Any:
        """(formula, input rank, config key) if calls of this exact module type may take the fast path."""
        if not self._fast_path:
            return None
        spec = _FAST_TYPES.get(type(module))
        if spec is None:
            return None
        if spec[0] is not _zero_fast:
            return spec[0], spec[1], None
        # What selects the ops a zero-cost module runs: its type and scalar settings (inplace, eps, ...),
        # read with one attrgetter per type.
        getter = _SETTINGS.get(type(module))
        if getter is None:
            names = [k for k, v in module.__dict__.items() if type(v) in _CONFIG_TYPES and k != "training"]
            getter = _SETTINGS[type(module)] = operator.attrgetter(*names) if names else (lambda m: ())
        return spec[0], spec[1], (type(module), getter(module))

    def _fast_formula(self, module: torch.nn.Module, args: tuple, spec: Any, mode: _Mode) -> Any:
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks \
                or module._backward_pre_hooks or len(args) != 1:
            return None
        x = args[0]
        fn, rank, config = spec
        if type(x) is not torch.Tensor or (rank is not None and x.dim() != rank) or x.is_nested:
            return None
        n = _len_stack()
        if not n or _stack_at(n - 1) is not mode:
            return None
        if fn is _zero_fast:
            # Skipping the ops of e.g. nn.ReLU is only exact if none of them is uncounted: the first call of
            # each signature runs through the dispatch mode as a probe (a tuple), later ones take the fast path.
            key = (config, module.training, _grad_enabled(), x.dtype, x.device, x.dim(), x.requires_grad)
            known = self._zero_known.get(key)
            if known is None:
                return (key, self._uncounted_calls, self._forward, self._backward)
            if not known:
                return None
        _pop_stack(None)
        return fn

    def _end_probe(self, probe: tuple, output: Any) -> None:
        key, uncounted, forward, backward = probe
        if output is not None:
            self._zero_known[key] = (uncounted, forward, backward) == (
                self._uncounted_calls, self._forward, self._backward)
        device = getattr(output, "device", None)
        if device is not None:
            self._devices.add(device)

    def _record_module(self, tracker: Any, module: torch.nn.Module, fast: Any, args: tuple, output: Any) -> None:
        if fast is _zero_fast:
            self._devices.add(output.device)
            return
        x = args[0]
        key = (id(module), x.shape)
        result = self._fast_cache.get(key)
        if result is None:
            result = self._fast_cache[key] = fast(module, x, output)
        self._record(tracker, result[0], result[1], result[2], output)

    def _record_module_formula(self, tracker: Any, module: torch.nn.Module, fn: Any, category: str,
                               args: tuple, output: Any) -> None:
        try:
            flops = fn(module, args, output)
        except Exception as exc:
            raise FormulaError(
                f"the module formula for {type(module).__name__} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(flops, (int, Mapping)) or isinstance(flops, bool):
            raise FormulaError(
                f"the module formula for {type(module).__name__} returned {flops!r}: expected an int FLOP count"
            )
        self._record(tracker, f"{type(module).__name__} (module formula)", category, flops, output)

    # -- result --------------------------------------------------------------
    def _parameters(self) -> tuple[int, int]:
        roots: Iterable[torch.nn.Module]
        if self.model is not None:
            roots = (self.model,)
        else:
            roots = self._tracker.roots.values()
        seen: set[int] = set()
        total = trainable = 0
        for root in roots:
            for p in root.parameters():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                total += p.numel()
                if p.requires_grad:
                    trainable += p.numel()
        return total, trainable

    def _module_params(self, ran: Mapping[str, int]) -> dict[str, int]:
        """Parameters of each module that ran (children included), for the report's params view."""
        roots: Iterable[torch.nn.Module] = (self.model,) if self.model is not None else self._tracker.roots.values()
        names = self._tracker.names
        out: dict[str, int] = {}
        for root in roots:
            for sub in root.modules():
                name = names.get(id(sub))
                if name in ran and name not in out:
                    out[name] = sum(p.numel() for p in sub.parameters())
        return out

    def _measure(self) -> Measurement:
        tracker = self._tracker
        by_module: dict[str, int] = dict.fromkeys(self._by_module_seen, 0)
        by_op: dict[str, int] = {}
        stacks: dict[str, int] = {}
        split_cache: dict[str, list[str]] = {}
        for (path, label), flops in self._stacks.items():
            stacks[f"{path};{label}" if path else label] = flops
            op = label.removesuffix(" (backward)")
            by_op[op] = by_op.get(op, 0) + flops
            names = split_cache.get(path)
            if names is None:
                names = split_cache[path] = list(dict.fromkeys(path.split(";"))) if path else []
            for name in names:
                by_module[name] = by_module.get(name, 0) + flops
        if self.model is not None:
            name = tracker.names.get(id(self.model), type(self.model).__name__)
        elif len(tracker.roots) == 1:
            name = tracker.names[next(iter(tracker.roots))]
        else:
            name = "FlopCounter"
        params, trainable = self._parameters()
        macs = sum(v for k, v in self._by_category.items() if k in MATMUL_CATEGORIES) // 2
        devices = tuple(sorted({device_name(d) for d in self._devices}))
        return Measurement(
            name=name,
            flops=self._forward + self._backward,
            macs=macs,
            params=params,
            trainable_params=trainable,
            forward_flops=self._forward,
            backward_flops=self._backward,
            by_module=by_module,
            by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            by_category=dict(sorted(self._by_category.items(), key=lambda kv: -kv[1])),
            uncounted=dict(sorted(self._uncounted.items())),
            devices=devices,
            module_types=dict(tracker.types),
            module_params=self._module_params(by_module),
            stacks=stacks,
            ops=self.ops,
            computed=self._computed,
            extra={"collective_bytes": dict(self._collective_bytes)} if self._collective_bytes else {},
        )


def device_name(device: Any) -> str:
    if device.type == "cuda" and device.index is None:
        return "cuda:0"
    return str(device)
