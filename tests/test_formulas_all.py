import collections
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import pytest_flops.counting.formulas  # noqa: F401  (registers every built-in formula)
import pytest_flops.counting.registry as registry_module
from pytest_flops.counting.formulas import attention, norm, pointwise, reduction, zero
from pytest_flops.counting.registry import DEFAULT_REGISTRY, Registry, Split

aten = torch.ops.aten
TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


class Count(TorchDispatchMode):
    """Runs each aten op, then its registered formula: FLOPs per category, and the ops with no entry."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: collections.Counter = collections.Counter()
        self.missing: collections.Counter = collections.Counter()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        self.seen.add(packet)
        entry = DEFAULT_REGISTRY.lookup_op(packet)
        if entry is None:
            self.missing[str(func)] += 1
        elif entry != "zero":
            fn, category = entry
            # ``.out`` overloads pass their output as ``out=``; it is the result, so it must not be passed twice
            extra = {k: v for k, v in kwargs.items() if k != "out"}
            result = fn(*args, out=out, **extra)
            if isinstance(result, Split):  # a fused op's work split over child modules: its totals here
                result = result.totals()
            if isinstance(result, dict):
                for key, value in result.items():
                    self.flops[key] += value
            else:
                self.flops[category] += result
        return out


def formula(packet):
    entry = DEFAULT_REGISTRY.lookup_op(packet)
    assert entry is not None and entry != "zero", f"{packet} has no formula"
    return entry


def meta(*shape):
    return torch.empty(*shape, device="meta")


def run(model, x, backward=True):
    with Count() as c:
        y = model(x)
        if backward:
            y.sum().backward()
    return c


# -- registration hygiene ------------------------------------------------------------------
def test_import_registers_without_errors():
    importlib.import_module("pytest_flops.counting.formulas")
    keys = dict(DEFAULT_REGISTRY.known_ops())
    for packet in (aten.native_layer_norm, aten.relu_, aten._softmax, aten.sum, aten.avg_pool2d,
                   aten.upsample_bilinear2d, aten._foreach_add_, aten._fused_adam_, aten.upsample_nearest2d):
        assert packet in keys


def _registered_keys(module_name):
    """Keys a formula module registers, re-executed into a recording registry."""
    recorder = Registry()
    saved = registry_module.DEFAULT_REGISTRY
    registry_module.DEFAULT_REGISTRY = recorder
    try:
        spec = importlib.util.find_spec(module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        registry_module.DEFAULT_REGISTRY = saved
    return set(recorder._ops)


def test_no_op_is_registered_by_two_modules():
    names = ["zero", "norm", "pointwise", "reduction"]
    keys = {n: _registered_keys(f"pytest_flops.counting.formulas.{n}") for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], f"{a} and {b} both register {sorted(map(str, keys[a] & keys[b]))}"


def test_listed_op_names_exist_in_this_torch():
    """Catches typos: every name the modules list resolves (these are filtered by hasattr at import)."""
    allowed_missing = {"unique", "special_i0e", "special_i1", "special_i1e", "special_ndtr", "special_ndtri",
                       "special_erfcx", "special_entr", "special_xlog1py", "special_xlogy"}
    if TORCH < (2, 9):  # listed for newer torch, absent from 2.4
        allowed_missing |= {"_foreach_rsqrt", "sym_is_contiguous", "_convert_weight_to_int4pack_for_cpu"}
    names = list(zero.ZERO_COST_ATEN) + pointwise.ONE_FLOP_OPS
    names += [f"_foreach_{n}" for n in pointwise.FOREACH_ONE_FLOP]
    missing = sorted({n for n in names if not hasattr(aten, n)} - allowed_missing)
    assert not missing


def test_every_formula_has_a_docstring():
    ours = {"pytest_flops.counting.formulas.norm", "pytest_flops.counting.formulas.pointwise", "pytest_flops.counting.formulas.reduction"}
    for key, entry in DEFAULT_REGISTRY.known_ops():
        if entry == "zero" or entry[0].__module__ not in ours:
            continue
        fn, category = entry
        assert category in registry_module.CATEGORIES, key
        assert (fn.__doc__ or "").strip(), f"formula for {key} has no docstring"


def test_constants_agree_with_attention():
    assert attention.LAYER_NORM_FLOPS_PER_ELEMENT == norm.LAYER_NORM_FLOPS_PER_ELEMENT == 5
    assert attention.GELU_FLOPS_PER_ELEMENT == pointwise.GELU_FLOPS_PER_ELEMENT == 8
    assert attention.SOFTMAX_FLOPS_PER_ELEMENT == pointwise.SOFTMAX_FLOPS_PER_ELEMENT == 5


# -- norm --------------------------------------------------------------------------------
def test_layer_norm_forward_and_backward():
    x = torch.randn(2, 3, 8, requires_grad=True)
    c = run(nn.LayerNorm(8), x)
    assert c.flops["norm"] == 5 * 48 + 2 * 5 * 48
    c = run(nn.LayerNorm(8, elementwise_affine=False), torch.randn(2, 3, 8), backward=False)
    assert c.flops["norm"] == 3 * 48
    c = run(nn.LayerNorm(8, bias=False), torch.randn(2, 3, 8), backward=False)
    assert c.flops["norm"] == 4 * 48


def test_batch_norm_train_eval_and_meta():
    bn = nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert run(bn, x).flops["norm"] == 5 * 200 + 2 * 5 * 200
    bn.eval()
    assert run(bn, x).flops["norm"] == 2 * 200 + 2 * 2 * 200
    x, w, b, rm, rv = meta(2, 4, 5, 5), meta(4), meta(4), meta(4), meta(4)
    fn, cat = formula(aten._native_batch_norm_legit_no_training)
    assert cat == "norm" and fn(x, w, b, rm, rv, 0.1, 1e-5) == 400
    fn, _ = formula(aten._native_batch_norm_legit)
    assert fn(x, w, b, rm, rv, True, 0.1, 1e-5) == 1000
    assert fn(x, None, None, False, 0.1, 1e-5) == 400  # .no_stats overload, eval flag
    assert fn(x, None, None, True, 0.1, 1e-5) == 600  # .no_stats, training, no affine
    fn, _ = formula(aten.cudnn_batch_norm)
    assert fn(x, w, b, rm, rv, True, 0.1, 1e-5) == 1000
    fn, _ = formula(aten.cudnn_batch_norm_backward)
    assert fn(x, x, w, rm, rv, rm, rv, 1e-5, meta(0)) == 2000
    fn, _ = formula(aten._batch_norm_no_update)
    assert fn(x, w, b, rm, rv, 0.1, 1e-5) == 400
    assert fn(x, w, b, None, None, 0.1, 1e-5) == 1000
    fn, _ = formula(aten._batch_norm_with_update)
    assert fn(x, w, b, rm, rv, 0.1, 1e-5) == 1000


def test_group_instance_rms_norm():
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert run(nn.GroupNorm(2, 4), x).flops["norm"] == 5 * 200 * 3
    # InstanceNorm runs as batch norm over N·C channels with batch statistics, even in eval
    assert run(nn.InstanceNorm2d(4).eval(), x).flops["norm"] == 3 * 200 * 3
    assert run(nn.InstanceNorm2d(4, affine=True), x).flops["norm"] == 5 * 200 * 3
    if hasattr(aten, "_fused_rms_norm"):  # torch >= 2.9
        fn, _ = formula(aten._fused_rms_norm)
        assert fn(meta(2, 3, 8), [8], meta(8), 1e-5) == 3 * 48
        assert fn(meta(2, 3, 8), [8], None, None) == 2 * 48
        fn, _ = formula(aten._fused_rms_norm_backward)
        assert fn(meta(2, 3, 8), meta(2, 3, 8), [8], meta(2, 3, 1), meta(8), [True, True]) == 6 * 48
    # nn.RMSNorm on CPU decomposes: pow, mean, add eps, rsqrt, mul, mul weight
    c = run(nn.RMSNorm(8), torch.randn(2, 3, 8), backward=False)
    assert c.flops["pointwise"] + c.flops["reduction"] + c.flops["norm"] > 0


# -- pointwise ---------------------------------------------------------------------------
def test_arithmetic_meta_and_broadcast():
    a, b = meta(2, 3), meta(3)
    fn, cat = formula(aten.add)
    assert cat == "pointwise"
    out = torch.empty(2, 3, device="meta")
    assert fn(a, b, out=out) == 6
    assert fn(a, b, out=out, alpha=2) == 12
    assert formula(aten.mul_)[0](a, 2.0, out=a) == 6
    assert formula(aten.addcmul_)[0](a, a, a, out=a, value=0.5) == 18
    assert formula(aten.lerp)[0](a, a, 0.3, out=out) == 18
    assert formula(aten.exp)[0](a, out=out) == 6
    assert formula(aten.xlogy)[0](a, a, out=out) == 12
    assert formula(aten.scatter_add)[0](meta(5), 0, meta(3), meta(3), out=meta(5)) == 3


@pytest.mark.parametrize("module, fwd, bwd", [
    (nn.ReLU(), 1, 1), (nn.GELU(), 8, 16), (nn.GELU("tanh"), 8, 16), (nn.SiLU(), 5, 10), (nn.Sigmoid(), 4, 3),
    (nn.Tanh(), 1, 3), (nn.LeakyReLU(), 2, 2), (nn.ELU(), 4, 8), (nn.Hardswish(), 4, 4), (nn.Hardsigmoid(), 3, 2),
    (nn.Mish(), 5, 10), (nn.Softplus(), 3, 6), (nn.Hardtanh(), 1, 1), (nn.ReLU6(), 1, 1), (nn.PReLU(), 2, 4),
])
def test_activations(module, fwd, bwd):
    x = torch.randn(3, 4, requires_grad=True)
    with Count() as c:
        y = module(x)
    assert c.flops["pointwise"] == fwd * 12
    with Count() as c:
        y.backward(torch.ones_like(y))
    assert c.flops["pointwise"] == bwd * 12


def test_glu_and_dropout():
    x = torch.randn(3, 4, requires_grad=True)
    with Count() as c:
        y = nn.GLU()(x)
    assert c.flops["pointwise"] == 5 * 6
    with Count() as c:
        y.sum().backward()
    assert c.flops["pointwise"] >= 10 * 6
    fn, _ = formula(aten.native_dropout)
    assert fn(meta(4, 5), 0.5, True) == 20 and fn(meta(4, 5), 0.5, False) == 0


def test_softmax_forward_backward():
    x = torch.randn(3, 4, requires_grad=True)
    with Count() as c:
        y = torch.softmax(x, -1)
        z = torch.log_softmax(x, -1)
    assert c.flops["softmax"] == 2 * 5 * 12
    with Count() as c:
        (y.sum() + z.sum()).backward()
    assert c.flops["softmax"] == 2 * 4 * 12


def test_foreach_ops():
    xs = [meta(2, 3), meta(4)]
    assert formula(aten._foreach_add_)[0](xs, xs, alpha=2) == 20
    assert formula(aten._foreach_add_)[0](xs, 1.0) == 10
    assert formula(aten._foreach_addcdiv_)[0](xs, xs, xs, [0.1, 0.1]) == 30
    assert formula(aten._foreach_sqrt)[0](xs) == 10
    assert formula(aten._foreach_pow)[0](2.0, xs) == 10
    assert formula(aten._foreach_norm)[0](xs, out=None) == 2 * 10 + 2


def _step_flops(opt_cls, **kw):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    per_step = []
    for _ in range(2):
        model(torch.randn(2, 4)).sum().backward()
        with Count() as c:
            opt.step()
        assert not c.missing, c.missing
        per_step.append(c.flops["pointwise"])
        opt.zero_grad()
    return per_step


@pytest.mark.parametrize("opt_cls, kw, per_element", [
    (torch.optim.Adam, {}, [13, 13]),
    (torch.optim.Adam, {"weight_decay": 0.1}, [15, 15]),
    (torch.optim.Adam, {"amsgrad": True}, [14, 14]),
    (torch.optim.AdamW, {}, [14, 14]),
    (torch.optim.SGD, {"momentum": 0.9}, [2, 4]),
    (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, [6, 8]),
    (torch.optim.SGD, {"momentum": 0.9, "dampening": 0.1}, [2, 5]),
    (torch.optim.SGD, {}, [2, 2]),
    (torch.optim.Adagrad, {}, [9, 9]),
])
def test_fused_optimizers_match_foreach_and_single_tensor(opt_cls, kw, per_element):
    params = 4 * 3 + 3
    # Adam and Adagrad also add 1 to each parameter's step counter (a 0-d tensor) outside the update
    steps = 2 if opt_cls is not torch.optim.SGD else 0
    expected = [params * n + steps for n in per_element]
    assert _step_flops(opt_cls, foreach=True, **kw) == expected
    assert _step_flops(opt_cls, fused=True, **kw) == expected
    if opt_cls is torch.optim.Adagrad:  # the single-tensor path folds -lr into addcdiv: one FLOP less
        expected = [params * (n - 1) + steps for n in per_element]
    assert _step_flops(opt_cls, foreach=False, **kw) == expected


# -- reductions and losses -------------------------------------------------------------
def test_reductions():
    x = torch.randn(3, 4)
    with Count() as c:
        x.sum()
    assert c.flops["reduction"] == 12
    with Count() as c:
        x.mean(1)
    assert c.flops["reduction"] == 12 + 3
    with Count() as c:
        x.var(1)
    assert c.flops["reduction"] == 4 * 12 + 3
    with Count() as c:
        x.std()
    assert c.flops["reduction"] == 4 * 12 + 2
    with Count() as c:
        x.amax(0), x.max(1), x.argmax()
    assert c.flops["reduction"] == 3 * 12
    with Count() as c:
        torch.max(x, torch.zeros(4))
    assert c.flops == {"pointwise": 12}
    with Count() as c:
        torch.linalg.vector_norm(x, dim=1)
    assert c.flops["reduction"] == 2 * 12 + 3
    with Count() as c:
        torch.logsumexp(x, 1)
    assert c.flops["reduction"] == 4 * 12 + 2 * 3
    with Count() as c:
        torch.cumsum(x, 1)
    assert c.flops["reduction"] == 12


def test_losses():
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    with Count() as c:
        loss = nn.MSELoss()(x, t)
    assert c.flops["reduction"] == 3 * 20
    with Count() as c:
        loss.backward()
    assert c.flops["reduction"] == 3 * 20
    target = torch.tensor([0, 1, 2, 3])
    with Count() as c:
        nn.CrossEntropyLoss()(x, target)
    assert c.flops["softmax"] == 5 * 20 and c.flops["reduction"] == 4
    fn, _ = formula(aten.binary_cross_entropy)
    assert fn(meta(4, 5), meta(4, 5), None, 1) == 8 * 20
    assert fn(meta(4, 5), meta(4, 5), meta(4, 5), 0) == 8 * 20


# -- pooling and upsampling ------------------------------------------------------------
def test_pooling():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert run(nn.MaxPool2d(2), x).flops["pooling"] == 8 * 3  # backward is a free scatter
    c = run(nn.AvgPool2d(2), x)
    assert c.flops["pooling"] == 8 * 4 + 8 * 4
    assert run(nn.MaxPool1d(3), torch.randn(1, 2, 6), backward=False).flops["pooling"] == 4 * 2
    assert run(nn.AvgPool3d(2), torch.randn(1, 2, 4, 4, 4), backward=False).flops["pooling"] == 16 * 8
    # output size 1 runs as mean over H, W: 16 adds + 1 divide per channel
    assert run(nn.AdaptiveAvgPool2d(1), x, backward=False).flops == {"reduction": 2 * 16 + 2}
    assert run(nn.AdaptiveAvgPool2d(2), x, backward=False).flops["pooling"] == 2 * 16
    # 7 -> 3: windows [0,3) [2,5) [4,7): 9 per dimension
    y = torch.randn(1, 2, 7, 7, requires_grad=True)
    assert run(nn.AdaptiveAvgPool2d(3), y).flops["pooling"] == 2 * 81 * 2
    assert run(nn.AdaptiveMaxPool2d(3), y).flops["pooling"] == 2 * 81 - 2 * 9
    # 5 -> 3: windows [0,2) [1,4) [3,5): 7
    assert reduction.adaptive_window_elements([5], [3]) == 7
    assert reduction.adaptive_window_elements([5, 7], [3, 3]) == 63
    assert run(nn.AdaptiveAvgPool1d(3), torch.randn(1, 2, 5), backward=False).flops["pooling"] == 2 * 7


@pytest.mark.parametrize("mode, shape, per_out", [
    ("nearest", (1, 2, 4, 4), 0), ("bilinear", (1, 2, 4, 4), 7), ("bicubic", (1, 2, 4, 4), 31),
    ("linear", (1, 2, 4), 3), ("trilinear", (1, 2, 4, 4, 4), 15),
])
def test_upsample(mode, shape, per_out):
    x = torch.randn(*shape, requires_grad=True)
    with Count() as c:
        y = nn.Upsample(scale_factor=2, mode=mode)(x)
    assert c.flops["upsample"] == per_out * y.numel()
    with Count() as c:
        y.sum().backward()
    assert c.flops["upsample"] == (per_out or 1) * y.numel()


def test_antialiased_downsample():
    fn, _ = formula(aten._upsample_bilinear2d_aa)
    # 8 -> 4 per dim: scale 2, taps ceil(2·1·2)=4 per dim, 16 in all
    assert fn(meta(1, 1, 8, 8), [4, 4], False, out=meta(1, 1, 4, 4)) == 16 * 31


# -- fused transformer paths agree with the unfused ops ------------------------------------
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_encoder_layer_matches_unfused(activation):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, activation=activation).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad(), Count() as fused:
        layer(x)
    with Count() as unfused:
        layer(x)
    assert fused.seen != unfused.seen  # the fast path really ran
    assert fused.flops == unfused.flops


def test_fused_multihead_attention_matches_unfused():
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad(), Count() as fused:
        mha(x, x, x, need_weights=False)
    with Count() as unfused:
        mha(x, x, x, need_weights=False)
    assert aten._native_multi_head_attention in fused.seen
    assert fused.flops == unfused.flops


# -- coverage: every op a common nn model runs, forward and backward, has an entry --------
def _models():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True), 2,
                                enable_nested_tensor=False)
    enc_gelu = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True, activation="gelu", norm_first=True)
    g = lambda *s: torch.randn(*s, requires_grad=True)  # noqa: E731
    return [
        ("cnn", cnn, g(2, 3, 16, 16)),
        ("transformer", enc, g(2, 5, 16)),
        ("transformer-gelu-prenorm", enc_gelu, g(2, 5, 16)),
        ("lstm", nn.LSTM(4, 8, 2, batch_first=True), g(2, 5, 4)),
        ("gru", nn.GRU(4, 8, bidirectional=True), g(5, 2, 4)),
        ("layernorm", nn.LayerNorm(8), g(2, 3, 8)),
        ("groupnorm", nn.GroupNorm(2, 4), g(2, 4, 5, 5)),
        ("instancenorm", nn.InstanceNorm2d(4, affine=True), g(2, 4, 5, 5)),
        ("rmsnorm", nn.RMSNorm(8), g(2, 3, 8)),
        ("embedding", nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)), torch.tensor([[1, 2, 3]])),
        ("dropout", nn.Dropout(0.5), g(4, 4)),
        ("upsample-bilinear", nn.Upsample(scale_factor=2, mode="bilinear"), g(1, 2, 4, 4)),
        ("upsample-nearest", nn.Upsample(scale_factor=2), g(1, 2, 4, 4)),
        ("softmax", nn.Softmax(-1), g(3, 4)),
        ("activations", nn.Sequential(nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(), nn.ELU(),
                                      nn.Hardswish(), nn.Mish(), nn.Softplus(), nn.PReLU(), nn.Hardtanh()), g(3, 4)),
        ("pools", nn.Sequential(nn.AdaptiveMaxPool2d(3), nn.MaxPool2d(2, ceil_mode=True)), g(1, 2, 7, 7)),
        ("pools3d", nn.Sequential(nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1)), g(1, 2, 4, 4, 4)),
    ]


def test_coverage_forward_backward():
    missing = collections.Counter()
    for name, model, x in _models():
        model.train()
        with Count() as c:
            y = model(x)
            y = y[0] if isinstance(y, tuple) else y
            y.float().sum().backward()
        missing.update({f"{name}: {k}": v for k, v in c.missing.items()})
    for name, model, x in _models()[:2]:  # inference, incl. the fused fast paths
        model.eval()
        with torch.no_grad(), Count() as c:
            model(x.detach())
        missing.update({f"{name} eval: {k}": v for k, v in c.missing.items()})
    x = torch.randn(4, 5, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3])
    with Count() as c:
        nn.CrossEntropyLoss()(x, target).backward()
        nn.CrossEntropyLoss(label_smoothing=0.1)(x, target).backward()
        nn.MSELoss()(x, torch.randn(4, 5)).backward()
        nn.L1Loss()(x, torch.randn(4, 5)).backward()
        nn.SmoothL1Loss()(x, torch.randn(4, 5)).backward()
        nn.BCEWithLogitsLoss()(x, torch.rand(4, 5)).backward()
        nn.BCELoss()(torch.sigmoid(x), torch.rand(4, 5)).backward()
        nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(x, -1), torch.rand(4, 5)).backward()
    missing.update(c.missing)
    print("missing:", dict(missing))
    assert not missing


def test_coverage_on_meta_device():
    """Formulas only read shapes: the same models run forward and backward on ``meta`` without errors."""
    with torch.device("meta"):
        for name, model, x in _models():
            if name == "embedding":
                x = torch.tensor([[1, 2, 3]])
            with Count() as c:
                y = model(x)
                y = y[0] if isinstance(y, tuple) else y
                y.float().sum().backward()
            assert not c.missing, (name, dict(c.missing))
            assert sum(c.flops.values()) > 0, name


def test_docs_formula_table_is_up_to_date():
    path = Path(__file__).resolve().parents[1] / "docs" / "gen_formula_table.py"
    spec = importlib.util.spec_from_file_location("gen_formula_table", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    document = gen.FLOPS_MD.read_text(encoding="utf-8")
    if gen.generated_torch_version(document) != gen.torch_version():
        pytest.skip(f"docs/flops.md is generated with torch {gen.generated_torch_version(document)}, "
                    f"this is {gen.torch_version()}")
    assert gen.update(document) == document, "run: python docs/gen_formula_table.py --write"


@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop,
                                     torch.optim.Adagrad])
@pytest.mark.parametrize("impl", ["foreach", "single", "fused"])
def test_coverage_optimizers(opt_cls, impl):
    if impl == "fused" and opt_cls in (torch.optim.RMSprop,):
        pytest.skip("no fused implementation")
    model = nn.Linear(4, 4)
    kw = {"foreach": impl == "foreach"} if impl != "fused" else {"fused": True}
    if opt_cls is torch.optim.SGD:
        kw["momentum"] = 0.9
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    with Count() as c:
        for _ in range(2):
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    print("missing:", dict(c.missing))
    assert not c.missing
    assert c.flops["pointwise"] > 0
