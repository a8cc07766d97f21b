"""``compute=False`` (issue 11, problem 6), ``count(kwargs=...)``, and the lazy public API (problem 8).

compute=False runs a copy of the model: meta copies of its tensors, tied parameters kept tied, the real
model never touched and its forward never run on real data; fake tensors only where meta cannot express
the forward; an ordinary exception in the model raises as itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import pytest_flops
import pytest_flops.counting.measure as measure
from pytest_flops import count


def _fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    used: list[int] = []
    real = measure._count_on_fake
    monkeypatch.setattr(measure, "_count_on_fake", lambda *a, **k: used.append(1) or real(*a, **k))
    return used


def _torch_flops_on_meta(model: nn.Module, *inputs: torch.Tensor) -> int:
    meta_model = _meta_twin(model)
    with FlopCounterMode(display=False) as mode, torch.device("meta"):
        meta_model(*(x.to("meta") for x in inputs))
    return mode.get_total_flops()


def _meta_twin(model: nn.Module) -> nn.Module:
    import copy

    twin = copy.deepcopy(model)
    return twin.to_empty(device="meta")


class TiedLM(nn.Module):
    """A GPT-2-style LM: the head's weight is the embedding's."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.block = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.block(self.embed(tokens))))


def test_tied_weights_count_on_meta_without_fallback(no_fake_fallback: None) -> None:
    model, tokens = TiedLM(), torch.randint(0, 50, (2, 7))
    real = count(model, tokens)
    free = count(model, tokens, compute=False)
    assert free.flops == real.flops == 2 * 14 * 16 * 16 + 2 * 14 * 16 * 50
    assert free.params == real.params == 50 * 16 + 16 * 16 + 16  # the tied weight once
    assert free.by_module == real.by_module
    assert free.extra["compute_path"] == "meta" and not free.computed


class BatchNormNet(nn.Module):
    """Training-mode BatchNorm, an attribute written in forward, and (optionally) a CPU tensor made in forward."""

    def __init__(self, cpu_tensor: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.cpu_tensor = cpu_tensor
        self.calls: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen.append(f"{type(x).__name__}:{x.device.type}")
        self.calls.append("forward")
        self.last_shape = tuple(x.shape)
        y = self.bn(self.conv(x))
        if self.cpu_tensor:
            y = y + torch.ones(4, 1, 1, device="cpu")
        return y


seen: list[str] = []


@pytest.mark.parametrize("cpu_tensor,path", [(False, "meta"), (True, "fake")])
def test_compute_free_never_touches_the_model(cpu_tensor: bool, path: str) -> None:
    model = BatchNormNet(cpu_tensor).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen.clear()
    m = count(model, torch.randn(2, 3, 8, 8), compute=False)
    assert m.extra["compute_path"] == path
    # the forward never saw a real tensor: only meta tensors, or fake ones
    assert seen and all(s == "Tensor:meta" or s.startswith("FakeTensor:") for s in seen), seen
    assert m.flops == count(BatchNormNet(cpu_tensor), torch.randn(2, 3, 8, 8)).flops == 2 * 2 * 4 * 36 * 27
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state), "running stats or num_batches_tracked changed"
    assert int(model.bn.num_batches_tracked) == 0
    assert model.calls == [] and not hasattr(model, "last_shape")
    assert all(type(p) is nn.Parameter and p.device.type == "cpu" for p in model.parameters())


class ShapeBug(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) @ torch.ones(4, 3)  # 5 columns times 4 rows: a bug


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad config: heads=3 does not divide dim=16")


def test_model_exception_raises_as_itself_without_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    used = _fallbacks(monkeypatch)
    with pytest.raises(RuntimeError, match="5|4") as info:
        count(ShapeBug(), torch.randn(2, 4), compute=False)
    assert "meta" not in str(info.value)
    with pytest.raises(ValueError, match="heads=3"):
        count(Raises(), torch.randn(2, 4), compute=False)
    assert used == []


def test_forward_making_cpu_tensors_falls_back_to_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    used = _fallbacks(monkeypatch)
    m = count(BatchNormNet(True), torch.randn(1, 3, 8, 8), compute=False)
    assert used == [1] and m.extra["compute_path"] == "fake"


def test_compute_free_equals_flop_counter_mode_on_meta() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    assert count(model, x, compute=False).flops == count(model, x).flops == _torch_flops_on_meta(model, x)


class Options(nn.Module):
    """A model whose keyword arguments share names with count()'s options."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, ops: int = 1, strict: bool = False, compute: int = 1,
                registry: object = None, timed: object = None, kwargs: object = None) -> torch.Tensor:
        assert strict is True and registry == "r" and timed == "t" and kwargs == "k"
        for _ in range(ops * compute):
            x = self.lin(x)
        return x


@pytest.mark.parametrize("compute", [True, False])
def test_kwargs_reach_the_model_whatever_their_names(compute: bool) -> None:
    options = {"ops": 2, "strict": True, "compute": 3, "registry": "r", "timed": "t", "kwargs": "k"}
    m = count(Options(), torch.randn(5, 4), compute=compute, kwargs=options)
    assert m.flops == 6 * 2 * 5 * 4 * 4


def test_kwargs_merge_with_direct_keywords_and_reject_duplicates() -> None:
    class Two(nn.Module):
        def forward(self, x: torch.Tensor, a: torch.Tensor, ops: str = "") -> torch.Tensor:
            assert ops == "mine"
            return x @ a

    x, a = torch.randn(2, 3), torch.randn(3, 4)
    assert count(Two(), x, a=a, kwargs={"ops": "mine"}).flops == 2 * 2 * 3 * 4
    with pytest.raises(TypeError, match="'a' given both"):
        count(Two(), x, a=a, kwargs={"a": a})
    with pytest.raises(TypeError, match="kwargs="):
        count(Two(), x, kwargs=[("a", a)])  # type: ignore[arg-type]


# -- the lazy public API (problem 8) ---------------------------------------------------
def test_error_importing_a_lazy_name_surfaces_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    cause = "'_OpNamespace' 'aten' object has no attribute '_fused_rms_norm'"

    def broken(name: str, package: str | None = None) -> object:
        raise AttributeError(cause)

    monkeypatch.delitem(pytest_flops.__dict__, "count", raising=False)
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ImportError) as info:
        exec("from pytest_flops import count")
    assert cause in str(info.value) and "cannot import name" not in str(info.value)
    assert isinstance(info.value.__cause__, AttributeError)

    def failing(name: str, package: str | None = None) -> object:
        raise RuntimeError("CUDA driver too old")

    monkeypatch.setattr(importlib, "import_module", failing)
    with pytest.raises(RuntimeError, match="CUDA driver too old"):
        exec("from pytest_flops import count")


def test_formulas_import_on_a_torch_without_newer_ops() -> None:
    """Ops that only newer torch versions have are looked up by name and skipped where absent: hide them
    (as torch 2.4 lacks them) and the formulas still import and count."""
    code = textwrap.dedent("""
        import sys, torch, torch._ops
        NEWER = {"_fused_rms_norm", "_fused_rms_norm_backward", "_safe_softmax", "_grouped_mm",
                 "_scaled_grouped_mm", "_scaled_grouped_mm_v2", "_scaled_mm_v2",
                 "_scaled_dot_product_fused_attention_overrideable",
                 "_scaled_dot_product_fused_attention_overrideable_backward", "_weight_int4pack_mm_for_cpu",
                 "_dyn_quant_matmul_4bit", "_weight_int4pack_mm_with_scales_and_zeros"}
        cls = torch._ops._OpNamespace
        def hiding(real):  # hidden from pytest_flops only: torch's own modules still see them
            def attribute(self, name):
                caller = sys._getframe(1).f_globals.get("__name__", "")
                namespace = object.__getattribute__(self, "name")
                if name in NEWER and namespace == "aten" and caller.startswith("pytest_flops"):
                    raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute '{name}'")
                return real(self, name)
            return attribute
        cls.__getattribute__, cls.__getattr__ = hiding(cls.__getattribute__), hiding(cls.__getattr__)
        from pytest_flops import count
        print(count(torch.nn.Linear(4, 3), torch.randn(2, 4)).flops)  # real tensors: meta addmm imports dynamo
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == str(2 * 2 * 4 * 3)
