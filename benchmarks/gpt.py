"""6. A small GPT on CPU: counted vs plain vs FlopCounterMode, inference and a training step.

6 blocks, d=256, 4 heads, seq 64, batch 1, vocabulary 512, ``torch.set_num_threads(1)``,
attention through ``F.scaled_dot_product_attention`` (causal). Inference runs in eval
mode under ``torch.no_grad()``; a training step is ``zero_grad``, forward, ``loss.backward()``.
Ratios are medians of ABBA pairs (see ``_common.paired``), each tool against the same plain run. A first
row per kind times do-nothing modes and module hooks where the counter has its own: the floor of the design
(a TorchFunctionMode over the step and global module hooks; a training step's backward is replayed from its
trace, with no dispatch mode). A last training row times a do-nothing TorchDispatchMode over the backward
alone: what counting the backward op by op would cost before counting anything.
"""

from __future__ import annotations

from typing import Any, Callable

from ._common import INFO, Row, fmt_flops, fmt_ms, median, paired, status

NAME = "gpt"
PLAIN_TARGET = {"inference": 1.20, "training": 1.25}
VS_FCM_TARGET = 0.70


def build(d: int = 256, heads: int = 4, layers: int = 6, seq: int = 64, vocab: int = 512) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x: Any) -> Any:
            b, s, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

        def forward(self, idx: Any) -> Any:
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln(x))

    torch.manual_seed(0)
    return GPT(), torch.randint(0, vocab, (1, seq))


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    import torch
    from torch.nn.modules import module as hooks
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from pytest_flops import FlopCounter

    torch.set_num_threads(1)
    model, idx = build()
    reps = 8 if quick else 31

    def inference() -> Any:
        with torch.no_grad():
            return model(idx)

    def training() -> Any:
        model.zero_grad(set_to_none=True)
        model(idx).float().mean().backward()

    def ours(step: Callable[[], Any]) -> Callable[[Any], Any]:
        def go(_: Any) -> Any:
            with FlopCounter(model=model) as c:
                step()
            return c.measurement.flops  # type: ignore[union-attr]
        return go

    def fcm(step: Callable[[], Any]) -> Callable[[Any], Any]:
        def go(_: Any) -> Any:
            with FlopCounterMode(display=False) as mode:
                step()
            return mode.get_total_flops()
        return go

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            return func(*args, **(kwargs or {}))

    class Ops(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:  # as the counter's mode: no torch._dynamo wrapper
            return False

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            return func(*args, **(kwargs or {}))

    def floor(step: Callable[[], Any]) -> Callable[[Any], Any]:
        """What the design costs before it counts anything: a do-nothing TorchFunctionMode where the counter has
        its own (over the whole step) and global module hooks."""
        def go(_: Any) -> Any:
            handles = [hooks.register_module_forward_pre_hook(lambda m, a: None),
                       hooks.register_module_forward_hook(lambda m, a, o: None, always_call=True)]
            try:
                with Functions():
                    return step()
            finally:
                for handle in handles:
                    handle.remove()
        return go

    def dispatched_backward(_: Any) -> Any:
        """A plain forward, and a do-nothing TorchDispatchMode over the backward: what the replay saves."""
        model.zero_grad(set_to_none=True)
        loss = model(idx).float().mean()
        with Ops():
            loss.backward()

    for kind, step in (("inference", inference), ("training", training)):
        model.train(kind == "training")
        for _ in range(3):
            step()
        results = {}
        floor_run = floor(step)
        floor_run(None)
        ratios, plains, times, _ = paired(lambda _: step(), floor_run, reps)
        floor_ratio = median(ratios)
        emit(Row(NAME, f"{kind} do-nothing modes / plain", f"{median(ratios):.3f}x", "-", INFO,
                 f"plain {fmt_ms(median(plains))}, with the modes and hooks {fmt_ms(median(times))}, n={reps}: "
                 "the least this design costs"))
        for label, counted in (("pytest-flops", ours(step)), ("FlopCounterMode", fcm(step))):
            counted(None)  # warm-up: registry caches, first-call imports
            ratios, plains, times, flops = paired(lambda _: step(), counted, reps)
            results[label] = (median(ratios), median(times), flops)
            target = PLAIN_TARGET[kind] if label == "pytest-flops" else None
            emit(Row(NAME, f"{kind} {label} / plain", f"{median(ratios):.3f}x",
                     f"<= {target:.2f}x" if target else "-", status(median(ratios) <= target) if target else INFO,
                     f"plain {fmt_ms(median(plains))}, counted {fmt_ms(median(times))}, reports {fmt_flops(flops)}, "
                     f"n={reps}, ratios {min(ratios):.3f}..{max(ratios):.3f}"))
        emit(Row(NAME, f"{kind} pytest-flops / do-nothing modes", f"{results['pytest-flops'][0] / floor_ratio:.3f}x",
                 "-", INFO, "ratio of the two medians over plain: what counting adds to the floor"))
        ratio = results["pytest-flops"][0] / results["FlopCounterMode"][0]
        emit(Row(NAME, f"{kind} pytest-flops / FlopCounterMode", f"{ratio:.3f}x", f"<= {VS_FCM_TARGET:.2f}x",
                 status(ratio <= VS_FCM_TARGET),
                 f"ratio of the two medians over plain; FLOPs {results['pytest-flops'][2]} vs "
                 f"{results['FlopCounterMode'][2]}"))
        if kind == "training":
            ratios, plains, times, _ = paired(lambda _: step(), dispatched_backward, reps)
            emit(Row(NAME, "training do-nothing dispatch mode over the backward / plain", f"{median(ratios):.3f}x",
                     "-", INFO, f"plain {fmt_ms(median(plains))}, with the mode {fmt_ms(median(times))}, n={reps}: "
                     "what the replayed backward saves"))
