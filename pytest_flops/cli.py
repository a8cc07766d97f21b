"""The ``pytest-flops`` console script: count a model outside tests, compare two JSON reports.

::

    pytest-flops count pytest_flops.zoo:resnet50 --input 1x3x224x224
    pytest-flops count mypackage.models:Net --input 8x3x32x32 --depth 1 --json
    pytest-flops compare old.json new.json --tolerance 1%

Importing this module is cheap: torch is imported only after the arguments
have been parsed. Exit codes: 0 success, 1 a failed count or a regression
beyond the tolerance, 2 a usage error (bad arguments, import path or file).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from . import __version__
from .units import OPS_CHOICES, align_columns, format_quantity

__all__ = ["main", "build_parser", "InputSpec", "parse_input", "UsageError"]

PROG = "pytest-flops"

#: dtype names accepted in ``--input long:1x128`` and ``--dtype`` (checked before torch is imported).
DTYPES = {
    "float": "float32", "float32": "float32", "fp32": "float32",
    "half": "float16", "float16": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "double": "float64", "float64": "float64", "fp64": "float64",
    "long": "int64", "int64": "int64", "int": "int32", "int32": "int32",
    "short": "int16", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_SIZES = re.compile(r"^\d+(?:x\d+)*$")


class UsageError(Exception):
    """A bad argument: printed as ``pytest-flops: <message>``, exit code 2."""


class CountError(Exception):
    """The model could not be counted: printed as ``pytest-flops: <message>``, exit code 1."""


# -- argument parsing (no torch) ---------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """One ``--input``: sizes and an optional dtype name (``long:1x128``)."""

    shape: tuple[int, ...]
    dtype: str | None = None

    def __str__(self) -> str:
        sizes = "x".join(map(str, self.shape))
        return f"{self.dtype}:{sizes}" if self.dtype else sizes


def parse_input(text: str) -> InputSpec:
    """``"1x3x224x224"`` or ``"long:1x128"`` -> :class:`InputSpec`; raises :class:`UsageError`."""
    dtype_name, sep, sizes = text.strip().rpartition(":")
    sizes = sizes.strip().lower()
    dtype = None
    if sep:
        dtype = DTYPES.get(dtype_name.strip().lower())
    if (sep and dtype is None) or not _SIZES.match(sizes) or any(int(s) == 0 for s in sizes.split("x")):
        raise UsageError(
            f"invalid --input {text!r}: expected sizes like 1x3x224x224, optionally dtype: long:1x128"
        )
    shape = tuple(int(s) for s in sizes.split("x"))
    elements = 1
    for size in shape:
        elements *= size
    if elements >= 2**63:
        raise UsageError(f"invalid --input {text!r}: {elements:.3g} elements, more than a tensor can hold "
                         "(2**63 - 1); expected sizes like 1x3x224x224")
    return InputSpec(shape, dtype)


def _dtype_arg(text: str) -> str:
    name = DTYPES.get(text.strip().lower())
    if name not in FLOAT_DTYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FLOAT_DTYPES)}, got {text!r}")
    return name


def _depth_arg(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        depth = int(text)
    except ValueError:
        depth = -1
    if depth < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}")
    return depth


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit code 2
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Count FLOPs, MACs and parameters of PyTorch models outside tests, "
                    "and compare two --flops-json reports.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    count = commands.add_parser(
        "count", help="count a model given by import path and print its per-module table",
        description="Build a model from an import path and count one forward pass. By default the model "
                    "runs on meta copies or fake tensors (no arithmetic, no activation memory): the counts equal a real run's.",
    )
    count.add_argument("target", metavar="MODULE:FACTORY",
                       help="import path of a torch.nn.Module instance, or of a class or function called with "
                            "no arguments that returns one (e.g. pytest_flops.zoo:resnet50)")
    count.add_argument("-i", "--input", dest="inputs", action="append", default=[], metavar="SPEC",
                       help="the sizes of one input, e.g. 1x3x224x224, optionally with a dtype: long:1x128; "
                            "repeat for several inputs")
    count.add_argument("--meta", action="store_true",
                       help="build the model and its inputs on the meta device: no memory for weights, "
                            "for models too large for this machine")
    count.add_argument("--compute", action=argparse.BooleanOptionalAction, default=None,
                       help="run real arithmetic (default: --no-compute; on meta nothing computes)")
    count.add_argument("--dtype", type=_dtype_arg, default=None, metavar="DTYPE",
                       help=f"dtype of the model and its floating-point inputs ({', '.join(FLOAT_DTYPES)})")
    count.add_argument("--ops", choices=OPS_CHOICES, default="matmul",
                       help="matmul: matmul, conv and attention (default); all: also norms, pointwise ops, "
                            "reductions, pooling")
    count.add_argument("--depth", type=_depth_arg, default=2, metavar="N",
                       help="module depth of the table (default 2; 0: the model only; 'all')")
    count.add_argument("--strict", action="store_true", help="fail (exit 1) if ops without a FLOP formula ran")
    count.add_argument("--json", action="store_true", help="print the Measurement as JSON instead of the table")
    count.add_argument("--memory", action="store_true",
                       help="also count peak memory and activations (peak and activations columns; slower)")
    count.add_argument("--html", metavar="PATH", default=None,
                       help="also write a self-contained HTML report of the model to PATH: its module tree as an "
                            "icicle chart sized by FLOPs or params, with zoom (as pytest --flops-html)")

    compare = commands.add_parser(
        "compare", help="compare two --flops-json reports; exit 1 on growth beyond the tolerance",
        description="Print the per-test and per-module differences of two --flops-json files (or baseline "
                    "files) and exit 1 if a test's FLOPs, MACs or params grew beyond the tolerance: the "
                    "comparison the --flops-baseline gate makes.",
    )
    compare.add_argument("old", help="the earlier --flops-json (or baseline) file, e.g. from the main branch")
    compare.add_argument("new", help="the later --flops-json (or baseline) file")
    compare.add_argument("--tolerance", default="0", metavar="T",
                         help="allowed growth of each test's FLOPs, MACs and params: relative (1%%) or absolute "
                              "(10M); default 0, as --flops-tolerance")
    compare.add_argument("--strict", action="store_true",
                         help="also fail on any change beyond the tolerance (either direction) and on tests "
                              "added or removed, as --flops-strict with a baseline")
    compare.add_argument("--top", type=int, default=5, metavar="N",
                         help="modules shown for each changed test (default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pytest-flops`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "count":
            return _count(args)
        return _compare(args)
    except BrokenPipeError:  # e.g. `pytest-flops count ... --json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except CountError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


# -- count ----------------------------------------------------------------------
def _count(args: argparse.Namespace) -> int:
    specs = [parse_input(text) for text in args.inputs]
    if not specs:
        raise UsageError("count needs at least one --input, e.g. --input 1x3x224x224")
    if ":" not in args.target or not all(args.target.partition(":")[::2]):
        raise UsageError(
            f"invalid model {args.target!r}: expected MODULE:FACTORY, such as pytest_flops.zoo:resnet50"
        )
    obj = _import(args.target)

    import torch

    from .counting.counter import ComputeFreeError, UncountedOpsError
    from .counting.measure import count

    model = _build(obj, args.target, args.meta)
    if args.dtype:
        model = model.to(getattr(torch, args.dtype))
    device = torch.device("meta") if args.meta else _device_of(model)
    compute = bool(args.compute) if device.type != "meta" else True
    float_dtype = getattr(torch, args.dtype) if args.dtype else _float_dtype_of(model)
    inputs = [_make_input(spec, device, float_dtype, compute and device.type != "meta") for spec in specs]
    shapes = ", ".join(args.inputs)
    try:
        with torch.no_grad():
            measurement = count(model, *inputs, compute=compute, ops=args.ops, strict=args.strict,
                                memory=args.memory)
    except ComputeFreeError as exc:
        raise CountError(f"{exc} (on the command line: --compute)") from None
    except UncountedOpsError as exc:
        raise CountError(f"ops without a FLOP formula ran: {exc.calls}; register one with "
                         "pytest_flops.register_op_formula(op, fn), or drop --strict") from None
    except SystemExit as exc:
        raise CountError(f"running {args.target!r} on {shapes} failed: it called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise CountError(f"running {args.target!r} on {shapes} failed: {_one_line(exc)}") from None
    written = _write_html(args.html, args.target, shapes, measurement) if args.html else None
    if args.json:
        print(json.dumps(measurement.to_dict(), indent=2))
        if written:
            print(written, file=sys.stderr)  # stdout stays one JSON document
        return 0
    how = "meta" if device.type == "meta" else ("computed" if compute else "no compute")
    print(f"{args.target} on {shapes} ({how}, ops={args.ops})")
    print()
    print(measurement.table(depth=args.depth))
    print()
    print(measurement.summary())
    if measurement.uncounted:
        from .counting.measurement import uncounted_line

        print(uncounted_line(measurement.uncounted))
    if written:
        print(written)
    return 0


def _write_html(path: str, target: str, shapes: str, measurement: Any) -> str:
    """The HTML report of one counted model (the page ``pytest --flops-html`` writes, with one row)."""
    from .outputs.html import write_html
    from .outputs.json_results import environment
    from .outputs.records import make_record

    record = make_record(f"{target} [{shapes}]", [measurement.to_dict()])  # no outcome: it is not a test
    try:
        write_html(path, [record], environment=environment(), title=f"{PROG} count {target}")
    except OSError as exc:
        raise UsageError(f"cannot write --html {path!r}: {exc.strerror or exc}") from None
    return f"HTML report written to {path}"


def _import(target: str) -> Any:
    import importlib

    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current directory
    try:
        obj: Any = importlib.import_module(module_name)
    except SystemExit as exc:
        raise UsageError(f"cannot import {target!r}: importing {module_name!r} called sys.exit({exc.code!r})") from None
    except Exception as exc:
        reason = str(exc).strip().split("\n")[0] if isinstance(exc, ImportError) else _one_line(exc)
        raise UsageError(f"cannot import {target!r}: {reason}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"cannot import {target!r}: {getattr(obj, '__name__', module_name)!r} has no attribute {part!r}"
            ) from None
    return obj


def _build(obj: Any, target: str, meta: bool) -> Any:
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.to("meta") if meta else obj
    if not callable(obj):
        raise UsageError(
            f"{target!r} is a {type(obj).__name__}: expected a torch.nn.Module, or a class or function "
            "that returns one"
        )
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise UsageError(
            f"{target!r} cannot be called without arguments: expected a torch.nn.Module, or a class or "
            "function that builds one from no arguments (write a small factory function)"
        ) from None
    except ValueError:  # no signature (some builtins): just try the call
        pass
    try:
        if meta:
            with torch.device("meta"):
                model = obj()
        else:
            model = obj()
    except SystemExit as exc:
        raise CountError(f"calling {target!r} failed: it called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise CountError(f"calling {target!r} failed: {_one_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{target!r} returned a {type(model).__name__}: expected a torch.nn.Module")
    return model


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _device_of(model: Any) -> Any:
    import torch

    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _float_dtype_of(model: Any) -> Any:
    import torch

    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _make_input(spec: InputSpec, device: Any, float_dtype: Any, compute: bool) -> Any:
    import torch

    dtype = getattr(torch, spec.dtype) if spec.dtype else float_dtype
    try:
        if not dtype.is_floating_point:
            return torch.zeros(spec.shape, dtype=dtype, device=device)  # valid indices for any embedding
        if compute:
            return torch.randn(spec.shape, dtype=dtype, device=device)
        return torch.empty(spec.shape, dtype=dtype, device=device)  # never read: the run does no arithmetic
    except (RuntimeError, MemoryError) as exc:  # the allocation failed: too large for this machine
        raise CountError(f"cannot allocate --input {spec} on {device}: {_one_line(exc)[:200]}; --meta counts "
                         "without allocating") from None


# -- compare ------------------------------------------------------------------
def _load_tests(path: str) -> tuple[dict[str, list[dict[str, Any]]], str | None, str | None]:
    """``({nodeid: [measurement dicts]}, torch version, why the run is incomplete)`` of a ``--flops-json``
    results file or a baseline file (the last is None for a complete run, and for a baseline).

    Read with the baseline's bounds (size, nesting) and every measurement validated like a baseline's:
    a malformed file is a :class:`UsageError` naming the test and the field.
    """
    from .outputs.baseline import BASELINE_FORMAT, BaselineError, load_baseline
    from .outputs.io import DocumentError, read_json_document
    from .outputs.json_results import RESULTS_FORMAT

    try:
        data = read_json_document(path)
    except FileNotFoundError:
        raise UsageError(f"cannot read {path!r}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read {path!r}: a directory, not a --flops-json file") from None
    except DocumentError as exc:
        raise UsageError(f"cannot read {path!r}: the file {exc}") from None
    kind = data.get("format") if isinstance(data, dict) else None
    if kind == BASELINE_FORMAT:
        try:
            baseline = load_baseline(path)
        except BaselineError as exc:
            raise UsageError(str(exc)) from None
        assert baseline is not None
        return {k: list(v["measurements"]) for k, v in baseline.tests.items()}, baseline.torch, None
    if kind == RESULTS_FORMAT:
        from .outputs.baseline import results_problem

        problem = results_problem(data)
        if problem:
            raise UsageError(f"cannot read {path!r}: corrupt --flops-json file: {problem}")
        tests = {t["nodeid"]: list(t["measurements"]) for t in data["tests"]}
        why = (data.get("incomplete") or {}).get("why", "incomplete run") if data.get("complete") is False else None
        return tests, (data.get("environment") or {}).get("torch"), why
    raise UsageError(f"cannot read {path!r}: not a --flops-json results file nor a --flops-save-baseline file")


@dataclass
class _Comparison:
    """Two files compared test by test: the table rows, the details of what changed, the statuses, the failures."""

    rows: list[tuple[str, ...]]
    details: list[str]
    statuses: dict[str, int]
    failed: list[str]
    tests: int


def _compare(args: argparse.Namespace) -> int:
    """The gate's comparison (:func:`pytest_flops.outputs.baseline.compare`), over two files."""
    from .outputs.baseline import parse_tolerance, torch_note

    try:
        tolerance = parse_tolerance(args.tolerance)
    except ValueError as exc:
        raise UsageError(f"--tolerance: {exc}") from None
    old, old_torch, old_why = _load_tests(args.old)
    new, new_torch, new_why = _load_tests(args.new)
    result = _compare_tests(old, new, old_torch, tolerance, args.strict, args.top)
    header, *lines = align_columns([("test", "old FLOPs", "new FLOPs", "change", "status"), *result.rows],
                                   right={1, 2, 3})
    print(header)
    print("-" * len(header))
    for text in lines:
        print(text)
    if result.details:
        print()
        print("\n".join(result.details))
    if old_torch and new_torch and old_torch != new_torch:
        print("note: " + torch_note(old_torch, new_torch, args.old, f"{args.new} with"))
    for path, why in ((args.old, old_why), (args.new, new_why)):
        if why:
            print(f"note: {path} is from a run that did not finish ({why}): tests it lacks show as new or removed")
    print()
    order = ("regressed", "improved", "within", "changed", "equal", "new", "removed")
    names = {"within": "within tolerance", "equal": "unchanged"}
    counts = ", ".join(f"{result.statuses[s]} {names.get(s, s)}" for s in order if result.statuses.get(s))
    mode = ", strict" if args.strict else ""
    print(f"{result.tests} tests: {counts or 'none'} (tolerance {tolerance}{mode})")
    if result.failed:
        failed = result.failed
        print(f"FAILED: {len(failed)} {'test' if len(failed) == 1 else 'tests'}: " + ", ".join(failed))
        return 1
    return 0


def _compare_tests(old: dict[str, list[dict[str, Any]]], new: dict[str, list[dict[str, Any]]],
                   old_torch: str | None, tolerance: Any, strict: bool, top: int) -> _Comparison:
    """Each test of ``new`` against its entry in ``old``, then the tests only ``old`` has (removed)."""
    from .outputs.baseline import compare
    from .outputs.records import measurement_label

    out = _Comparison([], [], {}, [], len(new))
    for nodeid, measurements in new.items():
        entry = {"torch": old_torch, "measurements": old[nodeid]} if nodeid in old else None
        result = compare(nodeid, measurements, entry, tolerance, strict)
        out.statuses[result.status] = out.statuses.get(result.status, 0) + 1
        if result.failed:
            out.failed.append(nodeid)
        before = old.get(nodeid, [])
        for m in result.measurements:
            label = measurement_label(nodeid, m.index, len(result.measurements))
            old_m = before[m.index] if m.index < len(before) else None
            new_m = measurements[m.index] if m.index < len(measurements) else None
            out.rows.append((label, format_quantity(old_m["flops"]) if old_m else "-",
                             format_quantity(new_m["flops"]) if new_m else "-", m.delta_text(),
                             m.status + (" (fails)" if m.failed else "")))
            if m.changes:
                out.details.append(f"{label}: {m.name}")
                out.details += m.change_lines(top, modules_indent="  ", before_after="old -> new")
    removed = [nodeid for nodeid in old if nodeid not in new]
    for nodeid in removed:
        out.rows.append((nodeid, format_quantity(old[nodeid][0]["flops"]) if old[nodeid] else "-", "-", "removed",
                         "removed" + (" (fails)" if strict else "")))
        if strict:
            out.failed.append(nodeid)
    if removed:
        out.statuses["removed"] = len(removed)
    out.tests += len(removed)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
