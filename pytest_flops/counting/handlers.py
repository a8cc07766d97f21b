"""What the counter does with one aten op: a small object with one method, ``run``.

The registry's entry for an op becomes one handler per counter, worked out on
the op's first call (``resolve``) and cached by op overload:

* :class:`Formula`: run the op, then count it with its formula;
* :class:`KnownZero`: run it (views, copies, ops whose category is not selected);
* :class:`Decompose`: no entry, but the op decomposes: run its decomposition
  under the mode, so its parts are counted;
* :class:`Uncounted`: no entry and no decomposition: run it and record it;
* :class:`Collective`: a communication op: zero FLOPs, its payload bytes recorded;
* :class:`ValueDependent` wraps one of these for an op whose output shape or
  value depends on tensor values: a function call that ran one is never replayed.

``mode`` is the counter's dispatch mode of the running thread: ``mode.counter``
records, ``mode.trace`` is the trace of the function call being probed (or None).
"""

from __future__ import annotations

from typing import Any

import torch

from ._torch import DYNAMIC_TAGS, has_composite_kernel

__all__ = ["Formula", "KnownZero", "Decompose", "Uncounted", "Collective", "ValueDependent", "resolve",
           "COLLECTIVE_NAMESPACES"]

#: Namespaces of collective ops: zero FLOPs, but the bytes of their payload are recorded.
COLLECTIVE_NAMESPACES = frozenset({"c10d", "_c10d_functional"})
_NO_PAYLOAD = frozenset({"barrier", "monitored_barrier_", "wait_tensor"})


class FormulaError(RuntimeError):
    """A formula raised while counting an op or a module."""


def _symbolic(flops: Any) -> bool:
    """Whether a formula's result holds a count no int can be made of (a jagged nested tensor's ``j1`` size)."""
    values = flops.values() if isinstance(flops, dict) else (flops,)
    for value in values:
        if isinstance(value, torch.SymInt):
            try:
                int(value)
            except Exception:
                return True
    return False


class Formula:
    """Count the op with ``fn(*args, out=output, **kwargs)``."""

    __slots__ = ("fn", "category", "label", "user")

    def __init__(self, fn: Any, category: str, label: str, user: bool) -> None:
        self.fn = fn
        self.category = category
        self.label = label
        self.user = user  # a user's formula may read tensor values: its calls are never replayed

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        if "out" in kwargs:  # an out= variant: the formula gets the output as ``out``
            kwargs = {k: v for k, v in kwargs.items() if k != "out"}
        try:
            flops = self.fn(*args, out=out, **kwargs)
        except Exception as exc:
            raise FormulaError(f"the formula for {self.label} failed: {type(exc).__name__}: {exc}") from exc
        if type(flops) is not int and _symbolic(flops):
            raise FormulaError(f"cannot count {self.label} on a jagged nested tensor: its count depends on the "
                               "ragged sizes, which are symbolic; count the padded tensor or each sequence instead")
        if self.user and mode.trace is not None:
            mode.trace.ok = False
        mode.counter.charge(mode, self.label, self.category, flops, out)
        return out


class KnownZero:
    """Run the op; it costs nothing that is counted."""

    __slots__ = ()

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        return func(*args, **kwargs)


class Uncounted:
    """Run the op and record it in ``uncounted``."""

    __slots__ = ()

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        mode.counter.note_uncounted(mode, str(func._overloadpacket))
        return out


class Decompose:
    """Run the op's decomposition under the mode, so the ops it is made of are counted."""

    __slots__ = ()

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        with mode:
            result = func.decompose(*args, **kwargs)
        if result is not NotImplemented:
            return result
        mode.counter.handlers[func] = UNCOUNTED
        return UNCOUNTED.run(mode, func, args, kwargs)


class Collective:
    """Run the communication op and record the bytes of its payload (its first argument)."""

    __slots__ = ()

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        if mode.trace is not None:
            mode.trace.ok = False
        mode.counter.note_collective(func, args)
        return out


class ValueDependent:
    """An op whose output depends on tensor values: the call it runs in is never replayed."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def run(self, mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        if mode.trace is not None:
            mode.trace.ok = False
        return self.inner.run(mode, func, args, kwargs)


KNOWN_ZERO = KnownZero()
UNCOUNTED = Uncounted()
DECOMPOSE = Decompose()
COLLECTIVE = Collective()


def resolve(func: Any, registry: Any, selected: Any) -> Any:
    """The handler of op overload ``func`` for a counter with this registry and ``selected(category)``."""
    packet = func._overloadpacket
    entry = registry.lookup_op(packet)
    handler: Any
    if entry is None:
        handler = DECOMPOSE if has_composite_kernel(func) else UNCOUNTED
    elif isinstance(entry, str):
        collective = func.namespace in COLLECTIVE_NAMESPACES and packet.__name__ not in _NO_PAYLOAD
        handler = COLLECTIVE if collective else KNOWN_ZERO
    else:
        fn, category = entry
        handler = Formula(fn, category, str(packet), registry.is_user_op(packet)) if selected(category) \
            else KNOWN_ZERO
    if DYNAMIC_TAGS and DYNAMIC_TAGS.intersection(getattr(func, "tags", ())):
        handler = ValueDependent(handler)
    return handler
