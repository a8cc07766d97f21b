"""A counter around a long loop: what it keeps per call is bounded, and the counts do not change.

Three logs grow with every call a counter sees: the tracker's backward intervals (one per module call
under grad), the counter's log of replayed calls (summed at exit), and the backward replay's call log. Each
is cut back past a limit; the limits are made small here so that a short loop crosses them many times,
and every count is compared field by field with a count under the default limits, and with the aten-level
path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_flops import FlopCounter
from pytest_flops.counting import backward, counter, tracker
from test_core import FIELDS, _GPT, _stacks_empty

STEPS = 12


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    assert _stacks_empty()


def _loop(model, x, train, steps=STEPS, **kwargs):
    """The counter of ``steps`` steps, and the longest its log of replayed calls was between steps."""
    longest = 0
    with FlopCounter(model=model, **kwargs) as c:
        for _ in range(steps):
            if train:
                model.zero_grad(set_to_none=True)
                model(x).float().mean().backward()
            else:
                with torch.no_grad():
                    model(x)
            longest = max(longest, len(c._replays))
    return c, longest


def _small_limits(monkeypatch, limit=64):
    monkeypatch.setattr(tracker, "INTERVAL_LIMIT", limit)
    monkeypatch.setattr(counter, "_REPLAY_LOG_LIMIT", limit // 4)
    monkeypatch.setattr(backward, "CALL_LOG_LIMIT", limit)


@pytest.mark.parametrize("train", [True, False], ids=["training", "inference"])
def test_a_long_loop_keeps_bounded_logs_and_counts_what_unbounded_ones_count(monkeypatch, train):
    torch.manual_seed(0)
    model, x = _GPT(), torch.randint(0, 64, (2, 16))
    unbounded, unbounded_log = _loop(model, x, train)
    aten = _loop(model, x, train, fast_path=False)[0].measurement
    _small_limits(monkeypatch)
    c, log = _loop(model, x, train)
    for field in FIELDS:
        assert getattr(c.measurement, field) == getattr(unbounded.measurement, field) == getattr(aten, field), field
    home, calls = c._tracker.home, len(unbounded._tracker.home.starts)
    assert calls == (STEPS * 26 if train else 0)  # 26 module calls a step, under grad only when training
    assert len(home.starts) <= 64 and home.dropped + len(home.starts) == calls
    assert unbounded_log > 16 * 4 and log < 16


def test_a_backward_reaching_past_the_interval_limit_still_counts_its_flops(monkeypatch):
    """Gradient accumulation over more module calls than the tracker keeps intervals for: every FLOP is
    counted, and only the backward ops of nodes whose intervals went lose their module (charged at the top
    level). Aten-level path: the fast path's replayed backward takes its modules from its trace."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(4)))
    x = torch.randn(4, 8)
    mm = 2 * 4 * 8 * 8

    def accumulate():
        with FlopCounter(model=model, fast_path=False) as c:
            loss = sum(model(x).sum() for _ in range(30))  # 30 forwards of 5 module calls, one graph
            loss.backward()
        return c.measurement

    expected = accumulate()
    monkeypatch.setattr(tracker, "INTERVAL_LIMIT", 64)
    got = accumulate()
    # forward: 4 products a pass; backward: 4 weight gradients and 3 input gradients (x needs none)
    assert got.flops == expected.flops == 30 * (4 + 7) * mm
    assert got.forward_flops == expected.forward_flops == 30 * 4 * mm
    lost = sum(v for k, v in got.stacks.items() if ";" not in k)
    # pruned at 64 intervals down to 32, three times: the intervals of the first 96 calls go, and with them
    # the modules of the first 19 passes' backward ops (the 20th's linears keep theirs)
    assert lost == 19 * 7 * mm
    assert not any(";" not in k for k in expected.stacks)
    assert expected.by_module["Sequential"] - got.by_module["Sequential"] == lost


def test_one_call_longer_than_the_limit_keeps_every_interval_it_needs(monkeypatch):
    """The intervals from the outermost running call on are never dropped: a forward of more module calls
    than the limit is attributed exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(100)))
    x = torch.randn(4, 8, requires_grad=True)

    def step():
        with FlopCounter(model=model, fast_path=False) as c:
            model(x).sum().backward()
        return c

    expected = step().measurement
    monkeypatch.setattr(tracker, "INTERVAL_LIMIT", 16)
    c = step()
    for field in FIELDS:
        assert getattr(c.measurement, field) == getattr(expected, field), field
    assert c._tracker.home.dropped == 0
