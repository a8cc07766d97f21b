"""Counting: ``FlopCounter``, a context manager over the module tracker and the op-level layer.

Every aten op the counter sees goes through a ``TorchDispatchMode`` and is
looked up once in the registry, which gives it a handler (``handlers.py``):
counted by a formula (if its category is selected), known to cost nothing,
decomposed into ops that are looked up in turn, or recorded in ``uncounted``.
The module tracker (``tracker.py``) says which module each op belongs to; the
counter subscribes to its enter/exit events for module formulas.

Speed (``fast_path=True``, the default): above the dispatch mode sits a
``TorchFunctionMode``. The first call of a function with a given signature
(``signature.py``: the function, the shapes, strides, dtypes, devices and
``requires_grad`` of its tensors, its other arguments, grad mode and
autocast) runs with the
dispatch mode pushed, and the counts its ops made are kept as the call's
trace; a later call with the same signature runs without the dispatch mode
and the trace is charged to the module running it. The counts are the aten
path's by construction. A call is never replayed if it ran a backward op, a
module, an op whose output depends on tensor values, a user's op formula, a
collective, or a fused op split over child modules; nor if an argument is a
tensor subclass or something the signature cannot describe; ``backward`` and
``autograd.grad`` always run under the dispatch mode. ``fast_path=False``
keeps the dispatch mode pushed throughout.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import weakref
from collections import Counter
from typing import Any, Iterable, Mapping

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import formulas as _formulas  # noqa: F401  (registers the built-in formulas)
from ._torch import (current_autograd_node, dispatch_stack_at, dispatch_stack_len, function_stack_at,
                     function_stack_len, functorch_active, pop_dispatch_if_top, pop_function_if_top, push_dispatch,
                     push_function, sequence_nr)
from .backward import (BACKWARD_SEEN, CallLog, graph_signature, plain_backward_root, run_backward, unwatch_engine,
                       watch_engine)
from .handlers import FormulaError, resolve
from .measurement import Measurement, uncounted_calls
from .registry import DEFAULT_REGISTRY, MATMUL_CATEGORIES, Registry, Split
from .signature import PLAIN_TENSORS, TRANSPARENT_MODES, NoSignature, call_key, modes_allow
from .tracker import Frame, ModuleTracker, ThreadView
from .zero_calls import free_under
from ..units import OPS_CHOICES

__all__ = ["FlopCounter", "UncountedOpsError", "ComputeFreeError", "FormulaError", "OPS_CHOICES", "device_name"]

_NOT_MATMUL_BUILTIN = frozenset({"norm", "softmax", "pointwise", "reduction", "pooling", "upsample"})
_grad_enabled = torch.is_grad_enabled
_CLOSED = 1 << 30  # a closed counter's modes suppress everything: they may outlive it on a worker thread


class UncountedOpsError(RuntimeError):
    """Raised by ``FlopCounter(strict=True)`` when ops without a formula ran.

    ``calls`` names the ops and their call counts (``aten.foo x3``); ``measurement`` is what was counted, so
    that a caller (the plugin, the console script) can still report it and word its own advice.
    """

    def __init__(self, message: str, calls: str = "", measurement: Measurement | None = None) -> None:
        super().__init__(message)
        self.calls = calls
        self.measurement = measurement


class ComputeFreeError(RuntimeError):
    """Raised by ``count(..., compute=False)`` when the model needs real tensor values."""


# -- the function level: signatures and traces ------------------------------
_PASS, _REPLAY, _PROBE, _BACKWARD, _FREE = 0, 1, 2, 3, 4
#: Tensor attributes read without any op: a mode's view of them is the plain call.
_METADATA_ATTRS = frozenset({
    "shape", "dtype", "device", "requires_grad", "is_leaf", "grad_fn", "ndim", "layout", "is_cuda", "is_cpu",
    "is_meta", "is_sparse", "is_quantized", "is_nested", "is_mkldnn", "names", "_version", "output_nr", "grad",
    "_base", "is_xpu", "is_mps",
})
_METADATA_FUNCS = frozenset(getattr(torch.Tensor, n) for n in (
    "size", "dim", "stride", "numel", "nelement", "ndimension", "is_contiguous", "element_size", "storage_offset",
    "is_floating_point", "is_complex", "get_device", "data_ptr", "__len__", "is_inference",
) if hasattr(torch.Tensor, n))
#: Functions that run whatever graph their arguments lead to: always under the dispatch mode.
_ALWAYS_PROBE = frozenset({torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad})
#: Modules whose forward takes a fused fast path only when no torch-function mode is active: their
#: subtree runs under the dispatch mode, so the counted run takes the same path as the plain one.
_FUNCTION_MODE_SENSITIVE = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer,
                            torch.nn.TransformerEncoder)
#: Argument types that leave a function's ops as they are (``types`` of ``__torch_function__``).
_PLAIN_TYPES = frozenset(PLAIN_TENSORS)


def _classify(func: Any, counter: "FlopCounter") -> int:
    try:
        if func is torch.Tensor.backward:
            return _BACKWARD
        if func in _ALWAYS_PROBE:
            return _PROBE
        if func in _METADATA_FUNCS:
            return _PASS
        if free_under(func, counter.handler):
            return _FREE
    except TypeError:  # an unhashable callable
        return _PROBE
    if getattr(func, "__name__", None) == "__get__":
        attr = getattr(getattr(func, "__self__", None), "__name__", None)
        return _PASS if attr in _METADATA_ATTRS else _REPLAY
    return _REPLAY


class _Trace:
    """What the ops of one probed function call counted, to charge again for calls of the same signature."""

    __slots__ = ("charges", "uncounted", "devices", "ok", "live")

    def __init__(self) -> None:
        self.charges: list[tuple[str, tuple[tuple[str, int], ...], int]] = []  # (label, by category, total)
        self.uncounted: list[str] = []
        self.devices: set[Any] = set()  # of the ops that charged
        self.ok = True  # False: something ran that a replay would not reproduce
        self.live = False  # it charged or noted something: a replay is logged

    def note(self, key: tuple[str, str], cats: tuple[tuple[str, int], ...], total: int, backward: bool,
             out: Any) -> None:
        """An op of the traced call charged: the label alone (a replay charges the module running it then)."""
        if backward:
            self.ok = False  # a call that ran the backward: not replayed
            return
        self.charges.append((key[1], cats, total))
        self.devices.update(_devices_of(out))


class _BackwardTrace(_Trace):
    """What a whole backward pass counted (see backward.py): each charge with its module path, forward or not."""

    __slots__ = ("keyed",)

    def __init__(self) -> None:
        super().__init__()
        #: ((module path, label), by category, total, whether a backward op)
        self.keyed: list[tuple[tuple[str, str], tuple[tuple[str, int], ...], int, bool]] = []

    def note(self, key: tuple[str, str], cats: tuple[tuple[str, int], ...], total: int, backward: bool,
             out: Any) -> None:
        self.keyed.append((key, cats, total, backward))
        self.devices.update(_devices_of(out))


#: Per registry: (its generation and the ops selection, handlers, function kinds, traces), shared by the
#: counters that use it, so a second count of a model replays from its first call on. A registration
#: changes the generation and starts afresh; a registry that is freed takes its entry with it.
_SHARED: "weakref.WeakKeyDictionary[Registry, dict[Any, tuple[dict, dict, dict]]]" = weakref.WeakKeyDictionary()
_MAX_TRACES = 100_000
#: Replayed calls logged before they are summed (at exit, or when the log reaches this length).
_REPLAY_LOG_LIMIT = 100_000


def _shared(registry: Registry, ops: str) -> tuple[dict, dict, dict]:
    generation = registry.generation()
    entries = _SHARED.get(registry)
    if entries is None:
        entries = _SHARED[registry] = {}
    found = entries.get((generation, ops))
    if found is None or len(found[2]) > _MAX_TRACES:
        for stale in [k for k in entries if k[0] != generation]:
            del entries[stale]
        found = entries[(generation, ops)] = ({}, {}, {})
    return found


# -- the modes ------------------------------------------------------------
class _Mode(TorchDispatchMode):
    """The op-level layer of one thread: one dict lookup and one handler call per op."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo by default, which imports
        # torch._dynamo (over a second) on the first op. Only _CompileSafeMode takes that wrapper.
        return False

    def __init__(self, counter: "FlopCounter", view: ThreadView) -> None:
        super().__init__()
        self.counter = counter
        self.view = view  # the tracker's view of the thread this mode counts for
        self.handlers = counter.handlers
        self.suppress = 0  # > 0 inside a module with a module formula (and forever once the counter closed)
        self.trace: _Trace | None = None  # the trace of the function call being probed
        self.function_mode: _FunctionMode | None = None
        self.log = CallLog()  # which forward call made each autograd node, for a backward's signature
        self.backward = False  # a backward runs through backward.py: torch calls are counted as they run
        self.dispatching = False  # ... and under this mode (its first run: it is being traced)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if self.suppress:
            return func(*args, **kwargs) if kwargs else func(*args)
        handler = self.handlers.get(func)
        if handler is None:
            handler = self.counter.resolve(func)
        return handler.run(self, func, args, kwargs or {})


class _CompileSafeMode(_Mode):
    """The same mode with torch's guard that keeps torch.compile from tracing into it.

    Used when ``torch._dynamo`` is already imported (the user compiles), so the guard costs no import.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return True

    __torch_dispatch__ = _Mode.__torch_dispatch__  # in this class's __dict__, so torch wraps it


class _FunctionMode(TorchFunctionMode):
    """The fast layer: replays the trace of a known call signature, probes new ones under the dispatch mode."""

    def __init__(self, lane: _Mode) -> None:
        super().__init__()
        self.lane = lane
        self.counter = lane.counter
        self.kinds = lane.counter.kinds
        self.traces = lane.counter.traces
        self.replays = lane.counter._replays

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if kwargs is None:
            kwargs = {}
        lane = self.lane
        if lane.suppress:
            return func(*args, **kwargs)
        kind = self.kinds.get(func)
        if kind is None:
            kind = self.kinds[func] = _classify(func, self.counter)
        if kind == _PASS:
            return func(*args, **kwargs)
        if lane.backward:
            return self.counter.backward_call(lane, func, args, kwargs)
        below = function_stack_len()  # torch-function modes under this one (it is popped while it runs)
        if below and not modes_allow(func, below) or functorch_active():
            # No signature (see signature.py): another mode may change what runs; under vmap and the other
            # torch.func transforms a tensor's shape is its per-sample one, not the shape its ops run on.
            return self.counter.probe(lane, func, args, kwargs, None)
        if kind == _FREE:  # see zero_calls.py
            if not _grad_enabled() and _PLAIN_TYPES.issuperset(types):
                return func(*args, **kwargs)
            kind = _REPLAY
        key: Any = None
        if kind == _REPLAY:
            try:
                key = call_key(func, args, kwargs)
                trace = self.traces.get(key)
            except (NoSignature, TypeError, RuntimeError):  # RuntimeError: e.g. the shape of a nested tensor
                key = trace = None
            if trace is not None:
                path = lane.view.path
                if key[1]:  # grad mode: note the autograd nodes the call makes
                    first = sequence_nr()
                    out = func(*args, **kwargs)
                    end = sequence_nr()
                    if end != first:
                        lane.log.add(first, end, trace, path)
                else:
                    out = func(*args, **kwargs)
                if trace.live:
                    replays = self.replays
                    replays.append((path, trace))
                    if len(replays) >= _REPLAY_LOG_LIMIT:
                        self.counter.sum_replays()
                return out
        elif kind == _BACKWARD:
            return self.counter.backward(lane, func, args, kwargs)
        return self.counter.probe(lane, func, args, kwargs, key)


TRANSPARENT_MODES[_FunctionMode] = frozenset()  # an outer counter's: it counts, and runs each call as it is


# -- module-event tokens ----------------------------------------------------
_INSIDE = object()  # a module inside a module-formula module
_SWITCHED = object()  # a module whose subtree runs under the dispatch mode (see _FUNCTION_MODE_SENSITIVE)
_UNSHADOWED = object()  # the same, run while a backward is traced: only the function mode steps aside


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
        self._fast_path = bool(fast_path)
        self._computed = _computed
        self.memory = bool(memory)
        self._memory: Any = None  # the memory tracker (counting/memory.py), from __enter__ on with memory=True
        self._active = False
        self._reset()

    def _reset(self) -> None:
        self.handlers, self.kinds, self.traces = _shared(self.registry, self.ops)
        self._module_formulas: dict[type, Any] = {}
        self._has_module_formulas = self.registry.has_module_formulas()
        self._stacks: dict[tuple[str, str], int] = {}
        self._by_category: dict[str, int] = {}
        self._types: dict[str, str] = {}  # modules listed in by_module, in the order they first ran
        self._uncounted: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._collective_bytes: dict[str, int] = {}
        self._devices: set[Any] = set()
        self._forward = 0
        self._backward = 0
        self._events = 0  # module calls seen: a probe during which one ran is not replayed
        #: module calls whose charges a backward's trace would hold although they are counted as they run (a
        #: module formula's, a switched subtree's ops): a traced backward during which one ran is not kept
        self._untraceable = 0
        self._replays: list[tuple[str, _Trace]] = []  # (module path, trace) of each replayed call, summed at exit
        self._lanes: dict[ThreadView, _Mode] = {}
        self._tracker: Any = None  # the module tracker, from __enter__ on

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> "FlopCounter":
        if self._active:
            raise RuntimeError("this FlopCounter is already active; nest a new FlopCounter instead")
        self._reset()
        self.measurement = None
        tracker = self._tracker = ModuleTracker(self.model)
        tracker.subscribe(self)
        home = self._lane(tracker.home)
        tracker.install()
        try:
            if self.memory:  # entered below our modes: a replayed call still runs its ops through it
                self._memory = self._new_memory_tracker(tracker)
                self._memory.__enter__()
            self._push(home)
            if self._fast_path and not BACKWARD_SEEN:
                watch_engine(_DirectBackward.scope)
        except BaseException:
            tracker.remove()
            if self._memory is not None:
                self._memory.__exit__(None, None, None)
                self._memory = None
            raise
        self._active = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._tracker.remove()
        finally:
            self._active = False
            for lane in list(self._lanes.values()):
                lane.suppress = _CLOSED
            home = self._lanes[self._tracker.home]
            pop_dispatch_if_top(home)  # if the block ended inside a module whose subtree switched modes
            self._pop(home)
            if self._fast_path and not BACKWARD_SEEN:
                unwatch_engine()
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
                "pytest_flops.register_op_formula(op, fn) or use strict=False",
                calls, self.measurement,
            )

    def _new_memory_tracker(self, tracker: ModuleTracker) -> Any:
        from .memory import MemoryTracker

        def where(node: Any) -> str:
            if node is not None:
                return tracker.backward_path(node)
            view = tracker.view()
            return view.path if view is not None else ""

        model = self.model
        return MemoryTracker(where, (lambda: (model,)) if model is not None else (lambda: tracker.roots.values()))

    def _lane(self, view: ThreadView) -> _Mode:
        """The modes that count for one thread (the home thread, or a worker: see tracker.py)."""
        lane = self._lanes.get(view)
        if lane is None:
            lane = (_CompileSafeMode if "torch._dynamo" in sys.modules else _Mode)(self, view)
            if self._fast_path:
                lane.function_mode = _FunctionMode(lane)
            self._lanes[view] = lane
        return lane

    def _push(self, lane: _Mode) -> None:
        if lane.function_mode is not None:
            push_function(lane.function_mode)
        else:
            push_dispatch(lane)

    def _pop(self, lane: _Mode) -> None:
        if lane.function_mode is not None:
            pop_function_if_top(lane.function_mode)
        else:
            pop_dispatch_if_top(lane)

    # -- tracker events ------------------------------------------------------
    def thread_enter(self, view: ThreadView) -> None:
        self._push(self._lane(view))

    def thread_exit(self, view: ThreadView) -> None:
        lane = self._lanes.get(view)
        if lane is not None:
            pop_dispatch_if_top(lane)
            self._pop(lane)

    def module_enter(self, view: ThreadView, frame: Frame, module: torch.nn.Module, args: tuple) -> Any:
        lane = self._lanes.get(view)
        if lane is None:
            return None
        if lane.suppress:
            lane.suppress += 1
            return _INSIDE
        self._events += 1
        name = frame.name
        if name not in self._types:
            self._types[name] = type(module).__name__
        if self._has_module_formulas:
            entry = self._module_formula(type(module))
            if entry is not None:
                lane.suppress = 1
                self._untraceable += 1
                return entry
        if lane.function_mode is not None and isinstance(module, _FUNCTION_MODE_SENSITIVE) \
                and pop_function_if_top(lane.function_mode):
            if lane.dispatching:  # a backward being traced, already under the dispatch mode (a hook runs it)
                self._untraceable += 1
                return _UNSHADOWED
            push_dispatch(lane)
            return _SWITCHED
        return None

    def module_exit(self, view: ThreadView, frame: Frame, module: torch.nn.Module, args: tuple,
                    output: Any) -> None:
        token = frame.token
        if token is None:
            return
        lane = self._lanes[view]
        if token is _INSIDE:
            lane.suppress -= 1
        elif token is _SWITCHED or token is _UNSHADOWED:
            if token is _SWITCHED:
                pop_dispatch_if_top(lane)
            if lane.suppress < _CLOSED:
                push_function(lane.function_mode)
        elif lane.suppress < _CLOSED:
            lane.suppress = 0
            if output is not None:
                fn, category = token
                self._record_module_formula(lane, module, fn, category, args, output)

    def _module_formula(self, module_type: type) -> Any:
        try:
            return self._module_formulas[module_type]
        except KeyError:
            entry = self._module_formulas[module_type] = self.registry.lookup_module(module_type)
            return entry

    # -- called by the modes and handlers --------------------------------------
    def _selected(self, category: str) -> bool:
        return self.ops == "all" or category not in _NOT_MATMUL_BUILTIN

    def resolve(self, func: Any) -> Any:
        handler = self.handlers[func] = resolve(func, self.registry, self._selected)
        return handler

    def handler(self, func: Any) -> Any:
        """The handler of op overload ``func``."""
        handler = self.handlers.get(func)
        return handler if handler is not None else self.resolve(func)

    def probe(self, lane: _Mode, func: Any, args: tuple, kwargs: dict, key: Any) -> Any:
        """Run one function call under the dispatch mode; keep its trace under ``key`` if it can be replayed."""
        trace = _Trace() if key is not None else None
        saved, lane.trace = lane.trace, trace
        events = self._events
        path = lane.view.path
        first = sequence_nr()
        push_dispatch(lane)
        try:
            out = func(*args, **kwargs)
        finally:
            pop_dispatch_if_top(lane)
            lane.trace = saved
        if trace is not None and (not trace.ok or events != self._events):
            trace = None  # not kept: a node it made gives its backward no signature
        if trace is not None:
            trace.live = bool(trace.charges or trace.uncounted)
            self.traces[key] = trace
        end = sequence_nr()
        if end != first:
            lane.log.add(first, end, trace, path)
        return out

    def backward(self, lane: _Mode, func: Any, args: tuple, kwargs: dict) -> Any:
        """``loss.backward()``: replayed from the trace of a backward with the same graph signature, if one ran
        (``backward.py``), else run under the dispatch mode and traced; one the signature cannot describe is
        probed as any call is."""
        # Another mode (an outer counter's, the memory tracker's, a fake-tensor mode) must see the backward as it
        # runs: its own calls to ops would reach the function mode pushed below, and be counted twice.
        alone = not function_stack_len() and not dispatch_stack_len()
        plain = plain_backward_root(args, kwargs) if alone else None
        sig = None
        if plain is not None:
            root, retain = plain
            try:
                found = graph_signature(root, lane.log, lane.view.path, retain)
            except Exception:  # a node the walk cannot read: the backward runs as any call does
                found = None
            sig = ("backward", found) if found is not None else None
        if sig is None:
            return self.probe(lane, func, args, kwargs, None)
        trace = self.traces.get(sig)
        fmode = lane.function_mode
        lane.backward = True
        push_function(fmode)  # torch calls of hooks and custom Functions are counted as they run
        try:
            if trace is not None:
                run_backward(root, retain)
            else:
                traced = _BackwardTrace()
                saved, lane.trace = lane.trace, traced
                untraceable = self._untraceable  # modules that run in the backward (checkpointing) are not
                push_dispatch(lane)                # part of its trace: their calls are counted as they run
                lane.dispatching = True
                try:
                    run_backward(root, retain)
                finally:
                    lane.dispatching = False
                    pop_dispatch_if_top(lane)
                    lane.trace = saved
                if traced.ok and untraceable == self._untraceable:
                    self.traces[sig] = traced
        finally:
            pop_function_if_top(fmode)
            lane.backward = False
        if trace is not None:
            self._charge_backward(trace)
        return None

    def backward_call(self, lane: _Mode, func: Any, args: tuple, kwargs: dict) -> Any:
        """A torch call made while ``backward`` runs (a hook, a custom Function's ``backward``, a checkpoint's
        recomputation): counted as it runs, under the dispatch mode, never part of the backward's trace."""
        saved, lane.trace = lane.trace, None
        try:
            if lane.dispatching:
                return func(*args, **kwargs)
            push_dispatch(lane)
            try:
                return func(*args, **kwargs)
            finally:
                pop_dispatch_if_top(lane)
        finally:
            lane.trace = saved

    def _charge_backward(self, trace: _BackwardTrace) -> None:
        with self._lock:
            for key, cats, total, backward in trace.keyed:
                self._book(key, cats, total, backward)
            self._book_notes(trace, 1)

    def sum_replays(self) -> None:
        """Charge the logged replays: each distinct (module path, trace) once, times its number of calls.

        At exit, and from the function mode when the log is long (a counter around a long loop), while other
        threads may append to it: what is summed is taken from its front, under the lock.
        """
        with self._lock:
            n = len(self._replays)
            calls = Counter(self._replays[:n])  # a trace hashes by identity
            del self._replays[:n]  # the modes hold this list: emptied in place
            for (path, trace), times in calls.items():
                for label, cats, total in trace.charges:
                    self._book((path, label), cats, total, False, times)
                self._book_notes(trace, times)

    def _book_notes(self, trace: _Trace, times: int) -> None:
        for name in trace.uncounted:
            self._uncounted[name] += times
        self._devices.update(trace.devices)

    def charge(self, lane: _Mode, label: str, category: str, flops: Any, out: Any) -> None:
        """Charge an op's FLOPs (an int, a ``{category: FLOPs}`` mapping or a :class:`Split`)."""
        node = current_autograd_node()
        with self._lock:
            if type(flops) is int:
                if not flops:
                    return
                cats: tuple[tuple[str, int], ...] = ((category, flops),)
                total = flops
            else:
                split = flops if isinstance(flops, Split) else None
                totals = split.totals() if split is not None else flops
                cats = tuple((c, int(v)) for c, v in totals.items() if v and self._selected(c))
                total = sum(v for _, v in cats)
                if not total:
                    return
                if split is not None and node is None and self._charge_split(lane, label, split):
                    self._add_categories(cats)
                    self._forward += total
                    self._record_device(out)
                    return
            if node is None:
                key = (lane.view.path, label)
            else:
                key = (self._tracker.backward_path(node), label + " (backward)")
            self._book(key, cats, total, node is not None)
            if lane.trace is not None:
                lane.trace.note(key, cats, total, node is not None, out)
            self._record_device(out)

    def _book(self, key: tuple[str, str], cats: tuple[tuple[str, int], ...], total: int, backward: bool,
              times: int = 1) -> None:
        """Add one charge (``times`` over) to the totals, the categories and the stacks; the lock is held."""
        by_cat = self._by_category
        for cat, value in cats:
            by_cat[cat] = by_cat.get(cat, 0) + value * times
        if backward:
            self._backward += total * times
        else:
            self._forward += total * times
        self._stacks[key] = self._stacks.get(key, 0) + total * times

    def _add_categories(self, cats: Iterable[tuple[str, int]]) -> None:
        by_cat = self._by_category
        for cat, value in cats:
            by_cat[cat] = by_cat.get(cat, 0) + value

    def _charge_split(self, lane: _Mode, label: str, split: Split) -> bool:
        """Charge a fused op's parts to the children of the running module, if it has them all."""
        view = lane.view
        if not view.stack:
            return False
        if lane.trace is not None:
            lane.trace.ok = False  # the split depends on the module running it
        inner = view.stack[-1].name
        children = {child: f"{inner}.{child}" for child in split.parts if child}
        known = self._tracker.known_names()
        if not all(name in known for name in children.values()):
            return False
        for child, part in split.parts.items():
            value = sum(v for cat, v in part.items() if self._selected(cat))
            if child:
                name = children[child]
                if name not in self._types:  # listed like a child that ran, even at 0 FLOPs
                    self._types[name] = split.types.get(child, "")
            if not value:
                continue
            key = (f"{view.path};{name}", label) if child else (view.path, label)
            self._stacks[key] = self._stacks.get(key, 0) + value
        return True

    def _record_device(self, out: Any) -> None:
        self._devices.update(_devices_of(out))

    def note_collective(self, func: Any, args: tuple) -> None:
        """Bytes of a collective's payload: its first argument (the tensors it reduces, sends or fills)."""
        from torch.utils._pytree import tree_leaves

        payload = sum(t.numel() * t.element_size() for t in tree_leaves(args[:1]) if isinstance(t, torch.Tensor))
        label = str(func._overloadpacket)
        with self._lock:
            self._collective_bytes[label] = self._collective_bytes.get(label, 0) + payload

    def note_uncounted(self, lane: _Mode, name: str) -> None:
        with self._lock:
            self._uncounted[name] += 1
        if lane.trace is not None:
            lane.trace.uncounted.append(name)

    def _record_module_formula(self, lane: _Mode, module: torch.nn.Module, fn: Any, category: str,
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
        self.charge(lane, f"{type(module).__name__} (module formula)", category, flops, output)

    # -- result --------------------------------------------------------------
    def _parameter_counts(self, ran: Mapping[str, int]) -> tuple[int, int, dict[str, int]]:
        """(parameters, trainable parameters, parameters of each module that ran): each parameter once, as
        ``module.parameters()`` counts them (children included, a shared one once).

        One walk of each root (the model, or the modules the counter saw): each parameter is added to the
        modules above it that ran, not one walk of every subtree.
        """
        roots: Iterable[torch.nn.Module] = (self.model,) if self.model is not None else self._tracker.roots.values()
        name_of = self._tracker.name_of
        try:
            return _unshared_parameter_counts(roots, name_of, ran)
        except _Shared:
            pass
        out: dict[str, int] = {}
        seen: set[int] = set()  # parameters stay alive through their modules while this runs
        totals = [0, 0]
        chain: list[list[Any]] = []  # [name, ids of the parameters counted, count] of the ran modules above
        on_path: set[int] = set()

        def visit(module: torch.nn.Module) -> None:
            if id(module) in on_path:  # a module that holds one of its parents: walked already
                return
            on_path.add(id(module))
            name = name_of(module)
            entry = None
            if name in ran and name not in out:  # a module under two parents: counted where first reached
                entry = [name, set(), 0]
                chain.append(entry)
            for param in module._parameters.values():
                if param is None:
                    continue
                if id(param) not in seen:
                    seen.add(id(param))
                    totals[0] += param.numel()
                    if param.requires_grad:
                        totals[1] += param.numel()
                for e in chain:
                    if id(param) not in e[1]:
                        e[1].add(id(param))
                        e[2] += param.numel()
            for child in module._modules.values():
                if child is not None:
                    visit(child)
            if entry is not None:
                chain.pop()
                out[name] = entry[2]
            on_path.discard(id(module))

        for root in roots:
            visit(root)
        return totals[0], totals[1], out

    def _measure(self) -> Measurement:
        self.sum_replays()
        tracker = self._tracker
        by_module: dict[str, int] = dict.fromkeys(self._types, 0)
        by_op: dict[str, int] = {}
        stacks: dict[str, int] = {}
        for key, flops in self._stacks.items():
            parts = _STACK_PARTS.get(key)
            if parts is None:
                parts = _stack_parts(key)
            stack, op, names = parts
            stacks[stack] = flops
            by_op[op] = by_op.get(op, 0) + flops
            for name in names:
                by_module[name] = by_module.get(name, 0) + flops
        types = dict(self._types)
        for name in by_module:
            if name not in types and name in tracker.types:
                types[name] = tracker.types[name]
        if self.model is not None:
            name = tracker.name_of(self.model, type(self.model).__name__)
        elif len(tracker.roots) == 1:
            name = tracker.name_of(next(iter(tracker.roots.values())))
        else:
            name = "FlopCounter"
        params, trainable, module_params = self._parameter_counts(by_module)
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
            module_types=types,
            module_params=module_params,
            stacks=stacks,
            ops=self.ops,
            computed=self._computed,
            extra={"collective_bytes": dict(self._collective_bytes)} if self._collective_bytes else {},
        )


#: Per (module path, op label) of a charge: its folded stack, its op, and the module names in the path, each
#: once (a module calling itself is charged once): the same keys come back count after count.
_STACK_PARTS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {}


def _stack_parts(key: tuple[str, str]) -> tuple[str, str, tuple[str, ...]]:
    if len(_STACK_PARTS) > 100_000:
        _STACK_PARTS.clear()
    path, label = key
    parts = _STACK_PARTS[key] = (f"{path};{label}" if path else label, label.removesuffix(" (backward)"),
                                 tuple(dict.fromkeys(path.split(";"))) if path else ())
    return parts


class _DirectBackward:
    """What a direct ``torch.autograd.backward`` call runs under on torch before 2.10 (``backward.py``): the
    dispatch mode of each counter whose function mode is on this thread's stack, unless it is on already. A
    counter that is running a backward (this one is nested in its Python code: a reentrant checkpoint's) sets
    its trace aside, as ``backward_call`` does: the nested backward is counted as it runs, never replayed."""

    def __init__(self, lanes: list[_Mode], on: set[int]) -> None:
        self.lanes = lanes
        self.on = on
        self.saved: list[Any] = []
        self.pushed: list[_Mode] = []

    @classmethod
    def scope(cls) -> "_DirectBackward | None":
        n = function_stack_len()
        if not n:
            return None
        modes = (function_stack_at(i) for i in range(n))
        lanes = [m.lane for m in modes if isinstance(m, _FunctionMode)]
        on = {id(dispatch_stack_at(i)) for i in range(dispatch_stack_len())}
        if not any(lane.backward or id(lane) not in on for lane in lanes):
            return None
        return cls(lanes, on)

    def __enter__(self) -> None:
        for lane in self.lanes:
            self.saved.append(lane.trace)
            if lane.backward:
                lane.trace = None
            if id(lane) not in self.on:
                push_dispatch(lane)
                self.pushed.append(lane)

    def __exit__(self, *exc: Any) -> None:
        for lane in reversed(self.pushed):
            pop_dispatch_if_top(lane)
        for lane, trace in zip(self.lanes, self.saved):
            lane.trace = trace


def _devices_of(out: Any) -> tuple[Any, ...]:
    """The device of an op's output (of its first element, for a tuple or list); () if it has none."""
    device = getattr(out, "device", None)
    if device is None and isinstance(out, (tuple, list)) and out:
        device = getattr(out[0], "device", None)
    return () if device is None else (device,)


class _Shared(Exception):
    """A module or parameter reached twice: the general walk of ``FlopCounter._parameter_counts`` is needed."""


def _unshared_parameter_counts(roots: Iterable[torch.nn.Module], name_of: Any,
                               ran: Mapping[str, int]) -> tuple[int, int, dict[str, int]]:
    """``_parameter_counts`` for models where each module and parameter is reached once (most of them).

    A module's count is then its own parameters plus its children's counts: one pass, no sets per module.
    Raises :class:`_Shared` at the first module or parameter reached a second time.
    """
    seen: set[int] = set()
    out: dict[str, int] = {}
    totals = [0, 0]

    def visit(module: torch.nn.Module) -> int:
        if id(module) in seen:
            raise _Shared
        seen.add(id(module))
        n = 0
        for param in module._parameters.values():
            if param is not None:
                if id(param) in seen:
                    raise _Shared
                seen.add(id(param))
                k = param.numel()
                n += k
                if param.requires_grad:
                    totals[1] += k
        for child in module._modules.values():
            if child is not None:
                n += visit(child)
        name = name_of(module)
        if name in ran and name not in out:
            out[name] = n
        return n

    for root in roots:
        totals[0] += visit(root)
    return totals[0], totals[1], out


def device_name(device: Any) -> str:
    if device.type == "cuda" and device.index is None:
        return "cuda:0"
    return str(device)
