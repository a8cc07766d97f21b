"""The counting library: formulas against hand derivations, parity with
``torch.utils.flop_counter.FlopCounterMode`` on ``meta``, device / grad-mode /
compute-free invariance, the fast path, backward attribution, parameters,
module and op formulas, strictness, cleanup after exceptions, and the
Measurement data.

Counts use the default ``ops="matmul"`` unless a test says otherwise, so they
do not depend on the norm / pointwise / reduction formulas.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_mod
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from pytest_flops import (
    ComputeFreeError,
    FlopCounter,
    Measurement,
    UncountedOpsError,
    count,
    zoo,
)
from pytest_flops.counting.counter import FormulaError
from pytest_flops.counting.registry import DEFAULT_REGISTRY, Registry

aten = torch.ops.aten


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _meta(value):
    if isinstance(value, torch.Tensor):
        return torch.empty_like(value, device="meta").requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _meta(v) for k, v in value.items()}
    return value


def reference(fn, *args, **kwargs) -> int:
    """FLOPs that PyTorch's own counter reports for ``fn(*args)`` run on meta tensors."""
    args, kwargs = _meta(args), _meta(kwargs)
    with FlopCounterMode(display=False) as mode:
        fn(*args, **kwargs)
    return mode.get_total_flops()


def counted(fn, *args, **kwargs) -> Measurement:
    with FlopCounter() as counter:
        fn(*args, **kwargs)
    assert counter.measurement is not None
    return counter.measurement


def assert_clean() -> None:
    """No hook, no dispatch mode is left behind."""
    assert not _module_mod._global_forward_hooks
    assert not _module_mod._global_forward_pre_hooks
    assert torch._C._len_torch_dispatch_stack() == 0
    assert torch._C._len_torch_function_stack() == 0


@pytest.fixture(autouse=True)
def _no_leaks():
    assert_clean()
    yield
    assert_clean()


@pytest.fixture
def registry() -> Registry:
    """A per-test child of the default registry: registrations do not leak into other tests."""
    return DEFAULT_REGISTRY.child()


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")  # pragma: no cover


# ---------------------------------------------------------------------------
# convolutions against hand derivations
# ---------------------------------------------------------------------------


def _conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def hand_conv_flops(cls, x_shape, cin, cout, k, stride=1, padding=0, dilation=1, groups=1):
    """2·N·C_out·Π(out)·(C_in/g)·Π(k); transposed: 2·N·C_in·Π(in)·(C_out/g)·Π(k)."""
    nd = int(cls.__name__[-2])
    k, s, p, d = (_tuple(v, nd) for v in (k, stride, padding, dilation))
    batched = len(x_shape) == nd + 2
    n = x_shape[0] if batched else 1
    spatial = x_shape[-nd:]
    if "Transpose" in cls.__name__:
        return 2 * n * cin * math.prod(spatial) * (cout // groups) * math.prod(k)
    out = [_conv_out(spatial[i], k[i], s[i], p[i], d[i]) for i in range(nd)]
    return 2 * n * cout * math.prod(out) * (cin // groups) * math.prod(k)


CONV_CASES = [
    # cls, x_shape, cin, cout, kernel, kwargs
    (nn.Conv1d, (2, 4, 11), 4, 6, 3, dict(stride=2, padding=1, groups=2)),
    (nn.Conv1d, (4, 11), 4, 6, 3, dict(dilation=3)),  # unbatched
    (nn.Conv2d, (2, 4, 9, 10), 4, 8, (3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4)),
    (nn.Conv2d, (3, 8, 8), 3, 6, 3, dict(stride=2, padding=1)),  # unbatched
    (nn.Conv2d, (1, 6, 7, 7), 6, 6, 3, dict(groups=6, padding=1)),  # depthwise
    (nn.Conv2d, (2, 3, 16, 16), 3, 8, 4, dict(stride=4, bias=False)),  # patchify
    (nn.Conv3d, (1, 2, 7, 7, 7), 2, 4, 3, dict(dilation=2)),
    (nn.Conv3d, (2, 4, 5, 6, 7), 4, 4, (1, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1), groups=2)),
    (nn.ConvTranspose1d, (2, 4, 5), 4, 6, 3, dict(stride=2, padding=1, output_padding=1, groups=2)),
    (nn.ConvTranspose2d, (2, 4, 5, 6), 4, 8, 3, dict(stride=2, padding=1, dilation=2, groups=2)),
    (nn.ConvTranspose2d, (4, 5, 6), 4, 2, 2, dict(stride=2)),  # unbatched
    (nn.ConvTranspose3d, (1, 2, 3, 3, 3), 2, 4, 2, dict(stride=2, bias=False)),
]


@pytest.mark.parametrize("cls,x_shape,cin,cout,k,kw", CONV_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_conv_module_matches_hand_derivation(cls, x_shape, cin, cout, k, kw):
    expected = hand_conv_flops(cls, x_shape, cin, cout, k, **{key: v for key, v in kw.items() if key in
                                                               ("stride", "padding", "dilation", "groups")})
    conv = cls(cin, cout, k, **kw)
    x = torch.randn(x_shape)
    results = {
        "cpu": count(conv, x),
        "cpu-no-fast": _count_no_fast(conv, x),
        "fake": count(conv, x, compute=False),
        "meta": count(cls(cin, cout, k, device="meta", **kw), _meta(x)),
    }
    for where, m in results.items():
        assert m.flops == expected, where
        assert m.macs == expected // 2, where
        assert m.by_category == {"conv": expected}, where
        assert m.by_op == {"aten.convolution": expected}, where
        assert m.by_module == {cls.__name__: expected}, where
        assert m.params == sum(p.numel() for p in conv.parameters()), where
    assert reference(conv, x) == expected


def test_functional_conv_transpose_and_bias_pointwise():
    x, w, b = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)
    out = F.conv_transpose2d(x, w, b, stride=2)
    expected = 2 * 2 * 4 * 25 * 3 * 9
    assert counted(F.conv_transpose2d, x, w, b, stride=2).flops == expected
    assert reference(F.conv_transpose2d, x, w, b, stride=2) == expected
    with FlopCounter(ops="all") as c:
        F.conv_transpose2d(x, w, b, stride=2)
    assert c.measurement.by_category["conv"] == expected
    assert c.measurement.by_category["pointwise"] == out.numel()  # the bias, only with ops="all"
    assert c.measurement.macs == expected // 2


# ---------------------------------------------------------------------------
# matrix products against hand derivations
# ---------------------------------------------------------------------------

r = torch.randn
MATMUL_CASES = [
    # name, fn, args, hand FLOPs, whether FlopCounterMode counts it too
    ("mm", torch.mm, (r(3, 4), r(4, 5)), 2 * 3 * 4 * 5, True),
    ("addmm", torch.addmm, (r(5), r(3, 4), r(4, 5)), 2 * 3 * 4 * 5, True),
    ("bmm", torch.bmm, (r(2, 3, 4), r(2, 4, 5)), 2 * 2 * 3 * 4 * 5, True),
    ("baddbmm", torch.baddbmm, (r(2, 3, 5), r(2, 3, 4), r(2, 4, 5)), 2 * 2 * 3 * 4 * 5, True),
    ("matmul-broadcast", torch.matmul, (r(2, 1, 3, 4), r(5, 4, 6)), 2 * 2 * 5 * 3 * 6 * 4, True),
    ("matmul-vec-mat", torch.matmul, (r(4), r(4, 3)), 2 * 4 * 3, True),
    ("einsum", lambda a, b: torch.einsum("bij,bjk->bik", a, b), (r(2, 3, 4), r(2, 4, 5)), 2 * 2 * 3 * 4 * 5, True),
    ("matmul-operator", lambda a, b: a @ b, (r(7, 3, 4), r(4, 2)), 2 * 7 * 3 * 4 * 2, True),
    ("linear-4d-bias", F.linear, (r(2, 3, 5, 4), r(6, 4), r(6)), 2 * 30 * 4 * 6, True),
    ("linear-4d", F.linear, (r(2, 3, 5, 4), r(6, 4)), 2 * 30 * 4 * 6, True),
    ("linear-1d", F.linear, (r(4), r(6, 4), r(6)), 2 * 4 * 6, True),
    # beyond PyTorch's counter (it reports 0 for these)
    ("mv", torch.mv, (r(3, 4), r(4)), 2 * 3 * 4, False),
    ("addmv", torch.addmv, (r(3), r(3, 4), r(4)), 2 * 3 * 4, False),
    ("dot", torch.dot, (r(4), r(4)), 2 * 4, False),
    ("addbmm", torch.addbmm, (r(3, 5), r(2, 3, 4), r(2, 4, 5)), 2 * 2 * 3 * 4 * 5, False),
]


@pytest.mark.parametrize("name,fn,args,expected,torch_counts", MATMUL_CASES, ids=[c[0] for c in MATMUL_CASES])
def test_matmul_ops_match_hand_derivation(name, fn, args, expected, torch_counts):
    for where, inputs in (("cpu", args), ("meta", _meta(args))):
        m = counted(fn, *inputs)
        assert m.flops == m.forward_flops == expected, where
        assert m.macs == expected // 2, where
        assert m.by_category == {"matmul": expected}, where
        assert m.backward_flops == 0
    if torch_counts:
        assert reference(fn, *args) == expected


def test_bias_additions_are_pointwise_only_with_ops_all():
    bias, a, b = r(2, 3, 5), r(2, 3, 4), r(2, 4, 5)
    with FlopCounter(ops="all") as c:
        torch.baddbmm(bias, a, b)
    assert c.measurement.by_category == {"matmul": 2 * 2 * 3 * 4 * 5, "pointwise": 2 * 3 * 5}
    assert c.measurement.macs == 2 * 3 * 4 * 5
    with FlopCounter(ops="all") as c:
        torch.addmm(r(5), r(3, 4), r(4, 5))
    assert c.measurement.by_category == {"matmul": 2 * 3 * 4 * 5, "pointwise": 3 * 5}


# ---------------------------------------------------------------------------
# scaled dot-product attention
# ---------------------------------------------------------------------------


def hand_attention(b, h, s_q, s_k, d_qk, d_v):
    """Q·Kᵀ (2·B·H·S_q·S_k·D_qk) plus P·V (2·B·H·S_q·S_k·D_v), full score matrix."""
    return 2 * b * h * s_q * s_k * d_qk + 2 * b * h * s_q * s_k * d_v


SDPA_CASES = [
    # name, q shape, k shape, v shape, kwargs builder
    ("plain", (2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16), lambda dev: {}),
    ("cross-len", (2, 4, 8, 16), (2, 4, 12, 16), (2, 4, 12, 16), lambda dev: {}),
    ("dv-differs", (2, 4, 8, 16), (2, 4, 12, 16), (2, 4, 12, 32), lambda dev: {}),
    ("causal", (2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16), lambda dev: {"is_causal": True}),
    ("bool-mask", (2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16),
     lambda dev: {"attn_mask": torch.ones(8, 8, dtype=torch.bool, device=dev).tril()}),
    ("float-mask", (2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16),
     lambda dev: {"attn_mask": torch.zeros(2, 1, 8, 8, device=dev)}),
    ("gqa", (2, 8, 8, 16), (2, 2, 8, 16), (2, 2, 8, 16), lambda dev: {"enable_gqa": True}),
    ("gqa-causal", (1, 6, 5, 8), (1, 3, 5, 8), (1, 3, 5, 8), lambda dev: {"enable_gqa": True, "is_causal": True}),
    ("3d", (3, 8, 16), (3, 8, 16), (3, 8, 16), lambda dev: {}),
    ("5d", (2, 3, 4, 8, 16), (2, 3, 4, 8, 16), (2, 3, 4, 8, 16), lambda dev: {}),
]


#: torch >= 2.5: scaled_dot_product_attention(..., enable_gqa=True)
_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


@pytest.mark.parametrize("name,qs,ks,vs,kw", SDPA_CASES, ids=[c[0] for c in SDPA_CASES])
def test_sdpa_matches_hand_derivation_on_cpu_meta_fake_and_torch(name, qs, ks, vs, kw):
    if "gqa" in name and not _HAS_GQA:
        pytest.skip("scaled_dot_product_attention has no enable_gqa on this torch (added in 2.5)")
    *batch, h, s_q, d_qk = qs
    expected = hand_attention(math.prod(batch), h, s_q, ks[-2], d_qk, vs[-1])
    q, k, v = torch.randn(qs), torch.randn(ks), torch.randn(vs)
    sdpa = F.scaled_dot_product_attention
    cpu = counted(sdpa, q, k, v, **kw("cpu"))
    meta = counted(sdpa, *_meta((q, k, v)), **kw("meta"))
    fake = count(lambda *a: sdpa(*a, **kw("cpu")), q, k, v, compute=False)
    for where, m in (("cpu", cpu), ("meta", meta), ("fake", fake)):
        assert m.flops == expected, where
        assert m.macs == expected // 2, where
    assert reference(sdpa, q, k, v, **kw("meta")) == expected
    assert cpu.devices == ("cpu",) and meta.devices == ("meta",)


@pytest.mark.parametrize("gqa", [False, True])
def test_sdpa_backward_is_twice_forward_on_every_device(gqa):
    """The backward of attention is four products over the score matrix: 2x the forward, on the CPU
    flash kernel and on the math path (meta) alike, and as FlopCounterMode counts it on meta."""
    if gqa and not _HAS_GQA:
        pytest.skip("scaled_dot_product_attention has no enable_gqa on this torch (added in 2.5)")
    hk = 2 if gqa else 4
    shapes = ((2, 4, 8, 16), (2, hk, 8, 16), (2, hk, 8, 16))
    kw = {"enable_gqa": True} if gqa else {}

    def run(q, k, v):
        F.scaled_dot_product_attention(q, k, v, **kw).sum().backward()

    forward = hand_attention(2, 4, 8, 8, 16, 16)
    for device in ("cpu", "meta"):
        q, k, v = (torch.randn(s, device=device, requires_grad=True) for s in shapes)
        m = counted(run, q, k, v)
        assert m.forward_flops == forward, device
        assert m.backward_flops == 2 * forward, device
    q, k, v = (torch.randn(s, device="meta", requires_grad=True) for s in shapes)
    assert reference(run, q, k, v) == 3 * forward


# ---------------------------------------------------------------------------
# parity with FlopCounterMode on meta for models built from torch.nn
# ---------------------------------------------------------------------------


class _First(nn.Module):
    """Keeps the first output of modules that return tuples (RNNs, attention)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out[0] if isinstance(out, tuple) else out


class SelfAttention(nn.Module):
    def __init__(self, dim=32, heads=4, device=None):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True, device=device)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class Mixer(nn.Module):
    """Products written inline in forward: torch.matmul, einsum, @ and SDPA."""

    def __init__(self, dim=8, device=None):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim, dim, device=device))

    def forward(self, x):  # x: [B, H, S, D]
        a = torch.matmul(x, self.w)
        b = torch.einsum("bhsd,de->bhse", x, self.w)
        c = x @ self.w
        return F.scaled_dot_product_attention(a, b, c)


class MixerNet(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.blocks = nn.ModuleList([Mixer(device=device)])
        self.head = nn.Linear(8, 3, device=device)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _conv_stack(device=None):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, device=device), nn.BatchNorm2d(8, device=device), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=4, device=device), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(8, 4, 2, stride=2, device=device), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 10, device=device),
    )


def _encoder(device=None):
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, device=device)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def _decoder(device=None):
    return _DecoderWrap(device)


class _DecoderWrap(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.dec = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True, device=device)

    def forward(self, x):
        return self.dec(x, x[:, :5])


MODELS = {
    "conv-stack": (_conv_stack, (2, 3, 8, 8)),
    "transformer-encoder": (_encoder, (2, 10, 32)),
    "transformer-decoder": (_decoder, (2, 10, 32)),
    "mha": (lambda device=None: SelfAttention(device=device), (2, 10, 32)),
    "lstm": (lambda device=None: _First(nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True,
                                                device=device)), (3, 5, 16)),
    "gru": (lambda device=None: _First(nn.GRU(16, 32, num_layers=2, batch_first=True, device=device)), (3, 5, 16)),
    "rnn": (lambda device=None: _First(nn.RNN(16, 32, device=device)), (5, 3, 16)),
    "lstm-proj": (lambda device=None: _First(nn.LSTM(16, 32, proj_size=8, device=device)), (5, 3, 16)),
    "mixer": (MixerNet, (2, 4, 6, 8)),
}


def _build(name, device):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    return factory(device=device), torch.randn(shape, device=device)


def _mixer_expected():
    b, h, s, d = 2, 4, 6, 8
    rows = b * h * s
    mixer = 3 * 2 * rows * d * d + hand_attention(b, h, s, s, d, d)
    head = 2 * rows * 8 * 3
    return mixer, head


def test_inline_products_are_attributed_to_the_module_that_ran_them():
    model, x = _build("mixer", "cpu")
    mixer, head = _mixer_expected()
    for m in (count(model, x), count(model, x, compute=False), count(_build("mixer", "meta")[0], _meta(x))):
        assert m.name == "MixerNet"
        # a ModuleList is never called, so it has no entry; its block is named by its qualified name
        assert m.by_module == {"MixerNet": mixer + head, "blocks.0": mixer, "head": head}
        assert m.module_types["blocks.0"] == "Mixer"
        assert m.flops == mixer + head


_PROJ_WARNING = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


@_PROJ_WARNING
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_equals_flopcountermode_on_meta(name):
    model, x = _build(name, "meta")
    expected = reference(model, x)
    assert expected > 0
    assert count(model, x).flops == expected
    cpu_model, cpu_x = _build(name, "cpu")
    for train in (True, False):
        cpu_model.train(train)
        model.train(train)
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                cpu = count(cpu_model, cpu_x)
                meta = count(model, x)
                fake = count(cpu_model, cpu_x, compute=False)
            what = f"train={train} grad={grad}"
            assert cpu.flops == meta.flops == fake.flops == expected, what
            assert cpu.macs == meta.macs == fake.macs == expected // 2, what
            assert cpu.params == meta.params == fake.params, what
            assert cpu.devices == ("cpu",) and meta.devices == ("meta",), what
            # every module both runs saw carries the same FLOPs (fused CPU paths skip inner modules)
            common = cpu.by_module.keys() & meta.by_module.keys()
            assert cpu.name in common
            assert {k: cpu.by_module[k] for k in common} == {k: meta.by_module[k] for k in common}, what
            # compute=False runs on meta copies: the same breakdown as a model built on meta
            assert fake.by_module == meta.by_module and fake.by_op == meta.by_op, what
            assert fake.devices == ("cpu",), what


@_PROJ_WARNING
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("input_grad", [False, True])
def test_forward_and_backward_equal_flopcountermode_on_meta(name, input_grad):
    model, x = _build(name, "meta")
    x.requires_grad_(input_grad)

    def step(model, x):
        model(x).sum().backward()

    expected = reference(step, model, x)
    cpu_model, cpu_x = _build(name, "cpu")
    cpu_x.requires_grad_(input_grad)
    cpu_model.train()
    model.train()
    cpu = counted(step, cpu_model, cpu_x)
    meta = counted(step, model, x)
    assert cpu.flops == meta.flops == expected
    assert cpu.forward_flops == meta.forward_flops
    assert cpu.backward_flops == meta.backward_flops > 0
    assert cpu.backward_flops == cpu.flops - cpu.forward_flops


def test_lstm_backward_follows_requires_grad_like_autograd():
    """Frozen weights, an initial state that needs its gradient, packed sequences: the CPU oneDNN
    kernel's backward counts the products autograd needs, as the unfused meta path does."""
    from torch.nn.utils.rnn import pack_padded_sequence

    def run(device, frozen, h_grad, packed):
        torch.manual_seed(0)
        lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True, device=device)
        for p in lstm.parameters():
            p.requires_grad_(not frozen)
        x = torch.randn(3, 5, 16, device=device, requires_grad=True)
        h = (torch.randn(4, 3, 32, device=device, requires_grad=h_grad), torch.randn(4, 3, 32, device=device))
        inp = pack_padded_sequence(x, torch.tensor([5, 4, 2]), batch_first=True) if packed else x
        with FlopCounter() as c:
            out = lstm(inp, h)[0]
            (out.data if packed else out).sum().backward()
        return c.measurement

    for frozen in (False, True):
        for h_grad in (False, True):
            for packed in (False, True):
                cpu, meta = run("cpu", frozen, h_grad, packed), run("meta", frozen, h_grad, packed)
                what = f"frozen={frozen} h_grad={h_grad} packed={packed}"
                assert (cpu.forward_flops, cpu.backward_flops) == (meta.forward_flops, meta.backward_flops), what


# ---------------------------------------------------------------------------
# fused CPU inference paths and known figures
# ---------------------------------------------------------------------------


def test_fused_transformer_encoder_on_cpu_equals_meta():
    """nn.TransformerEncoderLayer's fused eval/no_grad kernel (FlopCounterMode sees 0 there) counts
    what the unfused layer does."""
    torch.manual_seed(0)
    model = zoo.bert_base(num_layers=2, dropout=0.0).eval()
    x = torch.randn(1, 128, 768)
    with torch.no_grad():
        cpu = count(model, x)
    assert "aten._transformer_encoder_layer_fwd" in cpu.by_op  # the fused path ran
    meta_model = zoo.bert_base(num_layers=2, device="meta").eval()
    meta = count(meta_model, _meta(x))
    assert cpu.flops == meta.flops == reference(meta_model, x)
    assert cpu.by_module["layers.0"] == cpu.by_module["layers.1"] == meta.by_module["layers.0"]
    per_layer = 2 * 128 * (4 * 768 * 768 + 2 * 768 * 3072) + hand_attention(1, 12, 128, 128, 64, 64)
    assert cpu.flops == 2 * per_layer


def test_fused_multihead_attention_on_cpu_equals_meta():
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        cpu = count(model, x)
    assert "aten._native_multi_head_attention" in cpu.by_op
    expected = 2 * 20 * 4 * 32 * 32 + hand_attention(2, 4, 10, 10, 8, 8)
    meta_model = SelfAttention(device="meta").eval()
    assert cpu.flops == count(meta_model, _meta(x)).flops == reference(meta_model, x) == expected
    assert cpu.by_module == {"SelfAttention": expected, "mha": expected}


def test_known_figure_bert_base():
    m = count(zoo.bert_base(device="meta"), torch.empty(1, 128, 768, device="meta"))
    assert round(m.macs / 1e9, 3) == 11.174
    assert m.flops == 2 * m.macs
    assert set(m.by_module) >= {"TransformerEncoder", "layers.0", "layers.11", "layers.11.self_attn"}


def test_known_figure_vit_b16():
    m = count(zoo.vit_b16(device="meta"), torch.empty(1, 3, 224, 224, device="meta"))
    assert round(m.macs / 1e9, 3) == 17.564
    assert m.name == "ViT"


def test_known_figure_resnet50_compute_free():
    model = zoo.resnet50()
    m = count(model, torch.randn(1, 3, 224, 224), compute=False)
    assert round(m.macs / 1e9, 3) == 4.089
    assert m.params == 25_557_032 and round(m.params / 1e6, 3) == 25.557
    assert m.trainable_params == m.params
    assert m.computed is False
    assert m.flops == count(zoo.resnet50(device="meta"), torch.empty(1, 3, 224, 224, device="meta")).flops


def test_llama_7b_on_meta_allocates_nothing():
    before = _rss_bytes()
    model = zoo.llama()
    tokens = torch.zeros(1, 128, dtype=torch.long, device="meta")
    m = count(model, tokens)
    grown = _rss_bytes() - before
    assert grown < 500 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
    vocab, dim, layers, hidden, s = 32000, 4096, 32, 11008, 128
    embed = lm_head = vocab * dim
    per_layer = 4 * dim * dim + 3 * dim * hidden + 2 * dim  # attention, SwiGLU MLP, two RMSNorm weights
    assert m.params == embed + layers * per_layer + dim + lm_head == 6_738_415_616
    expected = layers * (2 * s * (4 * dim * dim + 3 * dim * hidden) + hand_attention(1, 32, s, s, 128, 128))
    expected += 2 * s * dim * vocab
    assert m.flops == expected
    assert m.devices == ("meta",)
    assert m.by_module["layers.31.self_attn"] == 2 * s * 4 * dim * dim + hand_attention(1, 32, s, s, 128, 128)


# ---------------------------------------------------------------------------
# compute=False
# ---------------------------------------------------------------------------


def test_compute_free_equals_real_run_with_kwargs():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x, *, scale=None, extra=None):
            y = self.lin(x)
            return y if extra is None else y + extra @ torch.ones(3, 4)

    model, x, extra = Kw(), torch.randn(5, 8), torch.randn(5, 3)
    real = count(model, x, extra=extra, scale=2.0)
    fake = count(model, x, compute=False, extra=extra, scale=2.0)
    assert real.flops == fake.flops == 2 * 5 * 8 * 4 + 2 * 5 * 3 * 4
    assert real.by_module == fake.by_module and real.by_op == fake.by_op
    assert real.computed and not fake.computed


class ValueDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return x


class Nonzero(nn.Module):
    def forward(self, x):
        return torch.nonzero(x)


@pytest.mark.parametrize("model,op", [(ValueDependent(), "_local_scalar_dense"), (Nonzero(), "nonzero")])
def test_compute_free_value_dependent_model_raises_clear_error(model, op):
    x = torch.randn(3, 4)
    with pytest.raises(ComputeFreeError) as info:
        count(model, x, compute=False)
    text = str(info.value)
    assert op in text
    assert "compute=True" in text
    assert type(model).__name__ in text
    assert_clean()
    count(model, x)  # and compute=True runs it


def test_compute_free_does_not_touch_weights():
    model = nn.Linear(4, 4)
    before = model.weight.detach().clone()
    count(model, torch.randn(2, 4), compute=False)
    assert torch.equal(model.weight, before)
    assert type(model.weight) is nn.Parameter


# ---------------------------------------------------------------------------
# the fast path
# ---------------------------------------------------------------------------

FAST_FIELDS = ("flops", "forward_flops", "backward_flops", "macs", "by_module", "by_op", "by_category", "uncounted",
               "stacks", "params", "trainable_params", "module_types", "module_params")


def _count_no_fast(model, *inputs):
    with FlopCounter(model=model, fast_path=False) as c:
        model(*inputs)
    return c.measurement


def _fast_and_slow(model, x, backward=False, **kwargs):
    results = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(x.requires_grad)
        with FlopCounter(model=model, fast_path=fast, **kwargs) as c:
            out = model(xi)
            if backward:
                out.sum().backward()
        results.append(c.measurement)
    return results


def _assert_same(a: Measurement, b: Measurement) -> None:
    for field in FAST_FIELDS:
        assert getattr(a, field) == getattr(b, field), field


FAST_MODELS = {
    "resnet50": (lambda: zoo.resnet50(num_classes=10), (1, 3, 64, 64)),
    "conv-transpose": (lambda: nn.Sequential(
        nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.ConvTranspose2d(8, 4, 2, stride=2, groups=4), nn.GELU(), nn.Upsample(scale_factor=0.5)), (2, 4, 5, 5)),
    "grouped-dilated-strided": (lambda: nn.Sequential(
        nn.Conv2d(4, 8, 3, groups=2, dilation=2, stride=2, padding=2), nn.SiLU(), nn.Dropout(0.1),
        nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2), nn.Hardswish(),
        nn.AvgPool2d(1), nn.Flatten(), nn.Identity()), (2, 4, 12, 12)),
    "unbatched": (lambda: nn.Sequential(nn.Conv2d(3, 6, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(6, 2, 1),
                                        nn.Sigmoid(), nn.ConvTranspose2d(2, 2, 2, stride=2)), (3, 8, 8)),
    "conv1d-3d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Mish(),
                                        nn.ConvTranspose1d(4, 2, 3, stride=2)), (2, 2, 9)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(inplace=True),
                                     nn.AdaptiveAvgPool3d(2), nn.ConvTranspose3d(4, 2, 2, stride=2)), (1, 2, 4, 4, 4)),
    "linear-3d": (lambda: nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)),
                  (2, 3, 8)),
}


@pytest.mark.parametrize("name", list(FAST_MODELS))
@pytest.mark.parametrize("mode", ["eval-no-grad", "eval-grad", "train-backward"])
def test_fast_path_is_exact(name, mode):
    factory, shape = FAST_MODELS[name]
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(shape)
    if mode == "train-backward":
        model.train()
        x.requires_grad_(True)
        fast, slow = _fast_and_slow(model, x, backward=True)
        assert fast.backward_flops > 0
    else:
        model.eval()
        with torch.set_grad_enabled(mode == "eval-grad"):
            fast, slow = _fast_and_slow(model, x)
    _assert_same(fast, slow)
    assert fast.flops > 0


def test_fast_path_hides_no_uncounted_op():
    """A zero-cost fast-path module (nn.ReLU) whose op has no formula must still show it, and fail strict."""
    blank = Registry()  # no formulas at all: aten.relu is uncounted here
    for fast in (True, False):
        x = torch.randn(4)
        with FlopCounter(registry=blank, fast_path=fast) as c:
            for _ in range(3):
                nn.ReLU()(x)
        assert c.measurement.uncounted == {"aten.relu": 3}, fast
        with pytest.raises(UncountedOpsError, match="aten.relu"):
            with FlopCounter(registry=blank, fast_path=fast, strict=True):
                nn.ReLU()(x)


def test_fast_path_skips_known_zero_modules_after_the_first_call(monkeypatch):
    """Once a call signature's ops are known to cost nothing, further calls skip the dispatch mode."""
    import pytest_flops.counting.counter as counter_mod

    seen = []
    dispatch = counter_mod._Mode.__torch_dispatch__

    def spy(self, func, types, args=(), kwargs=None):
        seen.append(str(func))
        return dispatch(self, func, types, args, kwargs)

    for mode_class in (counter_mod._Mode, counter_mod._CompileSafeMode):
        monkeypatch.setattr(mode_class, "__torch_dispatch__", spy)
    relus = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU(inplace=True))
    with FlopCounter(registry=DEFAULT_REGISTRY.child()) as c:  # a fresh registry: nothing replayed yet
        relus(torch.randn(4))
    assert seen.count("aten.relu.default") == 1  # the first call checks its ops, later ones are fast
    assert seen.count("aten.relu_.default") == 1  # another signature: checked once too
    assert c.measurement.uncounted == {}
    seen.clear()
    with FlopCounter(fast_path=False):
        relus(torch.randn(4))
    assert seen.count("aten.relu.default") == 3


class _ExtraWork(TorchFunctionMode):
    """A user's torch-function mode that makes ``F.relu`` run a matrix product too."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.relu:
            torch.mm(args[0], args[0].T)
        return func(*args, **(kwargs or {}))


def _in_turn(first, second, count):
    """Count under two conditions in turn, on the fast and the aten path, with one fresh registry (a trace made
    under one condition is there to be replayed under the other): the measurements made under each."""
    registry = DEFAULT_REGISTRY.child()
    found = {first: [], second: []}
    for condition, fast in ((first, True), (second, True), (second, False), (first, False), (second, True),
                            (first, True)):
        found[condition].append(count(condition, fast, registry))
    return found


@pytest.mark.parametrize("grad", [False, True])
def test_a_function_mode_under_the_counter_is_never_replayed_through(grad):
    """A call under another torch-function mode has no signature: a trace made without the mode is not replayed
    under it, nor one made under it without it (on the landed code both counted 0 or 128 the wrong way round)."""
    x = torch.randn(4, 4)

    def count(under, fast, registry):
        with torch.set_grad_enabled(grad), (_ExtraWork() if under else contextlib.nullcontext()):
            with FlopCounter(registry=registry, fast_path=fast) as c:
                F.relu(x)
        return c.measurement

    for under, found in _in_turn(False, True, count).items():
        assert [m.flops for m in found] == [2 * 4 * 4 * 4 if under else 0] * 3, under


def test_memory_tracking_counts_attention_on_meta_as_the_aten_path_after_a_plain_count():
    """With memory=True a function mode below the counter runs SDPA on meta as CPU's flash kernel would: a trace
    of the math path made by a plain count is not replayed there (the landed code reported aten.bmm)."""
    class Attention(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    q, model = torch.randn(1, 4, 64, 32, device="meta"), Attention()

    def count(memory, fast, registry):
        with torch.no_grad(), FlopCounter(model=model, registry=registry, memory=memory, fast_path=fast) as c:
            model(q)
        return c.measurement.by_op

    found = _in_turn(False, True, count)
    for memory, ops in found.items():
        assert ops[0] == ops[1] == ops[2], memory
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in found[True][0] and "aten.bmm" in found[False][0]


def test_calls_under_a_device_context_or_an_outer_counter_are_still_replayed(monkeypatch):
    """``with torch.device(...)`` and an outer counter's function mode change no call's ops: calls under them
    keep their signatures, and a second count replays what the first probed."""
    probes = []
    probe = FlopCounter.probe
    monkeypatch.setattr(FlopCounter, "probe", lambda self, *a: (probes.append(a[1]), probe(self, *a))[1])
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    registry, outer = DEFAULT_REGISTRY.child(), DEFAULT_REGISTRY.child()
    for context in (lambda: torch.device("cpu"), lambda: FlopCounter(registry=outer)):
        for _ in range(2):
            probes.clear()
            with context(), FlopCounter(model=model, registry=registry) as c:
                model(x)
            assert c.measurement.flops == 2 * 3 * (4 * 4 + 4 * 2)
        assert F.linear not in probes  # the second count replayed both calls (both counters, when nested)


@pytest.mark.parametrize("first", ["plain", "vmap"])
def test_calls_under_vmap_count_the_batched_work(first):
    """Under torch.func.vmap a tensor shows its per-sample shape while its ops run on the batch: such calls have
    no signature (the landed code replayed a plain call's trace under vmap, 24 FLOPs for 192, or the reverse)."""
    w, x = torch.randn(3, 4), torch.randn(8, 4)

    def count(kind, fast, registry):
        with torch.no_grad(), FlopCounter(registry=registry, fast_path=fast) as c:
            if kind == "vmap":
                torch.func.vmap(lambda row: F.relu(F.linear(row, w)))(x)
            else:
                F.relu(F.linear(x[0], w))
        return c.measurement.flops

    found = _in_turn(first, "plain" if first == "vmap" else "vmap", count)
    assert found == {"vmap": [2 * 8 * 4 * 3] * 3, "plain": [2 * 4 * 3] * 3}


@pytest.mark.parametrize("ops", ["matmul", "all"])
def test_the_attention_kernel_switches_are_part_of_a_calls_signature(ops):
    """``sdpa_kernel([MATH])`` makes SDPA run its math decomposition instead of the flash kernel: a trace made
    under the default is not replayed there (the landed code reported the flash op under MATH, and under
    ops="all" 18,944 FLOPs where the aten path counts 19,456: the math path's scaling)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 16, 8)

    def count(math, fast, registry):
        with torch.no_grad(), (sdpa_kernel([SDPBackend.MATH]) if math else contextlib.nullcontext()):
            with FlopCounter(ops, registry=registry, fast_path=fast) as c:
                F.scaled_dot_product_attention(q, q, q)
        return c.measurement.flops, c.measurement.by_op, c.measurement.by_category

    found = _in_turn(False, True, count)
    for math, results in found.items():
        assert results[0] == results[1] == results[2], math
    assert "aten.bmm" in found[True][0][1] and "aten.bmm" not in found[False][0][1]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_cudnn_and_onednn_switches_are_part_of_a_batch_norm_signature():
    """Batch norm's decomposition picks cudnn_batch_norm or native_batch_norm by ``torch.backends.cudnn``
    (on CUDA): the switches are in the key of the functions whose ops they choose."""
    from pytest_flops.counting.signature import call_key

    x, stats, w = torch.randn(2, 3, 4, 4), torch.zeros(3), torch.randn(5, 4)
    args = (x, stats, stats)
    plain, linear = call_key(F.batch_norm, args, {}), call_key(F.linear, (x, w), {})
    with torch.backends.cudnn.flags(enabled=False):
        assert call_key(F.batch_norm, args, {}) != plain
    with torch.backends.mkldnn.flags(enabled=False):
        assert call_key(F.batch_norm, args, {}) != plain
    assert call_key(F.batch_norm, args, {}) == plain
    with torch.backends.cudnn.flags(enabled=False):  # a function they do not choose for keeps its key
        assert call_key(F.linear, (x, w), {}) == linear


# ---------------------------------------------------------------------------
# backward attribution
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_backward_of_linear_stack_is_twice_forward_and_attributed(device):
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).to(device)
    x = torch.randn(3, 8, device=device, requires_grad=True)
    with FlopCounter() as c:
        model(x).sum().backward()
    m = c.measurement
    f0, f2 = 2 * 3 * 8 * 16, 2 * 3 * 16 * 4
    assert m.forward_flops == f0 + f2
    assert m.backward_flops == 2 * (f0 + f2)  # grad input + grad weight
    assert m.flops == 3 * (f0 + f2)
    assert m.by_module == {"Sequential": 3 * (f0 + f2), "0": 3 * f0, "1": 0, "2": 3 * f2}
    assert m.stacks["Sequential;0;aten.mm (backward)"] == 2 * f0
    assert m.by_op["aten.mm"] == 2 * (f0 + f2)


def test_backward_without_input_grad_skips_first_grad_input():
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    with FlopCounter() as c:
        model(torch.randn(3, 8)).sum().backward()
    f0, f2 = 2 * 3 * 8 * 16, 2 * 3 * 16 * 4
    assert c.measurement.backward_flops == f0 + 2 * f2
    assert c.measurement.by_module["0"] == 2 * f0


def test_backward_outside_the_counter_is_not_counted_and_inside_is_attributed():
    model = nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with FlopCounter() as c:
        y = model(x)
    y.sum().backward()
    assert c.measurement.backward_flops == 0
    y = model(x)
    with FlopCounter(model=model) as c:
        y.sum().backward()
    assert c.measurement.forward_flops == 0 and c.measurement.backward_flops == 2 * 2 * (2 * 4 * 4)


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)

    def forward(self, tokens):
        return self.head(self.frozen(self.body(self.embed(tokens))))


def test_parameters_tied_counted_once_and_trainable():
    model = Tied()
    m = count(model, torch.tensor([[1, 2, 3]]))
    assert m.params == 60 + 42 + 42
    assert m.trainable_params == 60 + 42
    assert m.params == sum(p.numel() for p in model.parameters())  # parameters() yields a tied one once
    assert m.params < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_bare_counter_counts_parameters_of_outermost_modules_that_ran():
    a, b, unused = nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2), nn.ReLU()), nn.Linear(100, 100)
    with FlopCounter() as c:
        b(a(torch.randn(1, 4)))
        b[0](torch.randn(1, 4))  # an inner module of a root that already ran
    m = c.measurement
    assert m.params == 20 + 10
    assert m.name == "FlopCounter"
    with FlopCounter() as c:
        a(torch.randn(1, 4))
        a(torch.randn(1, 4))
    assert c.measurement.params == 20 and c.measurement.name == "Linear"
    with FlopCounter() as c:
        torch.randn(2, 3) @ torch.randn(3, 4)
    assert c.measurement.params == 0 and c.measurement.flops == 48
    del unused


def test_module_params_are_each_modules_parameters_children_included():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 2, bias=False)))
    m = count(model, torch.randn(3, 4))
    assert m.module_params == {"Sequential": 40 + 18 + 4, "0": 4 * 8 + 8, "1": 0, "2": 18 + 4, "2.0": 8 * 2 + 2,
                               "2.1": 4}
    assert m.module_params["Sequential"] == m.params
    assert Measurement.from_dict(m.to_dict()).module_params == m.module_params
    tied = count(Tied(), torch.tensor([[1, 2, 3]]))  # a tied parameter counts once in the module holding both
    assert tied.module_params["Tied"] == tied.params
    a, b = nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2), nn.ReLU())
    with FlopCounter() as c:  # several roots: each under its own name
        b(a(torch.randn(1, 4)))
    assert c.measurement.module_params == {"Linear": 20, "Sequential": 10, "Sequential.0": 10, "Sequential.1": 0}


def test_module_params_equal_parameters_of_each_module_with_shared_modules_and_frozen_weights():
    """One walk of the model gives what ``module.parameters()`` gives for each module that ran: a module used
    twice, a weight tied across branches and a frozen layer included."""
    shared = nn.Linear(6, 6)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(shared, nn.ReLU(), nn.Linear(6, 3))
            self.b = nn.Sequential(shared, nn.Linear(6, 3))
            self.b[1].weight = self.a[2].weight  # tied across branches
            self.frozen = nn.Linear(3, 2).requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.frozen(self.a(x) + self.b(x))

    model = Net()
    m = count(model, torch.randn(2, 6))
    names = dict(model.named_modules(remove_duplicate=False))
    # every module that ran, the shared one under its first name
    assert set(m.module_params) == {"Net", "a", "a.0", "a.1", "a.2", "b", "b.1", "frozen"}
    for name, value in m.module_params.items():
        module = model if name == "Net" else names[name]
        assert value == sum(p.numel() for p in module.parameters()), name
    assert m.params == sum(p.numel() for p in model.parameters()) == m.module_params["Net"]
    assert m.trainable_params == m.params - 8


# ---------------------------------------------------------------------------
# uncounted ops, strict, op formulas for custom ops
# ---------------------------------------------------------------------------


# An explicit schema: torch 2.4 cannot infer one from string annotations (``from __future__ import annotations``).
@torch.library.custom_op("pftest_counter::scale", mutates_args=(), schema="(Tensor x, Tensor w) -> Tensor")
def _scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * w


@_scale.register_fake
def _(x, w):
    return torch.empty_like(x)


@torch.library.custom_op("pftest_counter::fastrelu", mutates_args=(), schema="(Tensor x) -> Tensor")
def _fastrelu(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(0)


@_fastrelu.register_fake
def _(x):
    return torch.empty_like(x)


class ScaleNet(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4, device=device))
        self.lin = nn.Linear(4, 4, device=device)

    def forward(self, x):
        return self.lin(torch.ops.pftest_counter.scale(x, self.w))


def test_custom_op_without_formula_is_uncounted_and_strict_raises(registry):
    model, x = ScaleNet(), torch.randn(2, 4)
    m = count(model, x, registry=registry)
    assert m.uncounted == {"pftest_counter.scale": 1}
    assert m.flops == 2 * 2 * 4 * 4
    assert "pftest_counter.scale" in str(m)
    with pytest.raises(UncountedOpsError) as info:
        count(model, x, strict=True, registry=registry)
    assert "pftest_counter.scale x1" in str(info.value)
    assert "register_op_formula" in str(info.value)
    assert_clean()
    with pytest.raises(UncountedOpsError):
        count(model, x, strict=True, registry=registry, compute=False)


def test_op_formula_for_custom_op_counts_everywhere(registry):
    calls = []

    def scale_flops(x, w, *, out=None):
        calls.append(tuple(out.shape))
        return x.numel()

    registry.register_op_formula(torch.ops.pftest_counter.scale, scale_flops)
    model, x = ScaleNet(), torch.randn(2, 4)
    results = [
        count(model, x, strict=True, registry=registry),
        count(model, x, strict=True, registry=registry, compute=False),
        count(ScaleNet(device="meta"), _meta(x), strict=True, registry=registry),
    ]
    for m in results:
        assert m.uncounted == {}
        assert m.by_op == {"aten.addmm": 64, "pftest_counter.scale": 8}
        assert m.by_category == {"matmul": 64, "custom": 8}
        assert m.flops == 72 and m.macs == 32
        assert m.by_module == {"ScaleNet": 72, "lin": 64}
    assert calls == [(2, 4)] * 3
    # the default registry is untouched
    assert count(model, x).uncounted == {"pftest_counter.scale": 1}


def test_op_formula_registered_by_name_and_category_and_overriding_builtin(registry):
    registry.register_op_formula("pftest_counter::scale", lambda x, w, out=None: 5, category="pointwise")
    m = count(ScaleNet(), torch.randn(2, 4), registry=registry)
    assert "pftest_counter.scale" not in m.by_op  # pointwise counts only with ops="all"
    assert m.uncounted == {}
    m = count(ScaleNet(), torch.randn(2, 4), registry=registry, ops="all")
    assert m.by_op["pftest_counter.scale"] == 5
    registry.register_op_formula(aten.mm, lambda a, b, out=None: 1, category="matmul")
    assert counted_with(registry, torch.mm, r(3, 4), r(4, 5)).flops == 1
    assert counted(torch.mm, r(3, 4), r(4, 5)).flops == 120


def counted_with(registry, fn, *args):
    with FlopCounter(registry=registry) as c:
        fn(*args)
    return c.measurement


def test_global_register_functions(monkeypatch):
    from pytest_flops import register_module_formula, register_op_formula
    from pytest_flops.counting import registry as registry_mod

    scratch = Registry(DEFAULT_REGISTRY)
    monkeypatch.setattr(registry_mod, "DEFAULT_REGISTRY", scratch)
    register_op_formula(torch.ops.pftest_counter.scale, lambda x, w, out=None: 3)

    @register_module_formula(nn.Linear)
    def _lin(module, inputs, output):
        return 7

    assert scratch.user_op_formulas and not DEFAULT_REGISTRY.user_op_formulas
    m = count(ScaleNet(), torch.randn(2, 4), registry=scratch, strict=True)
    assert m.by_op == {"Linear (module formula)": 7, "pftest_counter.scale": 3}


def test_strict_lists_every_uncounted_op_and_ignores_other_errors(registry):
    blank = Registry()
    with pytest.raises(UncountedOpsError) as info:
        with FlopCounter(strict=True, registry=blank):
            torch.randn(3).exp().sin()
    assert "aten.exp x1" in str(info.value) and "aten.sin x1" in str(info.value)
    with pytest.raises(KeyError):  # the body's own exception wins
        with FlopCounter(strict=True, registry=blank):
            torch.randn(3).exp()
            raise KeyError("boom")
    assert_clean()


def test_invalid_ops_choice():
    with pytest.raises(ValueError, match="'matmul', 'all'"):
        FlopCounter(ops="some")


def test_failing_op_formula_raises_formula_error_and_cleans_up(registry):
    registry.register_op_formula(torch.ops.pftest_counter.scale, lambda *a, out=None: 1 // 0)
    with pytest.raises(FormulaError, match="pftest_counter.scale.*ZeroDivisionError"):
        count(ScaleNet(), torch.randn(2, 4), registry=registry)
    assert_clean()


# ---------------------------------------------------------------------------
# module formulas
# ---------------------------------------------------------------------------


class CustomAttention(nn.Module):
    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, s, e = x.shape
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, s, e))


class AttnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = CustomAttention()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.attn(x))


def _attention_formula(module, inputs, output):
    b, s, e = inputs[0].shape
    return 2 * b * s * e * 4 * e + hand_attention(b, module.heads, s, s, e // module.heads, e // module.heads)


def test_module_formula_replaces_the_subtree(registry):
    model, x = AttnNet(), torch.randn(2, 5, 8)
    plain = count(model, x)
    registry.register_module_formula(CustomAttention, lambda mod, inp, out: 1000, category="attention")
    m = count(model, x, registry=registry)
    assert m.by_module == {"AttnNet": 1000 + plain.by_module["fc"], "attn": 1000, "fc": plain.by_module["fc"]}
    assert m.by_op == {"aten.addmm": plain.by_module["fc"], "CustomAttention (module formula)": 1000}
    assert m.by_category == {"matmul": plain.by_module["fc"], "attention": 1000}
    assert m.stacks["AttnNet;attn;CustomAttention (module formula)"] == 1000
    assert "attn.qkv" in plain.by_module and "attn.qkv" not in m.by_module
    assert m.macs == (1000 + plain.by_module["fc"]) // 2


def test_module_formula_that_matches_the_ops_gives_the_same_count(registry):
    model, x = AttnNet(), torch.randn(2, 5, 8)
    plain = count(model, x)
    registry.register_module_formula(CustomAttention, _attention_formula, category="attention")
    for m in (count(model, x, registry=registry), count(model, x, registry=registry, compute=False)):
        assert m.flops == plain.flops
        assert m.by_module["attn"] == plain.by_module["attn"]


def test_module_formula_applies_to_subclasses_and_backward_still_counts(registry):
    class Sub(CustomAttention):
        pass

    registry.register_module_formula(CustomAttention, lambda mod, inp, out: 10)
    model = Sub()
    x = torch.randn(1, 3, 8, requires_grad=True)
    with FlopCounter(registry=registry) as c:
        model(x).sum().backward()
    m = c.measurement
    assert m.forward_flops == 10
    assert m.backward_flops > 0  # backward ops run through the dispatch mode
    assert m.by_module["Sub"] == m.flops


def test_module_formula_bad_result_raises(registry):
    registry.register_module_formula(CustomAttention, lambda mod, inp, out: "many")
    with pytest.raises(FormulaError, match="expected an int"):
        count(CustomAttention(), torch.randn(1, 3, 8), registry=registry)
    assert_clean()


# ---------------------------------------------------------------------------
# cleanup after exceptions, nesting
# ---------------------------------------------------------------------------


def test_exception_in_fast_path_module_leaves_nothing_behind():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="channels|expected input"):
        count(conv, torch.randn(1, 5, 8, 8))
    assert_clean()
    with pytest.raises(RuntimeError):
        with FlopCounter():
            nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 3))(torch.randn(1, 5, 8, 8))
    assert_clean()
    with pytest.raises(RuntimeError):
        count(conv, torch.randn(1, 5, 8, 8), compute=False)
    assert_clean()
    # the library still counts correctly afterwards
    assert count(conv, torch.randn(1, 3, 8, 8)).flops == 2 * 4 * 36 * 27


def test_exception_inside_module_formula_module_leaves_nothing_behind(registry):
    class Boom(CustomAttention):
        def forward(self, x):
            self.qkv(x)
            raise ValueError("boom")

    registry.register_module_formula(CustomAttention, lambda mod, inp, out: 10)
    with pytest.raises(ValueError, match="boom"):
        count(nn.Sequential(Boom()), torch.randn(1, 3, 8), registry=registry)
    assert_clean()


def test_exception_in_plain_code_and_counter_reuse():
    counter = FlopCounter()
    with pytest.raises(ZeroDivisionError):
        with counter:
            nn.Linear(2, 2)(torch.randn(1, 2))
            1 / 0
    assert_clean()
    assert counter.measurement is not None and counter.measurement.flops == 8
    with counter:
        nn.Linear(2, 2)(torch.randn(1, 2))
    assert counter.measurement.flops == 8
    with pytest.raises(RuntimeError, match="already active"):
        with counter:
            with counter:
                pass
    assert_clean()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_nested_counters_count_the_same(device):
    model = zoo.resnet50(num_classes=10, device=device).eval()
    x = torch.randn(1, 3, 32, 32, device=device)
    with FlopCounter() as outer:
        with FlopCounter() as inner:
            model(x)
    a, b = outer.measurement, inner.measurement
    assert a.flops == b.flops == count(model, x).flops > 0
    assert a.by_module == b.by_module and a.by_op == b.by_op and a.params == b.params
    with pytest.raises(RuntimeError):
        with FlopCounter() as outer:
            with FlopCounter():
                nn.Conv2d(3, 4, 3)(torch.randn(1, 5, 8, 8, device=device))
    assert_clean()


def test_counts_do_not_leak_between_sequential_counters():
    model, x = nn.Linear(4, 4), torch.randn(2, 4)
    first = count(model, x)
    second = count(model, x)
    assert first == second


# ---------------------------------------------------------------------------
# Measurement data
# ---------------------------------------------------------------------------


def test_measurement_round_trip_json_and_text():
    model, x = AttnNet(), torch.randn(2, 5, 8, requires_grad=True)
    with FlopCounter(model=model) as c:
        model(x).sum().backward()
    m = c.measurement
    data = json.loads(json.dumps(m.to_dict()))
    again = Measurement.from_dict(data)
    assert again == m
    assert again.to_dict() == m.to_dict()
    with pytest.raises(ValueError, match="flops"):
        Measurement.from_dict({"name": "x"})
    text = str(m)
    for name in ("AttnNet", "attn", "attn.qkv", "fc", "FLOPs", "backward"):
        assert name in text
    assert m.forward_flops + m.backward_flops == m.flops
    assert sum(m.stacks.values()) == m.flops == sum(m.by_op.values()) == sum(m.by_category.values())
    assert m.by_module["AttnNet"] == m.flops
    assert m.by_module["attn"] == m.by_module["attn.qkv"] + m.by_module["attn.out"] + m.stacks.get(
        "AttnNet;attn;aten._scaled_dot_product_flash_attention_for_cpu", 0) + m.stacks.get(
        "AttnNet;attn;aten._scaled_dot_product_flash_attention_for_cpu_backward (backward)", 0)
    top = m.top_modules(2)
    assert len(top) == 2 and all(v > 0 for _, v in top)


def test_devices_recorded():
    lin = nn.Linear(2, 2)
    assert count(lin, torch.randn(1, 2)).devices == ("cpu",)
    assert count(nn.Linear(2, 2, device="meta"), torch.empty(1, 2, device="meta")).devices == ("meta",)
    with FlopCounter() as c:
        lin(torch.randn(1, 2))
        nn.Linear(2, 2, device="meta")(torch.empty(1, 2, device="meta"))
    assert c.measurement.devices == ("cpu", "meta")


def test_root_naming_and_qualified_names():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 3)), nn.ModuleDict({"x": nn.Linear(3, 2)}))

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner[1]["x"](self.inner[0](x))

    m = count(Wrapper(), torch.randn(1, 2))
    assert m.name == "Wrapper"
    assert set(m.by_module) == {"Wrapper", "inner.0", "inner.0.0", "inner.1.x"}
    assert m.module_types["inner.1.x"] == "Linear"


def test_no_warnings_on_common_paths():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        count(nn.Linear(2, 2), torch.randn(1, 2))
        count(nn.Linear(2, 2), torch.randn(1, 2), compute=False)


# ---------------------------------------------------------------------------
# threads: work a module hands to other threads (as nn.DataParallel does)
# ---------------------------------------------------------------------------
class _Fanout(nn.Module):
    """Runs replicas of ``module`` in threads from its forward, like nn.DataParallel's parallel_apply."""

    def __init__(self, module: nn.Module, n: int = 2) -> None:
        super().__init__()
        self.module = module
        self.n = n

    def forward(self, x):
        import copy
        import threading

        replicas = []
        for _ in range(self.n):
            replica = copy.deepcopy(self.module)
            replica._is_replica = True
            replicas.append(replica)
        outputs = [None] * self.n
        chunks = x.chunk(self.n)

        def work(i):
            outputs[i] = replicas[i](chunks[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return torch.cat(outputs)


def _mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


@pytest.mark.parametrize("fast_path", [True, False])
def test_threads_started_inside_a_module_are_counted(fast_path):
    mlp = _mlp()
    x = torch.randn(8, 16)
    direct = count(mlp, x)
    with FlopCounter(fast_path=fast_path, model=_Fanout(mlp)) as c:
        c.model(x)
    m = c.measurement
    assert m.flops == direct.flops  # each replica did half the rows
    assert m.by_module["module"] == direct.flops
    assert m.by_module["module.0"] == direct.by_module["0"]
    assert m.by_module["module.2"] == direct.by_module["2"]
    assert m.uncounted == {}
    assert torch._C._len_torch_dispatch_stack() == torch._C._len_torch_function_stack() == 0


def test_threads_outside_any_module_are_not_adopted():
    import threading

    mlp = _mlp()
    with FlopCounter() as c:
        t = threading.Thread(target=lambda: mlp(torch.randn(4, 16)))
        t.start()
        t.join()
    assert c.measurement.flops == 0


def test_thread_exception_leaves_no_mode_in_the_worker():
    import threading

    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    class Runner(nn.Module):
        def forward(self, x):
            leftover = []

            def work():
                try:
                    Boom()(x)
                except ValueError:
                    pass
                leftover.append(torch._C._len_torch_dispatch_stack() + torch._C._len_torch_function_stack())

            t = threading.Thread(target=work)
            t.start()
            t.join()
            return leftover[0]

    with FlopCounter():
        assert Runner()(torch.randn(2)) == 0


def test_data_parallel_without_gpus_counts_the_module():
    mlp = _mlp()
    x = torch.randn(4, 16)
    m = count(nn.DataParallel(mlp), x)
    assert m.flops == count(mlp, x).flops
    assert m.by_module["module.0"] == 2 * 4 * 16 * 32


def test_backward_of_thread_work_is_attributed_to_its_modules():
    mlp = _mlp()
    model = _Fanout(mlp)
    with FlopCounter(model=model) as c:
        model(torch.randn(8, 16)).sum().backward()
    m = c.measurement
    # first Linear: its input needs no grad, so only the weight gradient (1x forward); last: 2x forward
    assert m.by_module["module.0"] == 2 * (2 * 8 * 16 * 32)
    assert m.by_module["module.2"] == 3 * (2 * 8 * 32 * 8)
    assert m.by_module["_Fanout"] == m.flops == m.forward_flops + m.backward_flops


@pytest.mark.parametrize("ops", ["matmul", "all"])
def test_fused_encoder_layer_is_split_over_its_submodules(ops):
    """The fused no-grad CPU path charges its parts to self_attn, linear1, ... like the unfused run."""
    model = zoo.bert_base(num_layers=2, dropout=0.0).eval()
    x = torch.randn(1, 16, 768)
    with torch.no_grad():
        fused = count(model, x, ops=ops)
    unfused = count(model, x, ops=ops)  # with grad: the layer runs op by op
    assert "aten._transformer_encoder_layer_fwd" in fused.by_op
    assert "aten._transformer_encoder_layer_fwd" not in unfused.by_op
    assert fused.flops == unfused.flops
    for name, value in fused.by_module.items():
        assert unfused.by_module[name] == value, name
    assert fused.module_types["layers.1.linear1"] == "Linear"
    assert fused.top_modules(1)[0][0] == "layers.0.self_attn"


# ---------------------------------------------------------------------------
# compute=False: meta copies first, fake tensors as the fallback
# ---------------------------------------------------------------------------
def test_compute_free_runs_a_module_on_meta_copies(monkeypatch):
    """A plain module never needs fake tensors (the slow path): it runs on meta copies."""
    import pytest_flops.counting.measure as counter_mod

    def no_fake(*args, **kwargs):
        raise AssertionError("fell back to fake tensors")

    monkeypatch.setattr(counter_mod, "_count_on_fake", no_fake)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    m = count(model, x, compute=False)
    assert m.flops == count(model, x).flops and m.devices == ("cpu",) and not m.computed


def test_compute_free_falls_back_to_fake_for_tensors_made_on_a_fixed_device(monkeypatch):
    """A forward that makes a CPU tensor cannot run on meta copies; fake tensors count it."""
    import pytest_flops.counting.measure as counter_mod

    class Positional(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x + torch.arange(x.shape[-1], device="cpu", dtype=x.dtype))

    used = []
    real = counter_mod._count_on_fake
    monkeypatch.setattr(counter_mod, "_count_on_fake", lambda *a, **k: used.append(1) or real(*a, **k))
    model, x = Positional(), torch.randn(3, 4)
    assert count(model, x, compute=False).flops == count(model, x).flops == 2 * 3 * 4 * 4
    assert used == [1]


def test_first_count_does_not_import_dynamo():
    """torch wraps dispatch modes in a torch._dynamo import (over a second); the counter's mode opts out."""
    import subprocess
    import sys

    code = ("import sys, torch, pytest_flops; pytest_flops.count(torch.nn.Linear(4, 4), torch.randn(2, 4)); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
