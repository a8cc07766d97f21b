"""Where formulas live: op formulas, known-zero ops and whole-module formulas.

An op formula is ``fn(*args, out=output, **kwargs) -> int | Mapping[str, int]``:
it gets the op's own arguments (tensors may be ``meta`` or fake) and its
output, and returns FLOPs, either as an int (charged to the category the
formula was registered with) or as a ``{category: flops}`` mapping for fused
ops that do several kinds of work.

A module formula is ``fn(module, inputs, output) -> int``; it replaces what
the forward ops inside that module (and its children) would have counted.

Registries chain: a child registry (per test, per conftest folder) sees its
parent's formulas and overrides them without changing them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Union

import torch

__all__ = [
    "CATEGORIES",
    "MATMUL_CATEGORIES",
    "OpFormula",
    "ModuleFormula",
    "Registry",
    "DEFAULT_REGISTRY",
    "register_op_formula",
    "register_module_formula",
    "register_zero_cost",
    "resolve_op",
    "Split",
]

#: Categories counted with the default ``ops="matmul"``; MACs are half their FLOPs.
MATMUL_CATEGORIES = frozenset({"matmul", "conv", "attention"})
#: Every category a built-in formula uses; ``ops="all"`` counts them all.
CATEGORIES = ("matmul", "conv", "attention", "norm", "softmax", "pointwise", "reduction", "pooling", "upsample", "custom")

OpFormula = Callable[..., Union[int, Mapping[str, int], "Split"]]
ModuleFormula = Callable[[torch.nn.Module, tuple, Any], int]
OpLike = Union[torch._ops.OpOverloadPacket, torch._ops.OpOverload, str, Any]

_ZERO = "zero"


class Split:
    """What a formula returns for a fused op whose work belongs to several child modules.

    ``parts`` maps a child's name relative to the module running the op (``""``
    for that module itself) to ``{category: FLOPs}``; ``types`` gives the class
    name of each child, for children that do not run as modules of their own.
    The counter charges each part to its child when the running module has
    that child, and everything to the module otherwise.
    """

    __slots__ = ("parts", "types")

    def __init__(self, parts: Mapping[str, Mapping[str, int]], types: Mapping[str, str] | None = None) -> None:
        self.parts = {child: dict(flops) for child, flops in parts.items()}
        self.types = dict(types or {})

    def totals(self) -> dict[str, int]:
        """FLOPs by category over every part."""
        totals: dict[str, int] = {}
        for flops in self.parts.values():
            for category, value in flops.items():
                totals[category] = totals.get(category, 0) + value
        return totals


def resolve_op(op: OpLike) -> Any:
    """Turn ``torch.ops.aten.mm``, ``torch.ops.aten.mm.default`` or ``"aten::mm"`` into the registry key."""
    if isinstance(op, torch._ops.OpOverload):
        return op.overloadpacket
    if isinstance(op, torch._ops.OpOverloadPacket):
        return op
    if isinstance(op, str):
        text = op.strip()
        namespace, sep, name = text.replace("::", ".", 1).partition(".")
        name = name.split(".", 1)[0]
        if sep and name:
            try:
                return getattr(getattr(torch.ops, namespace), name)
            except (AttributeError, RuntimeError):
                pass
        raise ValueError(
            f"unknown op {op!r}: expected an op such as torch.ops.aten.mm, torch.ops.aten.mm.default or 'aten::mm'"
        )
    if isinstance(op, torch._ops.HigherOrderOperator) or callable(op):
        return op
    raise ValueError(f"unknown op {op!r}: expected an op such as torch.ops.aten.mm or 'aten::mm'")


def _check_category(category: str) -> str:
    if not isinstance(category, str) or not category:
        raise ValueError(f"invalid category {category!r}: expected a non-empty string such as {', '.join(CATEGORIES)}")
    return category


class Registry:
    """Op formulas, known-zero ops and module formulas, optionally over a parent registry."""

    def __init__(self, parent: "Registry | None" = None) -> None:
        self.parent = parent
        self._ops: dict[Any, tuple[OpFormula, str] | str] = {}
        self._modules: dict[type, tuple[ModuleFormula, str]] = {}
        self._user: set[Any] = set()  # ops whose formula a user registered here (not a built-in one)
        self._generation = 0  # bumped by every registration: what a counter caches is keyed on it

    def generation(self) -> tuple[int, ...]:
        """Changes whenever this registry or a parent registers something (a key for what counters cache)."""
        return tuple(r._generation for r in self._chain())

    @property
    def user_op_formulas(self) -> bool:
        """Whether a user registered an op formula here or in a parent (now: parents may change later)."""
        return any(r._user for r in self._chain())

    def _chain(self) -> Iterator["Registry"]:
        """This registry, then its parents: where every lookup looks, nearest first."""
        registry: Registry | None = self
        while registry is not None:
            yield registry
            registry = registry.parent

    def child(self) -> "Registry":
        return Registry(self)

    # -- registration ----------------------------------------------------
    def register_op_formula(self, op: OpLike, fn: OpFormula, category: str = "custom", *, _builtin: bool = False) -> OpFormula:
        if not callable(fn):
            raise TypeError(f"formula for {op!r} must be callable, got {fn!r}")
        key = resolve_op(op)
        self._generation += 1
        self._ops[key] = (fn, _check_category(category))
        if _builtin:
            self._user.discard(key)
        else:
            self._user.add(key)
        return fn

    def register_zero_cost(self, *ops: OpLike) -> None:
        for op in ops:
            try:
                key = resolve_op(op)
            except ValueError:
                continue  # an op this torch build does not have
            self._generation += 1
            self._ops[key] = _ZERO
            self._user.discard(key)

    def register_module_formula(self, module_type: type, fn: ModuleFormula, category: str = "custom") -> ModuleFormula:
        if not (isinstance(module_type, type) and issubclass(module_type, torch.nn.Module)):
            raise TypeError(f"register_module_formula: expected a torch.nn.Module subclass, got {module_type!r}")
        if not callable(fn):
            raise TypeError(f"formula for {module_type.__name__} must be callable, got {fn!r}")
        self._generation += 1
        self._modules[module_type] = (fn, _check_category(category))
        return fn

    def op(self, *ops: OpLike, category: str) -> Callable[[OpFormula], OpFormula]:
        """Decorator used by the built-in formula modules."""

        def deco(fn: OpFormula) -> OpFormula:
            for op in ops:
                try:
                    key = resolve_op(op)
                except ValueError:
                    continue
                self._generation += 1
                self._ops[key] = (fn, category)
                self._user.discard(key)
            return fn

        return deco

    # -- lookup ----------------------------------------------------------
    def lookup_op(self, key: Any) -> tuple[OpFormula, str] | str | None:
        # per op: a plain loop rather than _chain(), which costs a generator per call
        registry: Registry | None = self
        while registry is not None:
            entry = registry._ops.get(key)
            if entry is not None:
                return entry
            registry = registry.parent
        return None

    def is_user_op(self, key: Any) -> bool:
        """Whether the formula that ``lookup_op(key)`` finds was registered by a user (it may read values)."""
        return next((key in r._user for r in self._chain() if key in r._ops), False)

    def lookup_module(self, module_type: type) -> tuple[ModuleFormula, str] | None:
        chain = list(self._chain())
        for klass in module_type.__mro__:
            for registry in chain:
                entry = registry._modules.get(klass)
                if entry is not None:
                    return entry
        return None

    def has_module_formulas(self) -> bool:
        return any(r._modules for r in self._chain())

    def known_ops(self) -> Iterable[tuple[Any, tuple[OpFormula, str] | str]]:
        seen: dict[Any, Any] = {}
        for registry in self._chain():
            for key, entry in registry._ops.items():
                seen.setdefault(key, entry)
        return seen.items()


#: The process-wide registry: built-in formulas, plus what users register globally.
DEFAULT_REGISTRY = Registry()


def register_op_formula(op: OpLike, fn: OpFormula | None = None, category: str = "custom") -> Any:
    """Register FLOPs for an aten or custom op in the global registry.

    Usable directly (``register_op_formula(torch.ops.mylib.foo, fn)``) or as a
    decorator (``@register_op_formula(torch.ops.mylib.foo)``).
    """
    if fn is None:
        return lambda f: DEFAULT_REGISTRY.register_op_formula(op, f, category)
    return DEFAULT_REGISTRY.register_op_formula(op, fn, category)


def register_module_formula(module_type: type, fn: ModuleFormula | None = None, category: str = "custom") -> Any:
    """Register a whole-module formula ``fn(module, inputs, output) -> int`` in the global registry.

    Usable directly or as a decorator. The formula replaces the forward ops
    inside that module type (subclasses included) and its children.
    """
    if fn is None:
        return lambda f: DEFAULT_REGISTRY.register_module_formula(module_type, f, category)
    return DEFAULT_REGISTRY.register_module_formula(module_type, fn, category)


def register_zero_cost(*ops: OpLike) -> None:
    """Declare ops that cost no FLOPs (views, copies, communication, ...)."""
    DEFAULT_REGISTRY.register_zero_cost(*ops)
