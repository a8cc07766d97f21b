"""1. Overhead on real tensors: plain forward vs counted forward, per tool.

CPU, ``torch.set_num_threads(1)``, eval mode, everything under ``torch.no_grad()``
(BERT's ``nn.TransformerEncoderLayer`` then takes its fused fast path,
``aten._transformer_encoder_layer_fwd``, in the plain and the counted runs alike).
Each tool's cost is the median of per-pair ratios counted/plain, pairs run
in ABBA order after one warm-up call of each.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

from ._common import INFO, SKIP, Row, fmt_flops, fmt_ms, load_thop, median, paired, status

NAME = "overhead"
TARGET = 1.07


def _tools() -> list[tuple[str, Callable[[Any, Any], Any] | None, str, bool]]:
    """(label, run(model, x) -> reported count, note or reason, needs a fresh model copy)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import pytest_flops

    def ours(ops: str) -> Callable[[Any, Any], Any]:
        return lambda model, x: pytest_flops.count(model, x, ops=ops).flops

    def fcm(model: Any, x: Any) -> Any:
        with FlopCounterMode(display=False) as mode:
            model(x)
        return mode.get_total_flops()

    tools: list[tuple[str, Any, str, bool]] = [
        ("pytest-flops[matmul]", ours("matmul"), "FLOPs", False),
        ("pytest-flops[all]", ours("all"), "FLOPs", False),
        ("FlopCounterMode", fcm, "FLOPs", False),
    ]
    try:
        from fvcore.nn import FlopCountAnalysis

        def fv(model: Any, x: Any) -> Any:
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            return analysis.total()

        tools.append(("fvcore", fv, "MACs, jit trace included", False))
    except ImportError:
        tools.append(("fvcore", None, "not installed", False))
    for variant in ("ultralytics-thop", "thop"):
        profile, where = load_thop(variant)
        if profile is None:
            tools.append((variant, None, where, False))
            continue

        def th(model: Any, x: Any, profile: Any = profile) -> Any:
            return profile(model, inputs=(x,), verbose=False)[0]

        # thop registers buffers on every module (the original leaves some behind): a fresh copy per call.
        tools.append((variant, th, f"MACs, {where}", True))
    try:
        from ptflops import get_model_complexity_info

        def pt(model: Any, x: Any) -> Any:
            return get_model_complexity_info(model, tuple(x.shape[1:]), input_constructor=lambda _res: x,
                                             as_strings=False, print_per_layer_stat=False, verbose=False)[0]

        # ptflops binds counting methods onto the model and leaves them there: a fresh copy per call.
        tools.append(("ptflops", pt, "MACs per sample", True))
    except ImportError:
        tools.append(("ptflops", None, "not installed", False))
    del torch
    return tools


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    import torch

    from pytest_flops import zoo

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if quick:
        cases = [("resnet50", 1, 2), ("bert_base(2 layers)", 1, 2)]
    else:
        cases = [("resnet50", 1, 11), ("resnet50", 8, 4), ("bert_base", 1, 7), ("bert_base", 8, 3)]
    tools = _tools()
    models: dict[str, Any] = {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for model_name, batch, reps in cases:
            if model_name not in models:
                models.clear()
                if model_name == "resnet50":
                    models[model_name] = zoo.resnet50().eval()
                else:
                    models[model_name] = zoo.bert_base(num_layers=2 if quick else 12).eval()
            model = models[model_name]
            if model_name == "resnet50":
                x = torch.randn(batch, 3, 224, 224)
            else:
                x = torch.randn(batch, 128, 768)
            case = f"{model_name} b{batch}"
            for _ in range(2):
                model(x)
            for label, fn, note, needs_copy in tools:
                name = f"{case} {label}"
                if fn is None:
                    emit(Row(NAME, name, note, status=SKIP))
                    continue
                setup = (lambda: copy.deepcopy(model)) if needs_copy else (lambda: model)
                try:
                    fn(setup(), x)  # warm-up: first-call imports, jit, registry caches
                    ratios, plains, counted, result = paired(lambda m: m(x), lambda m: fn(m, x), reps, setup)
                except Exception as exc:  # a peer that cannot count this model
                    emit(Row(NAME, name, "failed", status=SKIP, detail=f"{type(exc).__name__}: {exc}"[:120]))
                    continue
                ratio = median(ratios)
                targeted = label == "pytest-flops[matmul]" and batch == 1
                emit(Row(
                    NAME, name, f"{ratio:.3f}x",
                    target=f"<= {TARGET:.2f}x" if targeted else "-",
                    status=status(ratio <= TARGET) if targeted else INFO,
                    detail=(f"plain {fmt_ms(median(plains))}, counted {fmt_ms(median(counted))}, "
                            f"reports {fmt_flops(result)} ({note}), n={reps}"
                            f", ratios {min(ratios):.3f}..{max(ratios):.3f}"),
                ))
