"""Element-wise work: arithmetic, activations, dropout, softmax and optimizer updates.

Categories ``pointwise`` and ``softmax``; both count only with ``ops="all"``.

Conventions (see ``docs/flops.md``), per element of the output unless stated:

* one FLOP per basic arithmetic operation, comparison-and-select (``relu``,
  ``clamp``, ``maximum``) or library function (``exp``, ``log``, ``sqrt``,
  ``tanh``, ``erf``, ``sin``...): a transcendental is *one* FLOP, not the
  dozen its implementation takes;
* composite activations are the sum of their parts: ``sigmoid`` = 1/(1+exp(-x))
  = 4, ``silu`` = x·sigmoid(x) = 5, GELU = 8 (the usual tanh-form count, used
  for the erf form too);
* backward of an activation: piecewise-linear ones cost what their forward
  costs (a mask and maybe a multiply), ``sigmoid``/``tanh`` backward work
  from the saved output (3), every other smooth one costs 2× its forward;
* softmax and log-softmax: 5 per element forward (max, subtract, exp, sum,
  divide), 4 per element backward;
* ``_foreach_*`` ops cost the per-element cost of their single-tensor op times
  the elements of every tensor in the list; the fused optimizers cost what
  their ``foreach`` implementation costs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..registry import DEFAULT_REGISTRY
from . import names

aten = names.aten  # ops by name: absent ones (newer torch) are skipped
op = DEFAULT_REGISTRY.op

#: FLOPs per element of GELU (tanh form: x³, ×0.044715, +x, ×√(2/π), tanh, +1, ×0.5x); also used for the
#: erf form.
GELU_FLOPS_PER_ELEMENT = 8
#: FLOPs per element of ReLU (a compare-and-select).
RELU_FLOPS_PER_ELEMENT = 1
#: FLOPs per element of softmax / log-softmax (max, subtract, exp, sum, divide or log).
SOFTMAX_FLOPS_PER_ELEMENT = 5
#: FLOPs per element of softmax / log-softmax backward (y·(g − Σg·y) or g − exp(y)·Σg).
SOFTMAX_BACKWARD_FLOPS_PER_ELEMENT = 4


# -- helpers ----------------------------------------------------------------
def first_tensor(*candidates: Any) -> Any:
    """The first tensor among the candidates (looking inside tuples/lists), or None."""
    for c in candidates:
        if isinstance(c, torch.Tensor):
            return c
        if isinstance(c, (list, tuple)):
            found = first_tensor(*c)
            if found is not None:
                return found
    return None


def out_numel(out: Any, *args: Any) -> int:
    """Elements of the output; for in-place ops without one, of the first tensor argument."""
    t = first_tensor(out, *args)
    return 0 if t is None else t.numel()


def tensor_lists(args: Iterable[Any]) -> list:
    """The tensors of the first list-of-tensors argument (``_foreach_*``, fused optimizers)."""
    for a in args:
        if isinstance(a, (list, tuple)) and a and all(isinstance(t, torch.Tensor) for t in a):
            return list(a)
    return []


def list_numel(args: Iterable[Any]) -> int:
    return sum(t.numel() for t in tensor_lists(args))


def _alpha_extra(args: tuple, kwargs: dict) -> int:
    """1 more FLOP per element when ``alpha`` scales the other operand (``x + alpha·y``)."""
    alpha = kwargs.get("alpha", 1)
    try:
        return 0 if alpha == 1 else 1
    except Exception:  # a symbolic or tensor alpha
        return 1


def _register_names(names: Iterable[str], category: str, fn: Callable) -> None:
    """Register ``fn`` for every named aten op this torch build has (in-place ``_`` variants listed explicitly)."""
    packets = [getattr(aten, n) for n in names if aten.has(n)]
    op(*packets, category=category)(fn)


def _per_element(cost: int, doc: str, name: str) -> Callable:
    def formula(*args: Any, out: Any = None, **kwargs: Any) -> int:
        return cost * out_numel(out, *args)

    formula.__name__ = name
    formula.__qualname__ = name
    formula.__doc__ = doc
    formula.cost = cost  # type: ignore[attr-defined]
    return formula


def _inplace(*names: str) -> list[str]:
    """The names and, where this torch build has one, their in-place ``name_`` variants."""
    return [v for n in names for v in (n, n + "_") if v == n or aten.has(v)]


# -- arithmetic ---------------------------------------------------------------
#: Unary and binary element-wise ops costing 1 FLOP per output element (with in-place variants).
ONE_FLOP_OPS = _inplace(
    "mul", "div", "true_divide", "neg", "abs", "absolute", "reciprocal", "sqrt", "rsqrt", "square", "exp", "exp2",
    "expm1", "log", "log2", "log10", "log1p", "pow", "float_power", "clamp", "clamp_min", "clamp_max", "clip",
    "fmod", "remainder", "floor", "ceil", "round", "trunc", "fix", "frac", "sin", "cos", "tan", "asin", "acos",
    "atan", "arcsin", "arccos", "arctan", "atan2", "arctan2", "sinh", "cosh", "asinh", "acosh", "atanh", "erf",
    "erfc", "erfinv", "lgamma", "digamma", "polygamma", "mvlgamma", "i0", "copysign", "nan_to_num", "deg2rad",
    "rad2deg", "fmax", "fmin", "maximum", "minimum", "negative", "igamma", "igammac", "_standard_gamma_grad",
    "angle", "gcd", "lcm", "nextafter", "frexp", "conj_physical", "_conj_physical", "_dirichlet_grad",
) + [f"special_{n}" for n in (
    "airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "chebyshev_polynomial_t", "chebyshev_polynomial_u",
    "chebyshev_polynomial_v", "chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he",
    "laguerre_polynomial_l", "legendre_polynomial_p", "log_ndtr", "modified_bessel_i0", "modified_bessel_i1",
    "modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
    "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w", "spherical_bessel_j0", "zeta")] + [
    "special_i0e", "special_i1", "special_i1e", "special_ndtr", "special_ndtri", "special_erfcx", "special_entr"]

one_flop = _per_element(1, "numel(out) × 1: one FLOP per element (arithmetic, min/max/clamp, rounding, or one "
                          "library function such as exp, log, sqrt, sin, erf).", "one_flop")
_register_names(ONE_FLOP_OPS, "pointwise", one_flop)


@op(aten.add, aten.add_, aten.sub, aten.sub_, aten.subtract, aten.subtract_, aten.rsub, category="pointwise")
def add_flop(*args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(out) × 1 for ``x ± y``; × 2 when ``alpha ≠ 1`` (``x ± alpha·y`` is a multiply-add)."""
    return (1 + _alpha_extra(args, kwargs)) * out_numel(out, *args)


three_flop = _per_element(3, "numel(out) × 3: ``addcmul``/``addcdiv`` (x + value·a·b or x + value·a/b) and "
                              "``lerp`` (x + w·(y − x)), whatever the scalar.", "three_flop")
_register_names(_inplace("addcmul", "addcdiv", "lerp"), "pointwise", three_flop)

two_flop = _per_element(2, "numel(out) × 2: two operations per element (``xlogy``/``xlog1py``: log and multiply; "
                          "``floor_divide``: divide and floor; ``ldexp``: exp2 and multiply).", "two_flop")
_register_names(_inplace("xlogy", "floor_divide", "ldexp") + ["special_xlog1py", "special_xlogy"], "pointwise",
                two_flop)

_register_names(["sinc", "sinc_", "logit", "logit_", "cross", "linalg_cross"], "pointwise", _per_element(
    3, "numel(out) × 3: ``sinc`` (π·x, sin, divide), ``logit`` (log(x/(1−x))), ``cross`` (per component 2 "
    "multiplies and 1 subtract).", "three_flop_misc"))
_register_names(["logaddexp", "logaddexp2", "hypot", "hypot_"], "pointwise", _per_element(
    4, "numel(out) × 4: ``logaddexp`` (max, subtract, exp, log1p+add), ``hypot`` (√(x²+y²): 2 multiplies, add, "
    "sqrt).", "four_flop_misc"))


@op(aten.scatter_add, aten.scatter_add_, aten.index_add, aten.index_add_, aten.scatter_reduce, aten.scatter_reduce_,
    aten.index_reduce, aten.index_reduce_, category="pointwise")
def scatter_add_flop(self: Any, dim: Any, index: Any, src: Any = None, *args: Any, out: Any = None,
                     **kwargs: Any) -> int:
    """numel(src) × 1: one add (or min/max/multiply) per scattered element; × 2 when ``alpha ≠ 1``."""
    source = src if isinstance(src, torch.Tensor) else self
    return (1 + _alpha_extra(args, kwargs)) * source.numel()


# -- activations ------------------------------------------------------------
#: (ops, FLOPs per element, formula text, name) of the activations.
ACTIVATIONS = [
    (_inplace("relu", "relu6", "threshold", "hardtanh", "hardshrink"), RELU_FLOPS_PER_ELEMENT,
     "numel(out) × 1: a compare-and-select (ReLU, ReLU6, threshold, hardtanh, hardshrink).", "relu_flop"),
    (_inplace("leaky_relu", "rrelu_with_noise", "softshrink", "_prelu_kernel", "prelu"), 2,
     "numel(out) × 2: compare, then multiply by the slope (leaky ReLU, RReLU, PReLU) or shift (softshrink).",
     "leaky_relu_flop"),
    (_inplace("sigmoid"), 4,
     "numel(out) × 4: 1/(1+exp(−x)) — negate, exp, add, reciprocal.", "sigmoid_flop"),
    (_inplace("tanh"), 1,
     "numel(out) × 1: one library function.", "tanh_flop"),
    (_inplace("silu"), 5,
     "numel(out) × 5: x·sigmoid(x).", "silu_flop"),
    (_inplace("gelu"), GELU_FLOPS_PER_ELEMENT,
     "numel(out) × 8: the tanh-form GELU count, used for either form (``GELU_FLOPS_PER_ELEMENT``).", "gelu_flop"),
    (_inplace("elu", "celu", "selu"), 4,
     "numel(out) × 4: compare, exp, subtract 1, multiply by α (the scales of SELU fold in).", "elu_flop"),
    (_inplace("hardsigmoid"), 3,
     "numel(out) × 3: clamp(x + 3, 0, 6) / 6 — add, clamp, divide.", "hardsigmoid_flop"),
    (_inplace("hardswish"), 4,
     "numel(out) × 4: x·hardsigmoid(x).", "hardswish_flop"),
    (_inplace("softplus"), 3,
     "numel(out) × 3: log(1 + exp(x)) — exp, add, log (β and the threshold are not counted).", "softplus_flop"),
    (_inplace("mish"), 5,
     "numel(out) × 5: x·tanh(softplus(x)) — softplus 3, tanh, multiply.", "mish_flop"),
]
for _names, _cost, _doc, _fn_name in ACTIVATIONS:
    _register_names(_names, "pointwise", _per_element(_cost, _doc, _fn_name))


@op(aten.log_sigmoid_forward, category="pointwise")
def log_sigmoid_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 4: −softplus(−x) — negate, exp, add, log."""
    return 4 * x.numel()


@op(aten.glu, category="pointwise")
def glu_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(out) × 5: a·sigmoid(b) per output element (the input is twice the output)."""
    return 5 * out_numel(out, x)


@op(aten.native_dropout, category="pointwise")
def native_dropout_flop(x: Any, p: Any = None, train: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 1 in training (multiply by mask·1/(1−p); drawing the mask is free), 0 in eval."""
    if train is False:
        return 0
    return x.numel()


@op(aten.native_dropout_backward, category="pointwise")
def native_dropout_backward_flop(grad: Any, mask: Any, scale: Any = None, *args: Any, out: Any = None,
                                 **kwargs: Any) -> int:
    """numel(grad) × 2: the gradient times the mask times 1/(1−p)."""
    return 2 * grad.numel()


@op(aten._fused_dropout, category="pointwise")
def fused_dropout_flop(x: Any, p: Any = None, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 1 (CUDA's fused dropout: multiply by mask·1/(1−p))."""
    return x.numel()


#: (ops, FLOPs per gradient element, formula text, name) of the activations' backward ops.
ACTIVATION_BACKWARDS = [
    (["threshold_backward", "hardtanh_backward", "hardshrink_backward", "softshrink_backward"], 1,
     "numel(grad_input) × 1: a mask-and-select of the incoming gradient.", "threshold_backward_flop"),
    (["leaky_relu_backward", "rrelu_with_noise_backward", "hardsigmoid_backward"], 2,
     "numel(grad_input) × 2: compare, multiply by the slope.", "leaky_relu_backward_flop"),
    (["hardswish_backward"], 4,
     "numel(grad_input) × 4: g·(2x + 3)/6 in the ramp.", "hardswish_backward_flop"),
    (["sigmoid_backward", "tanh_backward"], 3,
     "numel(grad_input) × 3: from the saved output y — g·y·(1−y) or g·(1−y²).", "sigmoid_backward_flop"),
    (["gelu_backward"], 2 * GELU_FLOPS_PER_ELEMENT,
     "numel(grad_input) × 16: 2 × forward.", "gelu_backward_flop"),
    (["silu_backward", "mish_backward"], 10,
     "numel(grad_input) × 10: 2 × forward (5).", "silu_backward_flop"),
    (["elu_backward", "log_sigmoid_backward"], 8,
     "numel(grad_input) × 8: 2 × forward (4).", "elu_backward_flop"),
    (["softplus_backward", "logit_backward"], 6,
     "numel(grad_input) × 6: 2 × forward (3).", "softplus_backward_flop"),
]
for _names, _cost, _doc, _fn_name in ACTIVATION_BACKWARDS:
    _register_names(_names, "pointwise", _per_element(_cost, _doc, _fn_name))


@op(aten.glu_backward, category="pointwise")
def glu_backward_flop(grad_output: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(grad_output) × 10: 2 × forward (5 per output element)."""
    return 10 * grad_output.numel()


@op(aten._prelu_kernel_backward, category="pointwise")
def prelu_backward_flop(grad_output: Any, x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 4: input gradient (compare, multiply) and weight gradient (multiply, accumulate)."""
    return 4 * x.numel()


# -- softmax ------------------------------------------------------------------
@op(aten._softmax, aten._log_softmax, aten._safe_softmax, aten.softmax, aten.log_softmax,
    category="softmax")
def softmax_flop(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(x) × 5: max, subtract, exp, sum, divide (log-softmax: log and subtract instead of divide)."""
    return SOFTMAX_FLOPS_PER_ELEMENT * x.numel()


@op(aten._softmax_backward_data, aten._log_softmax_backward_data, category="softmax")
def softmax_backward_flop(grad_output: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """numel(grad) × 4: y·(g − Σ g·y) for softmax (multiply, sum, subtract, multiply); g − exp(y)·Σg for
    log-softmax."""
    return SOFTMAX_BACKWARD_FLOPS_PER_ELEMENT * grad_output.numel()


# -- _foreach_* (multi-tensor) ops ---------------------------------------------
def _foreach(cost: int, doc: str, name: str, alpha: bool = False) -> Callable:
    def formula(*args: Any, out: Any = None, **kwargs: Any) -> int:
        extra = _alpha_extra(args, kwargs) if alpha else 0
        return (cost + extra) * list_numel(args)

    formula.__name__ = name
    formula.__qualname__ = name
    formula.__doc__ = doc
    formula.cost = cost  # type: ignore[attr-defined]
    return formula


FOREACH_ONE_FLOP = [
    "mul", "div", "neg", "abs", "reciprocal", "sqrt", "rsqrt", "exp", "expm1", "log", "log2", "log10", "log1p",
    "pow", "clamp_min", "clamp_max", "maximum", "minimum", "sin", "cos", "tan", "asin", "acos", "atan", "sinh",
    "cosh", "tanh", "erf", "erfc", "floor", "ceil", "round", "trunc", "frac", "lgamma",
]
_FOREACH = [
    (FOREACH_ONE_FLOP, 1, "Σ numel over the list × 1 (as the single-tensor op).", "foreach_one_flop", False),
    (["add", "sub"], 1, "Σ numel over the list × 1; × 2 when ``alpha ≠ 1``.", "foreach_add_flop", True),
    (["addcmul", "addcdiv", "lerp"], 3, "Σ numel over the list × 3 (as ``addcmul``/``addcdiv``/``lerp``).",
     "foreach_three_flop", False),
    (["sigmoid"], 4, "Σ numel over the list × 4 (as ``sigmoid``).", "foreach_sigmoid_flop", False),
]
for _names, _cost, _doc, _fn_name, _alpha in _FOREACH:
    _register_names([f"_foreach_{n}{suffix}" for n in _names for suffix in ("", "_")], "pointwise",
                    _foreach(_cost, _doc, _fn_name, alpha=_alpha))


# -- fused optimizers -------------------------------------------------------------
def _scalar(kwargs: dict, name: str, default: Any) -> Any:
    value = kwargs.get(name, default)
    return default if value is None else value


def _nonzero(value: Any) -> bool:
    try:
        return bool(value != 0)
    except Exception:
        return True


#: FLOPs per parameter element of one Adam/AdamW step without weight decay or AMSGrad, as ``foreach`` Adam runs it:
#: lerp m (3), v·β₂ (1), addcmul v (3), sqrt v (1), ÷ bias correction (1), + eps (1), addcdiv p (3).
ADAM_FLOPS_PER_ELEMENT = 13


@op(aten._fused_adam_, aten._fused_adam, category="pointwise")
def fused_adam_flop(params: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ numel(params) × (13, +2 with weight decay (g + wd·p), +1 with AMSGrad (max)): Adam's ``foreach`` update."""
    cost = ADAM_FLOPS_PER_ELEMENT
    cost += 2 if _nonzero(_scalar(kwargs, "weight_decay", 0)) else 0
    cost += 1 if _scalar(kwargs, "amsgrad", False) else 0
    return cost * sum(p.numel() for p in params)


@op(aten._fused_adamw_, aten._fused_adamw, category="pointwise")
def fused_adamw_flop(params: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ numel(params) × (13, +1 with weight decay (p·(1 − lr·wd)), +1 with AMSGrad): AdamW's ``foreach``
    update."""
    cost = ADAM_FLOPS_PER_ELEMENT
    cost += 1 if _nonzero(_scalar(kwargs, "weight_decay", 0)) else 0
    cost += 1 if _scalar(kwargs, "amsgrad", False) else 0
    return cost * sum(p.numel() for p in params)


@op(aten._fused_sgd_, aten._fused_sgd, category="pointwise")
def fused_sgd_flop(params: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ numel(params) × (2 for p − lr·g; +2 weight decay; momentum after the first step: +1 (b·μ) +1 (+g, 2 with
    dampening); +2 Nesterov): SGD's ``foreach`` update."""
    cost = 2
    cost += 2 if _nonzero(_scalar(kwargs, "weight_decay", 0)) else 0
    if _nonzero(_scalar(kwargs, "momentum", 0)):
        if not _scalar(kwargs, "is_first_step", False):
            cost += 1 + (2 if _nonzero(_scalar(kwargs, "dampening", 0)) else 1)
        if _scalar(kwargs, "nesterov", False):
            cost += 2
    return cost * sum(p.numel() for p in params)


@op(aten._fused_adagrad_, aten._fused_adagrad, category="pointwise")
def fused_adagrad_flop(params: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """Σ numel(params) × (9: addcmul state (3), sqrt (1), + eps (1), × −lr (1), addcdiv p (3); +2 with weight
    decay), as ``foreach`` Adagrad (the single-tensor path folds −lr into addcdiv: 8)."""
    cost = 9 + (2 if _nonzero(_scalar(kwargs, "weight_decay", 0)) else 0)
    return cost * sum(p.numel() for p in params)


# ``torch.optim`` wraps ``step()`` in ``record_function``: profiler markers, no arithmetic.
for _name in ("_record_function_enter", "_record_function_enter_new", "_record_function_exit"):
    try:
        DEFAULT_REGISTRY.register_zero_cost(getattr(torch.ops.profiler, _name))
    except (AttributeError, RuntimeError):
        continue


# Private twins and fused forms of public ops.
op(aten._masked_softmax, category="softmax")(softmax_flop)
op(aten._masked_softmax_backward, category="softmax")(softmax_backward_flop)
_register_names(["_add_relu", "_add_relu_"], "pointwise", _per_element(
    2, "numel(out) × 2: the add, then the ReLU's compare-and-select.", "add_relu_flop"))


@op(aten.addr, aten.addr_, category="pointwise")
def addr_flop(bias: Any, v1: Any, v2: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """``bias + v1 ⊗ v2`` (an outer product, no sum): numel(out) × 2, a multiply and an add per element."""
    return 2 * v1.numel() * v2.numel()
