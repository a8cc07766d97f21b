"""2. Counting without computing: ``count(model, x, compute=False)`` vs a plain forward.

ResNet-50, batch 8, CPU, one thread, eval, ``torch.no_grad()``; ABBA pairs,
median ratio.
"""

from __future__ import annotations

import warnings
from typing import Callable

from ._common import Row, fmt_flops, fmt_ms, median, paired, status

NAME = "compute_free"
TARGET = 0.30


def run(quick: bool, emit: Callable[[Row], None]) -> None:
    import torch

    import pytest_flops
    from pytest_flops import zoo

    torch.set_num_threads(1)
    model = zoo.resnet50().eval()
    x = torch.randn(8, 3, 224, 224)
    reps = 2 if quick else 7
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model(x)
        real = pytest_flops.count(model, x).flops
        pytest_flops.count(model, x, compute=False)
        ratios, plains, counted, m = paired(lambda _: model(x), lambda _: pytest_flops.count(model, x, compute=False),
                                            reps)
    ratio = median(ratios)
    emit(Row(NAME, "resnet50 b8 count(compute=False)", f"{ratio:.3f}x", f"<= {TARGET:.2f}x", status(ratio <= TARGET),
             f"plain {fmt_ms(median(plains))}, compute=False {fmt_ms(median(counted))}, n={reps}, "
             f"{fmt_flops(m.flops)} FLOPs ({'equal to' if m.flops == real else 'DIFFERS from'} compute=True)"))
