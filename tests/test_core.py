"""The counting core under the patterns real models use (issue 11, problems 1 to 5).

Each test here failed on the counter before the rebuild: names and counts
inherited through reused addresses, one module's attributes breaking later
counts, formulas registered on a parent registry after a child was made,
threads counting each other's work or keeping the counter's mode, backward
attribution that rescanned history; and the fast function-level path is
checked against the aten-level path on every model the tests build.
"""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_mod

from pytest_flops import FlopCounter, count, zoo
from pytest_flops.counting.registry import DEFAULT_REGISTRY
from pytest_flops.counting.tracker import ModuleTracker

aten = torch.ops.aten


def _stacks_empty() -> bool:
    return torch._C._len_torch_dispatch_stack() == 0 and torch._C._len_torch_function_stack() == 0


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    assert not _module_mod._global_forward_hooks
    assert not _module_mod._global_forward_pre_hooks
    assert _stacks_empty()


# ---------------------------------------------------------------------------
# 1. modules made inside forward: no name or count is inherited through an address
# ---------------------------------------------------------------------------
class _MakesModules(nn.Module):
    """Builds its layers on every call, alternating ReLU and Conv2d(3, 3, 3), and lets them go."""

    def forward(self, x):
        for i in range(8):
            layer = nn.ReLU() if i % 2 == 0 else nn.Conv2d(3, 3, 3)
            layer(x)
            del layer  # freed now: the next module is likely to get its address
        return x


CONV_3_3_3_ON_10x10 = 2 * 3 * 8 * 8 * 3 * 3 * 3  # 10,368


@pytest.mark.parametrize("fast_path", [True, False])
def test_modules_built_inside_forward_are_counted_and_named_exactly(fast_path):
    model, x = _MakesModules(), torch.randn(1, 3, 10, 10)
    for _ in range(20):
        with FlopCounter(model=model, fast_path=fast_path) as c:
            model(x)
        m = c.measurement
        assert m.flops == 4 * CONV_3_3_3_ON_10x10 == 41_472
        assert m.by_module == {"_MakesModules": 41_472, "ReLU": 0, "Conv2d": 41_472}
        assert m.module_types == {"_MakesModules": "_MakesModules", "ReLU": "ReLU", "Conv2d": "Conv2d"}
        assert m.stacks == {"_MakesModules;Conv2d;aten.convolution": 41_472}


def test_tracker_holds_module_names_weakly():
    made = []

    class Makes(nn.Module):
        def forward(self, x):
            made.append(nn.ReLU())
            return made[-1](x)

    model = Makes()
    tracker = ModuleTracker(model)
    tracker.install()
    try:
        model(torch.randn(2))
    finally:
        tracker.remove()
    assert tracker.name_of(made[0]) == "ReLU"
    made.clear()
    gc.collect()
    assert not set(tracker.names.values())  # the entry went with its module
    assert tracker.name_of(model) == "Makes"  # the root's tree is pinned, not held weakly


# ---------------------------------------------------------------------------
# 2. an attribute one instance has does not break counting another
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [nn.Dropout, nn.ReLU, lambda: nn.BatchNorm1d(4), nn.GELU])
def test_an_extra_attribute_on_one_module_does_not_break_later_counts(make):
    x = torch.randn(3, 4)
    first = make()
    first._is_hf_initialized = True  # what Hugging Face transformers sets on its modules
    count(first, x)
    plain = make()
    m = count(plain, x)  # raised AttributeError: ... has no attribute '_is_hf_initialized'
    assert m.uncounted == {} and m.name == type(plain).__name__


# ---------------------------------------------------------------------------
# 3. formulas registered on a parent after a child registry exists
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fast_path", [True, False])
def test_formula_registered_on_parent_after_child_is_made_applies(fast_path):
    parent = DEFAULT_REGISTRY.child()  # stands for the global registry (which other tests share)
    child = parent.child()
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    assert count(conv, x, registry=child).flops == 7_776
    assert not child.user_op_formulas
    parent.register_op_formula(aten.convolution, lambda *a, out=None, **k: 7, category="conv")
    assert child.user_op_formulas
    with FlopCounter(registry=child, fast_path=fast_path) as c:
        for _ in range(3):
            conv(x)
    assert c.measurement.flops == 3 * 7
    parent.register_module_formula(nn.Conv2d, lambda mod, inp, out: 11, category="conv")
    assert count(conv, x, registry=child).flops == 11


def test_user_formula_reading_values_is_never_replayed(registry=None):
    reg = DEFAULT_REGISTRY.child()
    reg.register_op_formula(aten.mm, lambda a, b, out=None: int(a.abs().sum().item()) or 1, category="matmul")
    lin = nn.Linear(2, 2, bias=False)
    with FlopCounter(registry=reg) as c:
        for scale in (1.0, 2.0, 3.0):
            lin(torch.full((1, 2), scale))
    assert c.measurement.flops == 2 + 4 + 6  # each call's own values, not the first call's count again


# ---------------------------------------------------------------------------
# 4. threads
# ---------------------------------------------------------------------------
def _mlp(i, o):
    return nn.Sequential(nn.Linear(i, o), nn.ReLU(), nn.Sequential(nn.Identity(), nn.ReLU()))


@pytest.mark.parametrize("fast_path", [True, False])
def test_two_threads_counting_at_once_never_see_each_other(fast_path):
    models = {1_280: (_mlp(16, 40), torch.randn(1, 16)), 5_120: (_mlp(32, 80), torch.randn(1, 32))}
    barrier = threading.Barrier(2)
    results: dict[int, list[int]] = {1_280: [], 5_120: []}
    errors: list[BaseException] = []

    def work(expected):
        model, x = models[expected]
        try:
            barrier.wait()
            for _ in range(150):
                with FlopCounter(model=model, fast_path=fast_path) as c:
                    model(x)
                results[expected].append(c.measurement.flops)
            assert _stacks_empty()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert set(results[1_280]) == {1_280} and set(results[5_120]) == {5_120}


class _Gate(nn.Module):
    def __init__(self, started: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self.started, self.release = started, release
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        self.started.set()
        assert self.release.wait(30)
        return self.lin(x)


def test_pool_thread_call_that_outlives_the_count_keeps_no_mode():
    started, release = threading.Event(), threading.Event()
    gate = _Gate(started, release)

    class Hands(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.pool = pool
            self.futures = []

        def forward(self, x):
            def job():
                gate(x)
                return _stacks_empty()

            self.futures.append(self.pool.submit(job))
            assert started.wait(30)  # the pool thread is inside a module call while we are in ours
            return x

    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: None).result()  # the pool thread exists before the count
        model = Hands(pool)
        with FlopCounter(model=model) as c:
            model(torch.randn(2, 4))
        release.set()
        assert model.futures[0].result(30) is True
        assert pool.submit(_stacks_empty).result(30) is True
    assert c.measurement.flops == 0


def test_thread_started_in_a_module_that_outlives_the_count_keeps_no_mode():
    """A thread a counted module starts is adopted; its call ends after the count: its mode goes then."""
    started, release = threading.Event(), threading.Event()
    gate = _Gate(started, release)
    done: list[bool] = []

    class Starts(nn.Module):
        def forward(self, x):
            def work():
                gate(x)
                done.append(_stacks_empty())
            self.thread = threading.Thread(target=work)
            self.thread.start()
            assert started.wait(30)
            return x

    model = Starts()
    with FlopCounter(model=model) as c:
        model(torch.randn(2, 4))
    release.set()
    model.thread.join(30)
    assert done == [True]
    assert c.measurement.flops == 0  # its Linear ran after the counter closed
    count(nn.Linear(2, 2), torch.randn(1, 2))  # the next count clears what the late call left
    assert not _module_mod._global_forward_hooks


# ---------------------------------------------------------------------------
# 5. backward attribution: O(depth) per lookup, however long the counter runs
# ---------------------------------------------------------------------------
def _deep(depth):
    model = nn.Linear(4, 4)
    for _ in range(depth - 1):
        model = nn.Sequential(model, nn.Tanh())
    return model


def _lookup_cost(steps, depth=5):
    model = _deep(depth)
    tracker = ModuleTracker(model)
    tracker.install()
    nodes = []
    try:
        for _ in range(steps):
            y = model(torch.randn(2, 4, requires_grad=True))
            node = y.grad_fn
            while node is not None:
                nodes.append(node)
                node = node.next_functions[0][0] if node.next_functions else None
    finally:
        tracker.remove()
    paths, work = [], []
    for node in nodes:
        before = tracker.lookup_steps()
        paths.append(tracker.backward_path(node))
        work.append(tracker.lookup_steps() - before)
    return max(work), paths


def test_backward_lookup_work_does_not_grow_with_the_history():
    few, paths_few = _lookup_cost(1)
    many, paths_many = _lookup_cost(16)
    assert few == many  # the same most work per lookup after 1 and after 16 forwards
    assert many <= 5  # at most the nesting depth (old code: a scan back over every earlier call)
    assert paths_many[: len(paths_few)] == paths_few
    assert paths_few[0] == "Sequential;1"  # the last Tanh, the outermost Sequential's child "1"


def test_backward_attribution_stays_exact_over_many_steps():
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 4)))
    with FlopCounter(model=model) as c:
        for _ in range(12):
            model(torch.randn(3, 8)).sum().backward()
    f0, f2 = 2 * 3 * 8 * 16, 2 * 3 * 16 * 4
    m = c.measurement
    assert m.by_module["0"] == 12 * 2 * f0  # its input needs no grad: weight gradient only
    assert m.by_module["2.0"] == 12 * 3 * f2
    assert m.backward_flops == 12 * (f0 + 2 * f2)


# ---------------------------------------------------------------------------
# the tracker is a service: it knows nothing about counting
# ---------------------------------------------------------------------------
def test_tracker_publishes_enter_and_exit_events():
    events = []

    class Listener:
        def module_enter(self, view, frame, module, args):
            events.append(("enter", frame.name, frame.path))
            return len(events)

        def module_exit(self, view, frame, module, args, output):
            events.append(("exit", frame.name, frame.token))

    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    tracker = ModuleTracker(model)
    tracker.subscribe(Listener())
    tracker.install()
    try:
        model(torch.randn(1, 2))
    finally:
        tracker.remove()
    assert events == [
        ("enter", "Sequential", "Sequential"), ("enter", "0", "Sequential;0"), ("exit", "0", 2),
        ("enter", "1", "Sequential;1"), ("enter", "1.0", "Sequential;1;1.0"), ("exit", "1.0", 5),
        ("exit", "1", 4), ("exit", "Sequential", 1),
    ]


# ---------------------------------------------------------------------------
# the function-level fast path counts exactly what the aten-level path counts
# ---------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class _GPT(nn.Module):
    def __init__(self, vocab=64, d=32, heads=4, layers=3, seq=16):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _parity_models():
    from test_counter import FAST_MODELS, MODELS

    # resnet50: test_counter.py's fast-path tests compare both paths on it
    models = {f"fast:{k}": (lambda f=f: f(), s, False) for k, (f, s) in FAST_MODELS.items() if k != "resnet50"}
    models.update({k: (lambda f=f: f(), s, False) for k, (f, s) in MODELS.items()})
    models["gpt"] = (_GPT, (2, 16), True)
    models["bert-2"] = (lambda: zoo.bert_base(num_layers=2, dropout=0.0), (1, 8, 768), False)
    return models


PARITY = _parity_models()
FIELDS = ("flops", "forward_flops", "backward_flops", "macs", "by_module", "by_op", "by_category", "uncounted",
          "stacks", "params", "trainable_params", "module_types", "devices")


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("ops", ["matmul", "all"])
@pytest.mark.parametrize("mode", ["eval-no-grad", "train-backward"])
@pytest.mark.parametrize("name", list(PARITY))
def test_function_level_path_equals_aten_level_path(name, mode, ops):
    factory, shape, tokens = PARITY[name]
    torch.manual_seed(0)
    model = factory()
    x = torch.randint(0, 64, shape) if tokens else torch.randn(shape)
    results = []
    for fast in (True, False):
        with FlopCounter(model=model, ops=ops, fast_path=fast) as c:
            for _ in range(2):  # the second run replays what the first probed
                if mode == "train-backward":
                    model.train()
                    model.zero_grad(set_to_none=True)
                    xi = x if tokens else x.detach().clone().requires_grad_(True)
                    out = model(xi)
                    (out[0] if isinstance(out, tuple) else out).sum().backward()
                else:
                    model.eval()
                    with torch.no_grad():
                        model(x)
        results.append(c.measurement)
    fast, slow = results
    assert slow.flops > 0
    for field in FIELDS:
        assert getattr(fast, field) == getattr(slow, field), field


def test_fused_encoder_path_is_kept_under_the_function_mode():
    """nn.TransformerEncoderLayer and nn.MultiheadAttention take their fused path only with no
    torch-function mode active: the counter runs their subtree under the dispatch mode instead."""
    model = zoo.bert_base(num_layers=1, dropout=0.0).eval()
    with torch.no_grad():
        m = count(model, torch.randn(1, 8, 768))
    assert "aten._transformer_encoder_layer_fwd" in m.by_op


def test_replayed_traces_follow_registrations_made_between_counts():
    """Counters share the traces of one registry; a registration there (or in a parent) starts afresh."""
    parent = DEFAULT_REGISTRY.child()
    child = parent.child()
    lin, x = nn.Linear(4, 4), torch.randn(2, 4)
    assert count(lin, x, registry=child).flops == count(lin, x, registry=child).flops == 2 * 2 * 4 * 4
    parent.register_zero_cost(aten.addmm)
    assert count(lin, x, registry=child).flops == 0
    assert count(lin, x, registry=child, ops="all").flops == 0
