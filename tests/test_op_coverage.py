"""Op coverage (issue 11, problem 7): grouped matmuls, generate()/MoE-routing ops, and the coverage table.

Every aten op of the running torch is classified (formula / zero / decomposes / uncounted by design); no op
that ``torch.utils.flop_counter`` has a formula for, and no matmul-class op, may be unclassified.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.utils import flop_counter as _fc

from pytest_flops import ComputeFreeError, count
from pytest_flops.counting import coverage
from pytest_flops.counting.measure import GroupedShapeError

aten = torch.ops.aten
needs_grouped_mm = pytest.mark.skipif(not hasattr(aten, "_grouped_mm"), reason="torch without aten._grouped_mm")


def _torch_formula_ops() -> set[str]:
    names = set()
    for key in _fc.flop_registry:
        name = getattr(key, "__name__", None)
        if isinstance(key, torch._ops.OpOverloadPacket) and key._qualified_op_name.startswith("aten::"):
            names.add(key._qualified_op_name.removeprefix("aten::"))
        elif name and str(key).startswith("aten."):
            names.add(name)
    return names


def test_every_op_torch_counts_has_a_formula_here() -> None:
    rows = {row.name: row for row in coverage.coverage()}
    missing = sorted(f"aten.{n}" for n in _torch_formula_ops() if rows.get(f"aten.{n}", None) is None
                     or rows[f"aten.{n}"].kind != "formula")
    assert not missing


def test_no_matmul_class_op_is_unclassified() -> None:
    """A new torch that brings a matrix-product op fails here until it gets a formula or a reason."""
    unclassified = [row.name for row in coverage.coverage()
                    if row.kind == "unclassified" and coverage.MATMUL_CLASS.search(row.name.removeprefix("aten."))]
    assert not unclassified


def test_every_op_has_one_of_the_classes() -> None:
    rows = coverage.coverage()
    assert len(rows) > 1000 and {row.kind for row in rows} <= set(coverage.CLASSES)
    kinds = {row.name: row.kind for row in rows}
    assert kinds["aten.mm"] == "formula" and kinds["aten.view"] == "zero" and kinds["aten.isin"] == "zero"
    assert kinds["aten.histc"] == "formula" and kinds["aten.linear"] in ("formula", "decomposes")
    assert all(row.detail for row in rows if row.kind == "uncounted by design")


def test_coverage_script_prints_every_class(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m pytest_flops.counting.coverage``: its main(), in this process (the module's ``__main__`` guard
    calls nothing else)."""
    assert coverage.main(["--summary"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"torch {torch.__version__}: ")
    assert all(kind in out for kind in coverage.CLASSES)
    assert coverage.main(["--class", "zero"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "aten.isin" for line in lines)


# -- ops of generate() and MoE routing ---------------------------------------------------
def routing(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    experts = torch.topk(x, 2, dim=-1).indices
    counts = torch.histc(experts.float(), bins=4, min=0, max=3) + torch.bincount(experts.flatten(), minlength=4)
    order = torch.argsort(experts.flatten())
    sorted_ids, _ = torch.sort(ids)
    found = torch.searchsorted(sorted_ids, ids)
    seen = torch.isin(ids, torch.tensor([1, 2]))
    return counts.sum() + order.float().sum() + found.sum() + seen.sum() + torch.median(x) + torch.msort(x).sum()


@pytest.mark.parametrize("ops", ["matmul", "all"])
def test_generate_and_routing_ops_are_classified(ops: str) -> None:
    x, ids = torch.randn(6, 4), torch.randint(0, 5, (9,))
    m = count(routing, x, ids, strict=True, ops=ops)  # strict: nothing uncounted
    assert not m.uncounted
    assert m.by_category.get("matmul", 0) == 0
    if ops == "all":
        assert m.by_op["aten.histc"] == 12 and m.by_op["aten.bincount"] == 12  # one add per element
        assert "aten.isin" not in m.by_op and "aten.sort" not in m.by_op


# -- grouped matmul --------------------------------------------------------------------------
class Experts(nn.Module):
    """MoE experts as transformers 5 runs them: tokens sorted by expert, one grouped matmul."""

    def __init__(self, experts: int = 4, dim: int = 16, hidden: int = 32, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.up = nn.Parameter(torch.randn(experts, dim, hidden, dtype=dtype))
        self.down = nn.Parameter(torch.randn(experts, hidden, dim, dtype=dtype))

    def forward(self, x: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        return torch._grouped_mm(torch.relu(torch._grouped_mm(x, self.up, offs=offs)), self.down, offs=offs)


OFFS = torch.tensor([5, 10, 20, 24], dtype=torch.int32)


@needs_grouped_mm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_mm_counts_2m_k_n_from_shapes_on_meta_and_fake(dtype: torch.dtype) -> None:
    model, x = Experts(dtype=dtype), torch.randn(24, 16, dtype=dtype)
    expected = 2 * (2 * 24 * 16 * 32)
    meta = count(model, x, OFFS, compute=False)  # fp32: torch's meta kernel rejects the dtype; counted anyway
    assert meta.flops == expected and meta.extra["compute_path"] == "meta" and not meta.uncounted

    class OnCpu(Experts):
        def forward(self, x: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
            return super().forward(x, offs) + torch.zeros(1, device="cpu", dtype=x.dtype)

    fake = count(OnCpu(dtype=dtype), x, OFFS, compute=False)
    assert fake.flops == expected and fake.extra["compute_path"] == "fake"
    assert meta.by_op == fake.by_op == {"aten._grouped_mm": expected}


@needs_grouped_mm
def test_grouped_mm_layouts() -> None:
    from pytest_flops.counting.formulas.matmul import grouped_mm_flop

    def meta(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device="meta")

    assert grouped_mm_flop(meta(24, 16), meta(4, 16, 32)) == 2 * 24 * 16 * 32  # 2-D x 3-D, rows split
    assert grouped_mm_flop(meta(4, 8, 16), meta(4, 16, 32)) == 2 * 4 * 8 * 16 * 32  # 3-D x 3-D, batched
    assert grouped_mm_flop(meta(32, 24), meta(24, 16)) == 2 * 32 * 24 * 16  # 2-D x 2-D, K split (weight grad)
    assert grouped_mm_flop(meta(4, 8, 16), meta(16, 64)) == 2 * 8 * 16 * 64  # 3-D x 2-D, N split


@needs_grouped_mm
def test_grouped_mm_real_run_and_backward_count_the_same_formula() -> None:
    model, x = Experts(), torch.randn(24, 16, requires_grad=True)
    try:
        real = count(model, x, OFFS)
    except RuntimeError as exc:  # a torch whose CPU kernel does not take fp32
        pytest.skip(f"no CPU grouped matmul here: {exc}")
    assert real.flops == 2 * (2 * 24 * 16 * 32) and not real.uncounted
    from pytest_flops import FlopCounter

    with FlopCounter() as counter:
        out = model(x, OFFS)
        (out * torch.randn(out.shape)).sum().backward()  # a contiguous gradient (the CPU kernel needs it)
    assert counter.measurement is not None and not counter.measurement.uncounted
    assert counter.measurement.backward_flops == 2 * counter.measurement.forward_flops


@needs_grouped_mm
def test_grouped_mm_shape_bug_raises_as_itself() -> None:
    class Bad(Experts):
        def forward(self, x: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
            return torch._grouped_mm(x[:, :8], self.up, offs=offs)

    with pytest.raises(GroupedShapeError, match=r"\(24, 8\).*\(4, 16, 32\)"):
        count(Bad(), torch.randn(24, 16), OFFS, compute=False)
    assert issubclass(GroupedShapeError, RuntimeError) and not issubclass(GroupedShapeError, ComputeFreeError)


def test_in_place_products_count_like_their_out_of_place_ops() -> None:
    a, b, c = torch.randn(3, 4), torch.randn(4, 5), torch.randn(3, 5)
    m = count(lambda: c.clone().addmm_(a, b), strict=True)
    assert m.flops == 2 * 3 * 4 * 5
    bias = torch.randn(2, 3, 5)
    assert count(lambda: bias.clone().baddbmm_(torch.randn(2, 3, 4), torch.randn(2, 4, 5))).flops == 2 * 2 * 3 * 4 * 5


def test_bilinear_counts_its_products() -> None:
    m = count(nn.Bilinear(5, 6, 7), torch.randn(3, 5), torch.randn(3, 6), strict=True)
    assert m.flops == 2 * 3 * 7 * 5 * 6
