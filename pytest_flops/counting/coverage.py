"""How every aten op of the running torch is counted: the op coverage table.

    python -m pytest_flops.counting.coverage            # one line per op: name, class, detail
    python -m pytest_flops.counting.coverage --summary  # the number of ops in each class

Each op (an overload packet, ``aten.mm``) is in one class:

* ``formula``: a built-in formula counts it (the detail is its category);
* ``zero``: known to cost nothing (views, copies, creation, comparisons, ...);
* ``decomposes``: every overload is ``CompositeImplicitAutograd``, so the
  counter sees the ops it decomposes into instead;
* ``uncounted by design``: deliberately left to ``uncounted`` (sparse,
  quantized, linear-algebra factorizations, FFTs, backend internals), with
  the reason;
* ``unclassified``: none of these yet; the counter reports it in
  ``uncounted`` when it runs. No op that ``torch.utils.flop_counter`` has a
  formula for, and no matmul-class op (``MATMUL_CLASS``), may be unclassified:
  the tests check both on every torch they run on.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Iterable

import torch

from . import formulas as _formulas  # noqa: F401  (registers the built-in formulas)
from .registry import DEFAULT_REGISTRY, Registry

__all__ = ["CLASSES", "MATMUL_CLASS", "BY_DESIGN", "OpClass", "aten_ops", "classify", "coverage", "main"]

CLASSES = ("formula", "zero", "decomposes", "uncounted by design", "unclassified")

#: Names of ops that do matrix-product or convolution work (a heuristic over names, with a few false friends
#: such as ``hamming_window`` that are classified like any other op).
MATMUL_CLASS = re.compile(r"mm|matmul|conv|attention|linear|gemm|einsum|bmm|\bdot\b|vdot|_rnn|lstm|gru|addmv|^mv$")

#: (pattern over the op name, reason): ops left uncounted on purpose.
BY_DESIGN: tuple[tuple[str, str], ...] = (
    (r"sparse|_coalesce|^_?indices|^_?values|crow_|ccol_|col_indices|row_indices|_nnz|_dim[IV]$|dense_dim|"
     r"is_coalesced|hspmm|sspaddmm|_spdiags|_spsolve|_cslt_|_validate_compressed",
     "sparse tensors: sparse kernels are outside the dense conventions of this counter"),
    (r"quantiz|^q_|qscheme|int_repr|_fused_moving_avg_obs_fq|_dyn_quant_pack|quantized_",
     "quantization and fake quantization (scale, round, clamp) and quantized kernels"),
    (r"linalg|cholesky|triangular_solve|geqrf|ormqr|lu_unpack|_compute_linear_combination",
     "linear-algebra factorizations and solves: their cost depends on the algorithm (pivoting, iterations)"),
    (r"^_fft_", "FFTs: O(n log n) with an algorithm-dependent constant"),
    (r"mkldnn|mps|miopen|cudnn|_triton|_flash_attention_forward_no_dropout|_cudnn_attention|_thnn_fused|"
     r"_transform_bias_rescale_qkv|_cpu_fallback",
     "backend internals (oneDNN, MPS, ROCm, cuDNN, Triton) without a formula here; the public ops that reach "
     "them on CPU and CUDA are counted"),
    (r"nested|jagged|_padded_dense|to_padded_tensor", "nested-tensor layout ops"),
    (r"^_test_|^_foobar$", "torch's own test ops"),
    (r"^matmul_backward$", "nested-tensor matmul backward (dense matmul backward runs as mm/bmm)"),
)


@dataclass(frozen=True)
class OpClass:
    """One op's row of the coverage table."""

    name: str  #: ``aten.mm``
    kind: str  #: one of :data:`CLASSES`
    detail: str = ""  #: the formula's category, or why it is uncounted by design


def aten_ops() -> dict[str, list[str]]:
    """Every aten op the running torch registers: packet name -> its overloads' full names."""
    ops: dict[str, list[str]] = {}
    for full in torch._C._dispatch_get_all_op_names():
        namespace, _, rest = full.partition("::")
        if namespace == "aten":
            ops.setdefault(rest.partition(".")[0], []).append(full)
    return dict(sorted(ops.items()))


def _decomposes(overloads: Iterable[str]) -> bool:
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return all(has(name, "CompositeImplicitAutograd") for name in overloads)


def classify(name: str, overloads: Iterable[str] = (), registry: Registry | None = None) -> OpClass:
    """The class of the aten op ``name`` (``"mm"``) on the running torch."""
    registry = registry or DEFAULT_REGISTRY
    label = f"aten.{name}"
    try:
        entry = registry.lookup_op(getattr(torch.ops.aten, name))
    except (AttributeError, RuntimeError):
        entry = None
    if entry == "zero":
        return OpClass(label, "zero")
    if entry is not None:
        return OpClass(label, "formula", entry[1])  # type: ignore[index]
    if _decomposes(overloads or [f"aten::{name}"]):
        return OpClass(label, "decomposes")
    for pattern, reason in BY_DESIGN:
        if re.search(pattern, name):
            return OpClass(label, "uncounted by design", reason)
    return OpClass(label, "unclassified")


def coverage(registry: Registry | None = None) -> list[OpClass]:
    """The class of every aten op the running torch registers."""
    return [classify(name, overloads, registry) for name, overloads in aten_ops().items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_flops.counting.coverage",
                                     description="How pytest-flops counts every aten op of this torch build.")
    parser.add_argument("--summary", action="store_true", help="print the number of ops in each class")
    parser.add_argument("--class", dest="kind", choices=CLASSES, help="print only the ops of this class")
    args = parser.parse_args(argv)
    rows = coverage()
    if args.summary:
        print(f"torch {torch.__version__}: {len(rows)} aten ops")
        for kind in CLASSES:
            print(f"{kind:<20} {sum(1 for r in rows if r.kind == kind):>5}")
        return 0
    for row in rows:
        if args.kind is None or row.kind == args.kind:
            print(f"{row.name:<60} {row.kind:<20} {row.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
