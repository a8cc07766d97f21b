"""Functions called directly when every op they can dispatch is free (counting/zero_calls.py).

Each entry's list of ops is checked against what the function dispatches over many inputs (devices,
dtypes, layouts, in-place and keyword variants, training and eval); counts with the direct calls are
checked against the aten-level path, and each condition that turns them off is shown to.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pytest_flops import FlopCounter, zoo
from pytest_flops.counting import counter as counter_mod
from pytest_flops.counting.registry import DEFAULT_REGISTRY
from pytest_flops.counting.zero_calls import ZERO_CALLS

from test_core import FIELDS, _GPT


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _inputs():
    """Tensors of every layout and device the CPU build has, 4-D (NCHW) and 3-D."""
    found = []
    for device, dtype in itertools.product(("cpu", "meta"), (torch.float32, torch.float64, torch.bfloat16,
                                                             torch.float16)):
        x = torch.randn(2, 4, 6, 6, device=device, dtype=dtype)
        found += [x, x.contiguous(memory_format=torch.channels_last), x[:, :, ::2], x[0, 0, 0, 0]]
        found += [torch.randn(2, 5, 4, device=device, dtype=dtype).transpose(0, 1)]
    x = torch.randn(2, 4, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found += [x.to_mkldnn(), x.to_sparse(), torch.quantize_per_tensor(x, 0.1, 0, torch.quint8),
                  torch.nested.nested_tensor([torch.randn(4, 6), torch.randn(4, 6)]), torch.empty(0, 4, 6, 6)]
    return found


def _calls(x):
    """(function, arguments, keyword arguments) for one input: each function in the forms real code uses."""
    c = x.size(1) if x.dim() > 1 and not x.is_nested else 1
    like = dict(dtype=x.dtype, device=x.device) if x.layout == torch.strided and not x.is_quantized else {}

    def new(*shape, fill=1.0):
        return torch.full(shape, fill, **like)

    def copy():
        try:
            return x.clone()
        except (RuntimeError, NotImplementedError):
            return x

    def flat():
        try:
            return x.reshape(x.shape[0], -1)
        except (RuntimeError, NotImplementedError, IndexError):
            return x

    ids = torch.tensor([[0, 1], [1, 0]], device=x.device)
    shape = (2, 4, 6) if x.is_nested else tuple(x.shape)
    last = shape[-1:]
    T = torch.Tensor
    return [
        (T.view, (x, -1), {}), (T.view, (x, x.dtype), {}), (T.reshape, (x, -1), {}),
        (torch.reshape, (x, (shape[0] if shape else 1, -1)), {}),
        (T.flatten, (x,), {}), (torch.flatten, (x, 1), {}),
        (T.permute, (x, *reversed(range(x.dim()))), {}), (torch.permute, (x, tuple(range(x.dim()))), {}),
        (T.transpose, (x, 0, -1), {}), (torch.transpose, (x, 0, 1), {}),
        (T.unbind, (x, 0), {}), (torch.unbind, (x, -1), {}),
        (T.contiguous, (x,), {}), (T.contiguous, (x,), {"memory_format": torch.channels_last}),
        (T.unsqueeze, (x, 0), {}), (torch.unsqueeze, (x, -1), {}),
        (torch.arange, (5,), {"device": x.device}), (torch.arange, (0, 4, 0.5), like),
        (F.embedding, (ids, flat()), {}), (F.embedding, (ids, flat()), {"padding_idx": 0, "max_norm": 1.0}),
        (F.relu, (x,), {}), (F.relu, (copy(),), {"inplace": True}), (torch.relu, (x,), {}), (T.relu, (x,), {}),
        (torch.relu_, (copy(),), {}), (T.relu_, (copy(),), {}),
        (F.gelu, (x,), {}), (F.gelu, (x,), {"approximate": "tanh"}),
        (F.silu, (x,), {}), (F.silu, (copy(),), {"inplace": True}),
        (T.add, (x, x), {}), (T.add, (x, x), {"alpha": 2}), (torch.add, (x, 1), {}),
        (T.add, (x, 1.5), {}), (T.add_, (copy(), x), {}), (T.add_, (copy(), 1), {}),
        (T.mul, (x, x), {}), (T.mul, (x, 2), {}), (torch.mul, (x, 0.5), {}), (T.mul_, (copy(), 2), {}),
        (T.sub, (x, x), {}), (torch.sub, (x, 1), {"alpha": 2}), (T.div, (x, 2), {}),
        (torch.div, (x, x), {"rounding_mode": "floor"}),
        (F.dropout, (x, 0.1, False), {}), (F.dropout, (x, 0.1, True), {}), (F.dropout, (x, 1.0, True), {}),
        (F.dropout, (copy(), 0.5, True, True), {}),
        (F.softmax, (x, -1), {}), (F.softmax, (x,), {"dim": 0, "dtype": torch.float64}), (T.softmax, (x, 0), {}),
        (torch.softmax, (x, -1), {}),
        (T.expand, (x.unsqueeze(0) if x.layout == torch.strided and not x.is_nested else x, (3, *shape)), {}),
        (torch.cat, ([x, x],), {}), (torch.cat, ((x, x),), {"dim": -1}),
        (T.to, (x, torch.float16), {}), (T.to, (x, "cpu"), {}), (T.to, (x,), {"memory_format": torch.channels_last}),
        (T.to, (x, x.dtype), {"copy": True}), (T.float, (x,), {}), (T.half, (x,), {}), (T.bfloat16, (x,), {}),
        (F.batch_norm, (x, new(c, fill=0.0), new(c), new(c), new(c, fill=0.0), False), {}),
        (F.batch_norm, (x, new(c, fill=0.0), new(c)), {"training": True}),
        (F.batch_norm, (x, None, None, new(c), new(c), True, 0.1, 1e-3), {}),
        (F.layer_norm, (x, last), {}), (F.layer_norm, (x, last, new(*last), None, 1e-6), {}),
        (F.max_pool2d, (x, 2), {}), (F.max_pool2d, (x, 3, 2, 1), {"ceil_mode": True}),
        (F.max_pool2d, (x, 2), {"return_indices": True}),
        (F.adaptive_avg_pool2d, (x, 1), {}), (F.adaptive_avg_pool2d, (x, (2, 3)), {}),
    ]


def test_each_function_dispatches_only_the_ops_it_lists():
    """Over every input and argument form, with and without grad and autocast, each listed function runs no op
    outside its entry (an op outside it that is free would not change a count, but the list is kept exact)."""
    checked = set()
    wrong = set()
    kinds = set()
    for x in _inputs():
        for func, args, kwargs in _calls(x):
            for grad, autocast in ((False, False), (True, False), (False, True)):
                recorder = _Ops()
                try:
                    with torch.set_grad_enabled(grad), torch.autocast("cpu", torch.bfloat16, enabled=autocast), \
                            warnings.catch_warnings(), recorder:
                        warnings.simplefilter("ignore")
                        func(*args, **kwargs)
                except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError, AssertionError):
                    continue  # the input is not supported there: the error is the same counted or not
                for name in recorder.names - set(ZERO_CALLS[func]):
                    wrong.add(f"{getattr(func, '__name__', func)} ran {name} on {x.layout} {x.device} {x.dtype}")
                checked.add(func)
                kinds.add((str(x.layout), x.device.type, x.is_nested, x.is_quantized))
    assert not wrong, "\n".join(sorted(wrong))
    assert checked == set(ZERO_CALLS)  # every entry ran at least once
    assert {("torch._mkldnn", "cpu", False, False), ("torch.sparse_coo", "cpu", False, False),
            ("torch.strided", "cpu", False, True), ("torch.strided", "cpu", True, False),
            ("torch.strided", "meta", False, False)} <= kinds  # and each layout ran something


def _kinds_free(counter: FlopCounter) -> set[str]:
    return {getattr(f, "__name__", str(f)) for f, k in counter.kinds.items() if k == counter_mod._FREE}


def _measure(model, x, fast_path=True, ops="matmul", registry=None):
    with torch.no_grad(), FlopCounter(ops, model=model, fast_path=fast_path, registry=registry) as c:
        model(x)
    return c


@pytest.mark.parametrize("ops", ["matmul", "all"])
@pytest.mark.parametrize("name", ["resnet", "gpt", "mlp-3d"])
def test_direct_calls_count_what_the_aten_path_counts(name, ops):
    torch.manual_seed(0)
    model, x = {
        "resnet": (lambda: zoo.resnet50(num_classes=10), lambda: torch.randn(1, 3, 32, 32)),
        "gpt": (_GPT, lambda: torch.randint(0, 64, (2, 16))),
        "mlp-3d": (lambda: nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Flatten(),
                                         nn.Linear(48, 4), nn.ReLU()), lambda: torch.randn(2, 3, 8)),
    }[name]
    model, x = model().eval(), x()
    fast = _measure(model, x, ops=ops, registry=DEFAULT_REGISTRY.child())  # a fresh registry: first calls probe
    again = _measure(model, x, ops=ops, registry=fast.registry)  # ... and later ones replay or call directly
    slow = _measure(model, x, fast_path=False, ops=ops)
    for field in FIELDS:
        assert getattr(fast.measurement, field) == getattr(slow.measurement, field), field
        assert getattr(again.measurement, field) == getattr(slow.measurement, field), field
    free = _kinds_free(again)
    if ops == "matmul":
        assert free & {"relu", "batch_norm", "layer_norm", "gelu", "add"}
    else:  # the norms and activations are counted: only views and creation are free
        assert not free & {"relu", "batch_norm", "layer_norm", "gelu", "add", "max_pool2d", "adaptive_avg_pool2d"}


def test_a_users_formula_for_one_of_its_ops_takes_a_function_off():
    registry = DEFAULT_REGISTRY.child()
    registry.register_op_formula(torch.ops.aten.relu, lambda x, out=None: 7 * x.numel(), "custom")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU())
    x = torch.randn(2, 4)
    for _ in range(2):
        c = _measure(model, x, registry=registry)
        assert c.measurement.by_category == {"matmul": 2 * 2 * 4 * 4, "custom": 2 * 7 * 8}
    assert F.relu in ZERO_CALLS and "relu" not in _kinds_free(c)  # listed, and taken off by the formula


def test_an_op_without_a_formula_takes_a_function_off():
    """With no entry for aten.relu it is uncounted, as on the aten path: F.relu is keyed and probed."""
    from pytest_flops.counting.registry import Registry

    blank = Registry()
    x = torch.randn(4)
    for _ in range(2):
        c = _measure(nn.ReLU(), x, registry=blank)
        assert c.measurement.uncounted == {"aten.relu": 1}


def test_under_grad_calls_are_keyed(monkeypatch):
    """Under grad a free function is keyed like any call: its autograd nodes are traced to it."""
    calls = []
    real = counter_mod.call_key
    monkeypatch.setattr(counter_mod, "call_key", lambda func, args, kwargs: (calls.append(func),
                                                                         real(func, args, kwargs))[1])
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    x = torch.randn(2, 4)
    with FlopCounter(model=model):
        model(x)
    assert F.relu in calls
    calls.clear()
    with torch.no_grad(), FlopCounter(model=model):
        model(x)
    assert F.relu not in calls and F.linear in calls


class _Doubling(torch.Tensor):
    """A subclass whose relu does a matrix product first: ``types`` names it, so relu is not called directly."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            if func is F.relu:
                torch.mm(args[0], args[0].T)
            return func(*args, **(kwargs or {}))


def test_a_subclass_overriding_torch_function_is_not_called_directly():
    x = torch.randn(3, 3).as_subclass(_Doubling)
    for _ in range(2):
        with torch.no_grad(), FlopCounter() as c:
            F.relu(x)
        assert c.measurement.flops == 2 * 3 * 3 * 3
