"""Memory figures (counting/memory.py): hand-derived, against torch's MemTracker and fvcore, real vs compute-free."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pytest_flops
from pytest_flops import FlopCounter, Measurement, zoo

F32 = 4


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _mlp(a: int = 64, b: int = 256, c: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))


def _memtracker_peak(fn, *external) -> int:
    pytest.importorskip("torch.distributed._tools.mem_tracker", reason="torch without MemTracker (added in 2.5)")
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(*external)
    with tracker:
        fn()
    return sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values())


def _counted(fn, model: nn.Module) -> Measurement:
    with FlopCounter(model=model, memory=True) as counter:
        fn()
    assert counter.measurement is not None
    return counter.measurement


# -- hand-derived -----------------------------------------------------------------
def test_mlp_forward_no_grad_is_params_plus_two_largest_live_activations():
    n, a, b, c = 8, 64, 256, 32
    model = _mlp(a, b, c)
    x = torch.randn(n, a)
    with torch.no_grad():
        m = pytest_flops.count(model, x, memory=True)
    # fc1 out (n*b) is alive while ReLU writes its own (n*b); then ReLU's out and fc2's (n*c)
    assert m.peak_memory == _param_bytes(model) + F32 * max(n * b + n * b, n * b + n * c)
    assert m.input_memory == F32 * n * a  # made before the call: reported apart from the peak
    assert m.activations == n * b + n * c  # outputs of the two linears (fvcore's convention)
    assert m.activations_by_module() == {"Sequential": n * b + n * c, "0": n * b, "2": n * c}
    assert m.saved_memory == 0  # nothing is saved for backward under no_grad
    # bytes read + written: addmm reads bias, x, W^T and writes its output; ReLU reads and writes n*b
    fc1 = F32 * (b + n * a + a * b + n * b)
    relu = F32 * 2 * n * b
    fc2 = F32 * (c + n * b + b * c + n * c)
    assert m.traffic_by_module() == {"Sequential": fc1 + relu + fc2, "0": fc1, "1": relu, "2": fc2}
    assert m.memory_traffic == fc1 + relu + fc2
    # the peak was reached inside the ReLU: it and its parent list it, and it is the innermost
    assert m.peak_by_module()["1"] == m.peak_memory
    assert m.peak_by_module()["2"] < m.peak_memory
    assert m.peak_modules(1) == [("1", m.peak_memory)]
    assert m.arithmetic_intensity()["Sequential"] == pytest.approx(m.flops / m.memory_traffic)


def test_saved_memory_is_what_autograd_holds_for_backward():
    n, a, b, c = 8, 64, 256, 32
    model = _mlp(a, b, c)
    x = torch.randn(n, a)
    m = pytest_flops.count(model, x, memory=True)  # training mode, grad on, no backward
    # fc1 saves x (an input) and W (a parameter): held anyway; ReLU saves its output, fc2 saves it again
    assert m.saved_memory == F32 * n * b
    assert m.saved_by_module() == {"Sequential": F32 * n * b, "1": F32 * n * b}


def test_activation_checkpointing_lowers_saved_memory():
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    blocks = nn.ModuleList(nn.Sequential(nn.Linear(64, 64), nn.GELU()) for _ in range(4))

    class Net(nn.Module):
        def __init__(self, ckpt: bool) -> None:
            super().__init__()
            self.blocks, self.ckpt = blocks, ckpt

        def forward(self, x):
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False) if self.ckpt else block(x)
            return x

    x = torch.randn(16, 64)
    plain = pytest_flops.count(Net(False), x, memory=True)
    ckpt = pytest_flops.count(Net(True), x, memory=True)
    assert plain.saved_memory > 0
    assert ckpt.saved_memory < plain.saved_memory


def test_sgd_momentum_step_holds_params_grads_and_momentum():
    torch.manual_seed(0)
    model = nn.Linear(256, 256)  # parameters dominate: 2 x 16 floats of activations
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 256)

    def step():
        model(x).sum().backward()
        opt.step()

    m = _counted(step, model)
    p = _param_bytes(model)
    # the first step clones each gradient into its momentum buffer: params + grads + buffers
    assert m.peak_memory == 3 * p


def test_sgd_step_without_momentum_adds_nothing_to_the_backward_peak():
    model = _mlp()
    x = torch.randn(8, 64)
    fwd_bwd = _counted(lambda: model(x).sum().backward(), copy.deepcopy(model))
    opt_model = copy.deepcopy(model)
    opt = torch.optim.SGD(opt_model.parameters(), lr=0.1)

    def step():
        opt_model(x).sum().backward()
        opt.step()  # in place: param -= lr * grad

    m = _counted(step, opt_model)
    assert m.peak_memory == fwd_bwd.peak_memory
    assert m.peak_memory >= 2 * _param_bytes(model)  # parameters and their gradients at least


def test_adam_step_holds_two_moments_and_the_denominator_temporaries():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), foreach=False)
    x = torch.randn(8, 64)

    def step():
        model(x).sum().backward()
        opt.step()

    m = _counted(step, model)
    p = _param_bytes(model)
    largest = max(t.numel() for t in model.parameters()) * F32
    n_tensors = len(list(model.parameters()))
    # params + grads + exp_avg + exp_avg_sq, a float32 step per tensor, and for the largest parameter
    # the two temporaries of ``(exp_avg_sq.sqrt() / bias_correction2_sqrt)`` alive at once
    assert m.peak_memory == 4 * p + F32 * n_tensors + 2 * largest


def test_optimizer_state_made_before_the_counter_counts():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), foreach=False)
    x = torch.randn(8, 64)
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    reference = copy.deepcopy((model, opt))  # deep copies keep the Adam state tied to the copied params

    def step(model, opt):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    m = _counted(lambda: step(model, opt), model)
    expected = _memtracker_peak(lambda: step(*reference), *reference, x)
    assert m.peak_memory + m.input_memory == expected
    assert m.input_memory == x.numel() * F32  # the moments count in the peak, not as inputs


def test_memory_is_opt_in_and_round_trips():
    model = _mlp()
    x = torch.randn(4, 64)
    plain = pytest_flops.count(model, x)
    assert plain.peak_memory is None and plain.activations is None and plain.memory_by_module == {}
    assert "peak_memory" not in plain.to_dict()
    m = pytest_flops.count(model, x, memory=True)
    assert m.flops == plain.flops and m.by_module == plain.by_module  # memory tracking changes no FLOP figure
    assert Measurement.from_dict(m.to_dict()) == m
    assert "peak memory" in m.summary()


# -- MemTracker parity ------------------------------------------------------------
class _LSTMHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def _encoder() -> nn.Module:
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 2)


def _inference(model, x):
    with torch.no_grad():
        model(x)


def _fwd_bwd(model, x):
    model(x).sum().backward()


def _adam_step(model, opt, x):
    model(x).sum().backward()
    opt.step()
    opt.zero_grad()


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _with_adam(model):
    return model, torch.optim.Adam(model.parameters())


@pytest.mark.parametrize("case", ["inference", "adam training step", "encoder fwd+bwd", "lstm fwd+bwd"])
def test_peak_matches_memtracker(case):
    torch.manual_seed(0)
    if case == "inference":
        objects, fn, x = (_cnn().eval(),), _inference, torch.randn(4, 3, 32, 32)
    elif case == "adam training step":
        objects, fn, x = _with_adam(_cnn()), _adam_step, torch.randn(4, 3, 32, 32)
    elif case == "encoder fwd+bwd":
        objects, fn, x = (_encoder(),), _fwd_bwd, torch.randn(2, 16, 64)
    else:
        objects, fn, x = (_LSTMHead(),), _fwd_bwd, torch.randn(4, 10, 32)
    reference = copy.deepcopy(objects)
    m = _counted(lambda: fn(*objects, x), objects[0])
    expected = _memtracker_peak(lambda: fn(*reference, x), *reference, x)
    # MemTracker given the inputs counts them all along; we report them apart, as input_memory
    assert m.peak_memory + m.input_memory == pytest.approx(expected, rel=0.01)
    assert m.input_memory == x.numel() * x.element_size()


def test_peak_matches_memtracker_with_inputs_made_inside():
    model = _mlp()
    reference = copy.deepcopy(model)
    m = _counted(lambda: model(torch.randn(8, 64)).sum().backward(), model)
    expected = _memtracker_peak(lambda: reference(torch.randn(8, 64)).sum().backward(), reference)
    assert m.input_memory == 0
    assert m.peak_memory == pytest.approx(expected, rel=0.01)


# -- compute=False ----------------------------------------------------------------
_MEMORY_FIELDS = ("peak_memory", "input_memory", "activations", "saved_memory", "memory_traffic", "memory_by_module")


def _memory_figures(m: Measurement) -> dict:
    return {name: getattr(m, name) for name in _MEMORY_FIELDS}


@pytest.mark.parametrize("grad", [False, True])
def test_compute_free_equals_the_real_run(grad):
    torch.manual_seed(0)
    model = _cnn().eval() if not grad else _cnn()
    x = torch.randn(2, 3, 32, 32)
    with torch.set_grad_enabled(grad):
        real = pytest_flops.count(model, x, memory=True)
        free = pytest_flops.count(model, x, memory=True, compute=False)
    assert not free.computed
    assert _memory_figures(free) == _memory_figures(real)


_SMALL_LLAMA = dict(vocab=100, dim=64, heads=4, kv_heads=4, hidden=172)


def _llama_step(device: str, **config) -> Measurement:
    torch.manual_seed(0)
    model = zoo.llama(device, **config)
    opt = torch.optim.Adam(model.parameters(), foreach=False)
    x = torch.randint(0, config["vocab"], (2, 32), device=device)

    def step():
        model(x).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _counted(step, model)


def test_llama_training_step_on_meta_equals_the_real_run_and_scales_with_layers():
    real = [_llama_step("cpu", layers=n, **_SMALL_LLAMA) for n in (1, 2)]
    meta = [_llama_step("meta", layers=n, **_SMALL_LLAMA) for n in (1, 2, 3)]
    for r, f in zip(real, meta):
        assert _memory_figures(f) == _memory_figures(r)
        assert f.flops == r.flops
    # each decoder layer adds the same parameters, gradients, moments and saved activations
    per_layer = meta[1].peak_memory - meta[0].peak_memory
    assert per_layer > 0
    assert meta[2].peak_memory - meta[1].peak_memory == per_layer
    assert meta[2].saved_memory - meta[1].saved_memory == meta[1].saved_memory - meta[0].saved_memory
    # so the meta count of a deep config equals the real run of a shallow one scaled by the config
    deep = _llama_step("meta", layers=6, **_SMALL_LLAMA)
    assert deep.peak_memory == real[0].peak_memory + 5 * (real[1].peak_memory - real[0].peak_memory)


def test_llama_forward_sdpa_on_meta_equals_cpu():
    """On meta, attention runs the fused kernel a CPU run picks, not the math path (no score matrices)."""
    model = zoo.llama("cpu", layers=2, **_SMALL_LLAMA)
    x = torch.randint(0, 100, (2, 32))
    for ops in ("matmul", "all"):
        real = pytest_flops.count(model, x, ops=ops, memory=True)
        free = pytest_flops.count(model, x, ops=ops, memory=True, compute=False)
        assert _memory_figures(free) == _memory_figures(real)
        assert free.by_category == real.by_category


def test_fake_tensor_fallback_measures_memory_too():
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = _mlp()
    x = torch.randn(8, 64)
    real = pytest_flops.count(model, x, memory=True)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_x = mode.from_tensor(x)
        with FlopCounter(model=model, memory=True) as counter:
            model(fake_x)
    assert counter.measurement is not None
    assert _memory_figures(counter.measurement) == _memory_figures(real)


# -- fvcore parity ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn", "resnet50"])
def test_activations_match_fvcore(name):
    fvcore_nn = pytest.importorskip("fvcore.nn")
    torch.manual_seed(0)
    model = (_cnn() if name == "cnn" else zoo.resnet50()).eval()
    x = torch.randn(1, 3, 32 if name == "cnn" else 64, 32 if name == "cnn" else 64)
    with torch.no_grad():
        m = pytest_flops.count(model, x, memory=True)
        analysis = fvcore_nn.ActivationCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        expected_total = analysis.total()
        expected_by_module = {name or m.name: v for name, v in analysis.by_module().items() if v}
    assert m.activations == expected_total
    assert m.activations_by_module() == expected_by_module


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_matches_cuda_max_memory_allocated():  # pragma: no cover - GPU only
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).cuda()
    x = torch.randn(256, 1024, device="cuda")
    model(x).sum().backward()  # warm-up: cuBLAS handles and workspaces are made outside the measured step
    for p in model.parameters():
        p.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    m = _counted(lambda: model(x).sum().backward(), model)
    torch.cuda.synchronize()
    allocated = torch.cuda.max_memory_allocated()
    # the caching allocator rounds each block up to 512 bytes; tensors, inputs included, are all it holds
    assert m.peak_memory + m.input_memory == pytest.approx(allocated, rel=0.01)
