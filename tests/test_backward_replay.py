"""``loss.backward()`` replayed from the trace of a backward with the same graph (``counting/backward.py``).

Every test runs a training step several times under the fast path, so that the later backward passes
replay, and checks each run against the aten-level path (``fast_path=False``: the dispatch mode sees
every op), field by field; where the numbers are small they are also derived by hand. The patterns are
those that could make a replayed backward differ from a dispatched one: Python code in the backward
(hooks, custom Functions, checkpointing), a graph that changes between steps (shapes, frozen weights,
gradients kept), a graph that starts outside the counter, nesting, threads and failures.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from pytest_flops import FlopCounter
from pytest_flops.counting.counter import FlopCounter as _Counter
from pytest_flops.counting.registry import DEFAULT_REGISTRY
from test_core import FIELDS, _GPT, _stacks_empty

MM_4x8x8 = 2 * 4 * 8 * 8  # 512: one (4, 8) @ (8, 8) product
TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    assert _stacks_empty()


@pytest.fixture
def replays(monkeypatch):
    """How many backward passes were charged from a trace, not dispatched."""
    calls = []
    charge = _Counter._charge_backward

    def spy(self, trace):
        calls.append(trace)
        return charge(self, trace)

    monkeypatch.setattr(_Counter, "_charge_backward", spy)
    return calls


def _measure(step, fast, ops="matmul", model=None):
    with FlopCounter(model=model, ops=ops, fast_path=fast) as c:
        step()
    return c.measurement


def _same(a, b):
    for field in FIELDS:
        assert getattr(a, field) == getattr(b, field), field


def _check(step, runs=3, ops="matmul", model=None):
    """Each of ``runs`` fast-path counts of ``step`` equals the aten-level count; returns the last."""
    slow = _measure(step, False, ops, model)
    for _ in range(runs):
        fast = _measure(step, True, ops, model)
        _same(fast, slow)
    return fast


@pytest.mark.parametrize("ops", ["matmul", "all"])
def test_a_training_step_replays_its_backward_and_counts_the_same(ops, replays):
    torch.manual_seed(0)
    model, idx = _GPT(), torch.randint(0, 64, (2, 16))

    def fresh():  # gradients set to None first
        model.zero_grad(set_to_none=True)
        model(idx).sum().backward()

    def accumulate():  # gradients kept: AccumulateGrad adds into them (pointwise ops that ops="all" counts)
        model(idx).sum().backward()

    m = _check(fresh, ops=ops)
    assert m.backward_flops > m.forward_flops > 0
    assert len(replays) >= 2
    kept = _check(accumulate, ops=ops)
    if ops == "all":
        assert kept.backward_flops > m.backward_flops
    else:
        assert kept.backward_flops == m.backward_flops


def test_many_steps_in_one_counter_are_each_replayed(replays):
    torch.manual_seed(0)
    model, idx = _GPT(), torch.randint(0, 64, (2, 16))

    def steps():
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            model(idx).sum().backward()

    _check(steps, runs=2)
    assert len(replays) >= 7  # 3 in the first count (its first backward is traced), 4 in the second


class _Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return self.lin(x)


class _Scale(torch.autograd.Function):
    """Identity forward; its backward multiplies the gradient by a matrix (a matmul the trace cannot hold)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad @ torch.eye(8)


def _hooked(kind, hooked):
    """A step whose backward runs a (4, 8) @ (8, 8) product in Python code while ``hooked`` is set."""
    torch.manual_seed(0)
    model, x, eye = _Lin(), torch.randn(4, 8), torch.eye(8)
    if kind == "post-accumulate hook":  # registered once, runs in every backward
        def projected(param):
            if hooked:
                param.grad[:4] @ eye  # such a hook must return None

        model.lin.weight.register_post_accumulate_grad_hook(projected)

    def step():
        model.zero_grad(set_to_none=True)
        y = model(x)
        if kind == "tensor hook" and hooked:
            y.register_hook(lambda g: g @ eye)
        elif kind == "node hook" and hooked:
            y.grad_fn.register_prehook(lambda gouts: (gouts[0] @ eye,))
        elif kind == "custom Function":
            y = _Scale.apply(y) if hooked else y.clone()
        y.sum().backward()

    return model, step


@pytest.mark.parametrize("kind", ["tensor hook", "node hook", "post-accumulate hook", "custom Function"])
def test_python_code_in_the_backward_is_counted_on_every_run(kind, replays):
    """The same graph with and without the Python code, in turns: a replay must not charge (or drop) the
    code's product, which is counted as it runs."""
    hooked: list[bool] = []
    model, step = _hooked(kind, hooked)
    slow = {}
    for flag in (True, False):
        hooked[:] = [True] if flag else []
        slow[flag] = _measure(step, False, model=model)
    for flag in (True, False, True, False, True):
        hooked[:] = [True] if flag else []
        fast = _measure(step, True, model=model)
        _same(fast, slow[flag])
        assert fast.forward_flops == MM_4x8x8, kind
        assert fast.backward_flops == MM_4x8x8 * (2 if flag else 1), kind  # the weight's gradient (+ the hook)
    assert len(replays) >= 3, kind  # a custom Function's node is described by its Function


def _hooked_step(lin, x, hook):
    """A step whose backward runs ``hook`` on the gradient of ``lin``'s output."""
    def step():
        lin.zero_grad(set_to_none=True)
        y = lin(x)
        y.register_hook(hook)
        y.sum().backward()
    return step


def test_a_fused_path_module_run_by_a_hook_is_counted_once():
    """nn.TransformerEncoderLayer's subtree runs under the dispatch mode (see counter.py); run from a hook while
    a backward is traced (already under that mode), it must not push the mode a second time."""
    torch.manual_seed(0)
    lin, x = nn.Linear(16, 16), torch.randn(2, 5, 16)
    enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    alone = _measure(lambda: enc(x), False)  # no grad needed: eval, the fused path under no_grad below

    def hook(grad):
        with torch.no_grad():
            enc(grad)
        return grad

    step = _hooked_step(lin, x, hook)

    m = _check(step, model=lin)
    assert m.by_op["aten._transformer_encoder_layer_fwd"] == alone.flops > 0


def test_a_module_with_a_module_formula_run_by_a_hook_is_counted_once_a_run(replays):
    """A module formula charges at the module's exit, as the module runs: while a backward is traced, that
    charge would go into its trace as well, so a backward during which one ran is never kept (each run is
    traced again)."""
    class Scaled(nn.Module):
        def forward(self, x):
            return x @ torch.eye(16)

    registry = DEFAULT_REGISTRY.child()
    registry.register_module_formula(Scaled, lambda module, args, out: 7)
    torch.manual_seed(0)
    lin, x, scaled = nn.Linear(16, 16), torch.randn(2, 16), Scaled()
    hooked: list[bool] = []

    def hook(grad):
        return scaled(grad) if hooked else grad

    step = _hooked_step(lin, x, hook)
    for flag in (True, False, True, False, True):
        hooked[:] = [True] if flag else []
        with FlopCounter(model=lin, registry=registry, fast_path=False) as slow:
            step()
        with FlopCounter(model=lin, registry=registry) as fast:
            step()
        _same(fast.measurement, slow.measurement)
        assert fast.measurement.by_op.get("Scaled (module formula)", 0) == (7 if flag else 0)
    assert len(replays) >= 1  # the steps without the hook's module


def test_a_module_backward_hook_that_runs_a_matmul_is_counted(replays):
    """As the hooks above, on and off in turns: the hook's product is counted on the steps it runs. (Its
    nodes come from torch's BackwardHookFunction, a custom Function: described by it, the backward is
    replayed.)"""
    torch.manual_seed(0)
    model, x, eye = _Lin(), torch.randn(4, 8, requires_grad=True), torch.eye(8)
    hooked: list[bool] = []
    model.register_full_backward_hook(lambda mod, gin, gout: (gin[0] @ eye,) if hooked else None)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    slow = {}
    for flag in (True, False):
        hooked[:] = [True] if flag else []
        slow[flag] = _measure(step, False, model=model)
    for flag in (True, False, True, False):
        hooked[:] = [True] if flag else []
        fast = _measure(step, True, model=model)
        _same(fast, slow[flag])
        # grad of x, grad of the weight (+ the hook's product)
        assert fast.backward_flops == (3 if flag else 2) * MM_4x8x8
    assert len(replays) >= 2


@pytest.mark.filterwarnings("ignore:`torch.cpu.amp.autocast")  # torch 2.4's checkpoint
@pytest.mark.parametrize("reentrant", [False, True], ids=["saved-tensor-hooks", "reentrant"])
def test_checkpointed_blocks_count_their_recomputation_every_run(replays, reentrant):
    """The recomputation runs modules inside the backward: their calls are counted as they run, never part
    of the backward's trace, so the backward is still replayed (it used not to be: any module call during a
    traced backward kept its trace from being stored)."""
    from torch.utils.checkpoint import checkpoint
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)), torch.randn(4, 8)
    if reentrant:  # the reentrant form's graph starts at an input that needs a gradient
        x.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        checkpoint(model, x, use_reentrant=reentrant).sum().backward()

    m = _check(step, runs=4, model=model)
    assert len(replays) >= 2
    if reentrant:
        # the custom Function's backward runs the whole forward again (under the backward: backward FLOPs),
        # then a backward of its own: the gradients of x, the hidden state and both weights
        assert m.forward_flops == 2 * MM_4x8x8 and m.backward_flops == 6 * MM_4x8x8
    else:
        # the recomputation runs the first product (the second needs its output) and stops at the second's
        # saved tensors, before that product runs; then the gradients of the hidden state and both weights
        assert m.forward_flops == 2 * MM_4x8x8 and m.backward_flops == 4 * MM_4x8x8
    with FlopCounterMode(display=False) as torch_count:
        step()
    assert torch_count.get_total_flops() == m.flops


@pytest.mark.filterwarnings("ignore:`torch.cpu.amp.autocast")  # torch 2.4's checkpoint
def test_a_model_that_checkpoints_each_block_in_its_forward_is_replayed(replays):
    """As Hugging Face models do with ``gradient_checkpointing_enable()``: each block is run through
    ``checkpoint`` from the model's ``forward``, and recomputed (as modules) during the backward."""
    from torch.utils.checkpoint import checkpoint
    from torch.utils.flop_counter import FlopCounterMode

    class Checkpointed(_GPT):
        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return self.head(self.ln(x))

    torch.manual_seed(0)
    model, idx = Checkpointed(), torch.randint(0, 64, (2, 16))
    plain = _GPT()
    plain.load_state_dict(model.state_dict())

    def step(net):
        def run():
            net.zero_grad(set_to_none=True)
            net(idx).sum().backward()
        return run

    m = _check(step(model), runs=4, model=model)
    assert len(replays) >= 2
    reference = _measure(step(plain), False, model=plain)
    # the forward as without checkpoints; in the backward, each block's recomputation as well (as far as its
    # last saved tensor: at most the block's forward again), charged to the block
    assert m.forward_flops == reference.forward_flops
    extra = m.backward_flops - reference.backward_flops
    block_forward = sum(v for k, v in reference.stacks.items() if ";blocks." in k and "(backward)" not in k)
    assert 0 < extra <= block_forward
    blocks = [f"blocks.{i}" for i in range(3)]
    assert sum(m.by_module[b] - reference.by_module[b] for b in blocks) == extra
    with FlopCounterMode(display=False) as torch_count:
        step(model)()
    # torch's counter has no formula for the CPU flash-attention kernels: the rest is the same
    attention = sum(v for op, v in m.by_op.items() if "flash_attention" in op)
    assert attention > 0 and torch_count.get_total_flops() == m.flops - attention


def test_a_graph_that_changes_between_steps_is_never_replayed_from_another(replays):
    torch.manual_seed(0)
    model = _GPT()
    runs = [(8, False), (16, False), (8, True), (8, False)]  # sequence length, head frozen
    seen = []
    for seq, frozen in runs:
        model.head.weight.requires_grad_(not frozen)  # tied: the embedding freezes with it
        idx = torch.randint(0, 64, (2, seq))

        def step():
            model.zero_grad(set_to_none=True)
            model(idx).sum().backward()

        seen.append(_check(step, runs=2, model=model).backward_flops)
    model.head.weight.requires_grad_(True)
    assert seen[0] == seen[3] and len({seen[0], seen[1], seen[2]}) == 3


def test_retain_graph_runs_the_same_graph_twice():
    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)

    def step():
        lin.zero_grad(set_to_none=True)
        loss = lin(x).sum()
        loss.backward(retain_graph=True)
        loss.backward()  # the second one adds into the gradients the first made

    m = _check(step, ops="all", model=lin)
    assert m.backward_flops == 2 * MM_4x8x8 + 8 * 8  # two products, and one add into the (8, 8) gradient


def test_the_call_log_keeps_its_last_calls_and_older_graphs_are_dispatched(monkeypatch):
    from pytest_flops.counting import backward

    monkeypatch.setattr(backward, "CALL_LOG_LIMIT", 20)
    torch.manual_seed(0)
    model, idx = _GPT(layers=1), torch.randint(0, 64, (2, 16))
    reference = _measure(lambda: model(idx).sum().backward(), False, model=model)
    with FlopCounter(model=model) as c:
        kept = model(idx).sum()  # its calls leave the log while the next forwards run
        for _ in range(3):
            model(idx).sum().backward()
        kept.backward()
    lane = next(iter(c._lanes.values()))
    assert len(lane.log.starts) <= 20
    assert c.measurement.backward_flops == 4 * reference.backward_flops
    assert c.measurement.forward_flops == 4 * reference.forward_flops


def test_a_graph_the_walk_cannot_read_is_dispatched(monkeypatch, replays):
    from pytest_flops.counting import counter

    def unreadable(*args):
        raise RuntimeError("a node the walk cannot read")

    monkeypatch.setattr(counter, "graph_signature", unreadable)
    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)

    def step():
        lin.zero_grad(set_to_none=True)
        lin(x).sum().backward()

    assert _check(step, model=lin).backward_flops == MM_4x8x8
    assert not replays


def test_a_graph_that_starts_outside_the_counter_is_dispatched(replays):
    torch.manual_seed(0)
    a, b, x = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False), torch.randn(4, 8)

    def step():
        hidden = a(x)  # made before the count: its nodes belong to no call the counter saw
        with FlopCounter() as c:
            b(hidden).sum().backward()
        return c.measurement

    for _ in range(3):
        m = step()
        assert m.forward_flops == MM_4x8x8 and m.backward_flops == 3 * MM_4x8x8
    assert not replays


def test_backward_with_a_gradient_or_through_autograd_is_dispatched(replays):
    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)

    def step():
        lin.zero_grad(set_to_none=True)
        lin(x).backward(torch.ones(4, 8))
        torch.autograd.backward(lin(x).sum())
        torch.autograd.grad(lin(x).sum(), lin.weight)

    m = _check(step, model=lin)
    assert m.backward_flops == 3 * MM_4x8x8
    assert not replays


def test_a_direct_autograd_backward_is_counted_on_every_torch():
    """torch.autograd.backward looks for torch-function modes only from torch 2.10 on: before, the counter
    wraps the engine call it makes while a counter is active, and takes the wrapper off at the end."""
    from pytest_flops.counting.backward import BACKWARD_SEEN

    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)
    engine = torch.autograd._engine_run_backward
    with FlopCounter() as outer:
        with FlopCounter() as inner:
            assert (torch.autograd._engine_run_backward is engine) == BACKWARD_SEEN
            torch.autograd.backward(lin(x).sum())
        torch.autograd.backward(lin(x).sum())
        assert (torch.autograd._engine_run_backward is engine) == BACKWARD_SEEN  # the outer one still counts
    assert torch.autograd._engine_run_backward is engine
    assert inner.measurement.backward_flops == MM_4x8x8
    assert outer.measurement.backward_flops == 2 * MM_4x8x8


def test_nested_counters_both_count_a_replayed_backward():
    torch.manual_seed(0)
    model, idx = _GPT(), torch.randint(0, 64, (2, 16))

    def step():
        model.zero_grad(set_to_none=True)
        model(idx).sum().backward()

    alone = _check(step, model=model)
    for _ in range(2):
        with FlopCounter(model=model) as outer:
            with FlopCounter(model=model) as inner:
                step()
        _same(outer.measurement, alone)
        _same(inner.measurement, alone)


def test_a_hook_that_raises_in_a_replayed_backward_leaves_no_mode(replays):
    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)
    fail = []

    def hook(grad):
        if fail:
            raise ValueError("a bad hook")
        return grad

    step = _hooked_step(lin, x, hook)

    _check(step, model=lin)
    assert replays
    fail.append(True)
    with pytest.raises(ValueError, match="a bad hook"):
        with FlopCounter(model=lin):
            step()
    assert _stacks_empty()
    fail.clear()
    assert _measure(step, True, model=lin).backward_flops == MM_4x8x8


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
@pytest.mark.parametrize("check_nan", [False, True])
def test_a_backward_under_anomaly_mode_counts_the_same(replays, check_nan):
    """Anomaly mode's checks run no counted op; the graph signature keys on the mode all the same, so a
    backward traced without it is not replayed under it. Its NaN checks read tensor values (a data-dependent
    op): such a backward is never kept, and runs under the dispatch mode each time."""
    torch.manual_seed(0)
    lin, x = nn.Linear(8, 8, bias=False), torch.randn(4, 8)

    def step():
        lin.zero_grad(set_to_none=True)
        lin(x).sum().backward()

    plain = _check(step, runs=3, model=lin)
    before = len(replays)
    with torch.autograd.detect_anomaly(check_nan=check_nan):
        checked = _check(step, runs=3, model=lin)
    assert plain.flops == checked.flops == 2 * MM_4x8x8
    # without NaN checks, the first of the three is traced afresh, under the mode, and the other two replay
    assert len(replays) - before == (0 if check_nan else 2)


def test_memory_measurement_dispatches_every_backward(replays):
    torch.manual_seed(0)
    model, idx = _GPT(), torch.randint(0, 64, (2, 16))

    def step():
        model.zero_grad(set_to_none=True)
        model(idx).sum().backward()

    slow = _measure(step, False, model=model)
    for _ in range(3):
        with FlopCounter(model=model, memory=True) as c:
            step()
        _same(c.measurement, slow)
    assert not replays  # the memory tracker's mode sees every op: the backward runs under the dispatch mode


def test_two_threads_training_at_once_count_only_their_own():
    torch.manual_seed(0)
    models = [_GPT(layers=1), _GPT(layers=3)]
    idx = torch.randint(0, 64, (2, 16))

    def step(model):
        model.zero_grad(set_to_none=True)
        model(idx).sum().backward()

    expected = [_measure(lambda m=m: step(m), False, model=m).flops for m in models]
    got: list[list[int]] = [[], []]
    errors = []

    def work(i):
        try:
            for _ in range(6):
                got[i].append(_measure(lambda: step(models[i]), True, model=models[i]).flops)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert got == [[expected[0]] * 6, [expected[1]] * 6]


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's, as it traces the counter's hooks and mode
def test_a_compiled_model_counts_what_the_eager_one_counts():
    """torch.compile traces the counter's hooks and function mode (the tracker's weak name lookup made it fail
    inside dynamo before the names moved to a pinned map): counts equal the eager model's, step after step."""
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), torch.randn(4, 8)
    compiled = torch.compile(model, backend="eager")

    def step(m):
        model.zero_grad(set_to_none=True)
        m(x).sum().backward()

    eager = _measure(lambda: step(model), False, model=model)
    if TORCH < (2, 13):  # there dynamo's fake-tensor tracing runs through the function mode and is counted:
        step(compiled)  # compile before counting (docs/failure-modes.md)
    # a registry of its own: dynamo guards on the counter's shared caches, large by now in this process
    registry = DEFAULT_REGISTRY.child()
    with FlopCounter(model=compiled, registry=registry) as c:  # one counter: a new one is a new object to guard
        for _ in range(2):  # the second backward replays
            step(compiled)
    got = c.measurement
    assert (got.forward_flops, got.backward_flops) == (2 * eager.forward_flops, 2 * eager.backward_flops)
    assert eager.forward_flops == 2 * 4 * 8 * 8 + 2 * 4 * 8 * 4
