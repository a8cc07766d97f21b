"""A backward pass counted without a dispatch mode: the graph's signature and the engine call.

The counter (``counter.py``) runs ``loss.backward()`` under its dispatch mode
once per *graph signature*, keeps what its ops counted as a trace, and for a
later backward whose graph has the same signature runs the engine with no
dispatch mode and charges the trace. A do-nothing dispatch mode over the
backward of a small GPT costs 1.11-1.18x of the whole training step: that is
what this saves (``docs/performance.md``).

The signature says everything the engine's ops depend on. The graph is walked
from the root, breadth first over ``next_functions``; each node is described
by its type, the function call of the forward that made it (the call's trace,
which stands for the function and the metadata of its arguments, and the
module path it ran in), its place among that call's nodes, and its edges by
their index in the walk. An ``AccumulateGrad`` node is described by its leaf
and the leaf's current ``.grad`` (none, or its metadata: ``+=`` runs ops that
a first gradient does not). A custom ``autograd.Function``'s node (made by
``Function.apply``, which no function mode sees) is described by its
Function: its backward is Python. Global switches that change the ops
(anomaly mode and its NaN checks, deterministic algorithms) are part of it.
A node made by no call the counter saw (before the count, in a module with a
module formula, on another thread) gives no signature, and the backward runs
under the dispatch mode.

Python code the backward runs (tensor and module hooks, a custom Function's
``backward``, a checkpoint's recomputation, modules included) is not part of
the trace: the counter's function mode stays pushed through the backward,
and each torch call such code makes is counted as it runs, under the dispatch
mode. Only what would be counted both as it runs and in the trace (a module
formula's charge, or a fused-path module's ops, in a backward being traced)
keeps a trace from being stored.

Only ``loss.backward()`` of a real floating scalar with no ``gradient``, no
``inputs`` and ``create_graph=False`` takes this path; anything else
(``autograd.grad``, ``inputs=``, a non-scalar root, double backward) runs
under the dispatch mode as before.

Old torch: ``torch.autograd.backward`` looks for torch-function modes only from
torch 2.10 on, so before that a function mode never sees a direct call of it
(``Tensor.backward`` and ``autograd.grad`` it does see). There, while a
counter with a function mode is active, :func:`watch_engine` puts a wrapper on
``torch.autograd._engine_run_backward`` (what ``torch.autograd.backward``
calls) that pushes the dispatch mode of each counter on the calling thread for
the length of the engine call; the last counter to exit takes it off.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Callable

import torch

from ._torch import (autograd_engine_call, engine_run_backward, function_stack_len, functorch_active,
                     pop_function, push_function, set_autograd_engine_call)
from .signature import PLAIN_TENSORS, value_key

__all__ = ["plain_backward_root", "graph_signature", "run_backward", "CallLog", "BACKWARD_SEEN", "watch_engine",
           "unwatch_engine"]

#: Whether a torch-function mode sees a direct call of ``torch.autograd.backward`` (torch 2.10 and later).
BACKWARD_SEEN = "handle_torch_function" in getattr(torch.autograd.backward, "__code__", compile("", "", "exec")).co_names

_NAMES = ("self", "gradient", "retain_graph", "create_graph", "inputs")


def plain_backward_root(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any] | None:
    """``(root, retain_graph)`` of a ``Tensor.backward`` call this module can run, else None."""
    if len(args) > len(_NAMES) or engine_run_backward is None:
        return None
    bound: dict[str, Any] = dict(zip(_NAMES, args))
    for name, value in kwargs.items():
        if name not in _NAMES or name in bound:
            return None
        bound[name] = value
    root: Any = bound.get("self")
    if type(root) not in PLAIN_TENSORS or bound.get("gradient") is not None or bound.get("inputs") is not None \
            or bound.get("create_graph", False) is not False:
        return None
    if root.grad_fn is None or not root.dtype.is_floating_point or root.is_nested or root.numel() != 1 \
            or functorch_active():
        return None
    return root, bound.get("retain_graph")


def run_backward(root: torch.Tensor, retain_graph: Any) -> None:
    """What ``root.backward()`` does for a real floating scalar: a gradient of ones, then the engine."""
    assert engine_run_backward is not None  # plain_backward_root said so
    grad = torch.ones_like(root, memory_format=torch.preserve_format)
    engine_run_backward((root,), (grad,), bool(retain_graph), False, (), allow_unreachable=True,
                        accumulate_grad=True)


#: How many calls a thread's log keeps (see :class:`CallLog`).
CALL_LOG_LIMIT = 200_000


class CallLog:
    """The forward's function calls that made autograd nodes, on one thread: which call made a node.

    It keeps the last ``limit`` calls: a counter around a long training loop does not grow without bound,
    and a backward that reaches a node older than that gets no signature (it runs under the dispatch mode).
    """

    __slots__ = ("starts", "calls", "limit")

    def __init__(self) -> None:
        self.starts: list[int] = []  # the first sequence number of each call's nodes, increasing
        self.calls: list[tuple[int, int, Any, str]] = []  # (first, end, the call's trace or None, module path)
        self.limit = CALL_LOG_LIMIT

    def add(self, first: int, end: int, trace: Any, path: str) -> None:
        if len(self.starts) >= self.limit:
            keep = self.limit // 2
            del self.starts[:-keep]
            del self.calls[:-keep]
        self.starts.append(first)
        self.calls.append((first, end, trace, path))

    def find(self, seq: int) -> tuple[Any, str, int] | None:
        """(trace, path, the node's place in the call) of the call that made node ``seq``, if one did."""
        i = bisect.bisect_right(self.starts, seq) - 1
        if i < 0:
            return None
        first, end, trace, path = self.calls[i]
        if seq >= end or trace is None:
            return None
        return trace, path, seq - first


def _leaf(node: Any) -> tuple | None:
    var: Any = getattr(node, "variable", None)
    if type(var) not in PLAIN_TENSORS:
        return None
    grad = var.grad
    held = None if grad is None else (type(grad), grad.shape, grad.stride(), grad.dtype, grad.layout, grad.device)
    return ("leaf", value_key(var), held)


def _python_function(node: Any) -> tuple | None:
    """A custom ``autograd.Function``'s node (``Function.apply`` is no call a function mode sees): described
    by its Function. Its backward is Python, whose torch calls are counted as they run."""
    cls = getattr(node, "_forward_cls", None)
    return None if cls is None else ("function", cls)


def graph_signature(root: torch.Tensor, log: CallLog, path: str, retain_graph: Any) -> tuple | None:
    """The signature of the backward from ``root`` (see the module doc), or None if it has none."""
    first: Any = root.grad_fn
    index = {first: 0}
    order: list[Any] = [first]
    entries: list[Any] = [path, bool(retain_graph), torch.is_anomaly_enabled(),
                          torch.is_anomaly_check_nan_enabled(), torch.are_deterministic_algorithms_enabled(),
                          value_key(root)]
    append = entries.append
    i = 0
    while i < len(order):
        node = order[i]
        i += 1
        name = node.name()
        made = log.find(node._sequence_nr())
        if made is None:
            made = _leaf(node) if name.endswith("AccumulateGrad") else _python_function(node)
            if made is None:
                return None
        edges: list[int] = []
        for nxt, nr in node.next_functions:
            if nxt is None:
                edges.append(-1)
                continue
            j = index.get(nxt)
            if j is None:
                j = index[nxt] = len(order)
                order.append(nxt)
            edges.append(j)
            edges.append(nr)
        append((name, made, tuple(edges)))
    return tuple(entries)


# -- old torch: the engine call of torch.autograd.backward ------------------
_watch_lock = threading.Lock()
_watchers = 0
_unwatched: Any = None  # torch's own function while the wrapper is on
_wrapper: Any = None  # the wrapper, while it is on


def watch_engine(scope: Callable[[], Any]) -> None:
    """Put the wrapper on (or count one more counter using it). ``scope()``, called on the calling thread as
    the engine call starts, gives the context manager the engine runs in (the dispatch modes it pushes), or
    None when no counter there needs one."""
    global _watchers, _unwatched, _wrapper
    with _watch_lock:
        _watchers += 1
        if _watchers > 1:
            return
        original = _unwatched = autograd_engine_call()

        def _engine_run_backward(*args: Any, **kwargs: Any) -> Any:
            entered = scope()
            if entered is None:
                return original(*args, **kwargs)
            # as when a function mode handles the call: the engine runs with the function modes set aside
            # (else each op a dispatch mode calls from Python would reach them again) and the dispatch modes on
            stashed = []
            try:
                while function_stack_len():
                    stashed.append(pop_function())
                with entered:
                    return original(*args, **kwargs)
            finally:
                for fmode in reversed(stashed):
                    push_function(fmode)

        _wrapper = _engine_run_backward
        set_autograd_engine_call(_engine_run_backward)


def unwatch_engine() -> None:
    """One counter less; the last one puts torch's function back (unless something wrapped it since)."""
    global _watchers, _unwatched, _wrapper
    with _watch_lock:
        _watchers -= 1
        if _watchers:
            return
        if autograd_engine_call() is _wrapper:
            set_autograd_engine_call(_unwatched)
        _unwatched = _wrapper = None
