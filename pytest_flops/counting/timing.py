"""Opt-in timing: the wall time of one run of a model and the FLOP/s it achieved.

``count(model, x, timed=True)`` first runs the model under the counter (which
also warms it up), then times **one more run without the counter**, so the
time excludes the counting overhead. On CUDA the run is timed with CUDA
events on the current stream of the device the measurement ran on (after a
synchronize); with several CUDA devices, with ``time.perf_counter`` between
synchronizes of each; on CPU (and anything else) with ``time.perf_counter``.
The result goes to ``Measurement.extra``: ``time_s``, ``flops_per_s``
(the counted FLOPs over that time) and ``timer``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

__all__ = ["time_call", "with_timing"]


def time_call(fn: Callable[[], Any], devices: Sequence[str] = ()) -> tuple[float, str]:
    """Run ``fn()`` once and return (seconds, name of the timer used)."""
    import torch

    cuda = sorted({d for d in devices if d.startswith("cuda")})
    if cuda and torch.cuda.is_available():
        if len(cuda) == 1:
            device = torch.device(cuda[0])
            with torch.cuda.device(device):
                torch.cuda.synchronize(device)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1000.0, "cuda_event"
        for name in cuda:
            torch.cuda.synchronize(torch.device(name))
        begin = time.perf_counter()
        fn()
        for name in cuda:
            torch.cuda.synchronize(torch.device(name))
        return time.perf_counter() - begin, "perf_counter+cuda_sync"
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin, "perf_counter"


def with_timing(measurement: Any, seconds: float, timer: str) -> Any:
    """A copy of ``measurement`` whose ``extra`` holds ``time_s``, ``flops_per_s`` and ``timer``."""
    rate = measurement.flops / seconds if seconds > 0 else None
    extra = {**measurement.extra, "time_s": seconds, "flops_per_s": rate, "timer": timer}
    return dataclasses.replace(measurement, extra=extra)
