"""Child process of the meta-scale benchmark: ``python _meta_child.py TOOL SHAPE REPS``.

Prints one JSON line: FLOP total, cold and warm times, peak RSS above the
baseline taken right after ``import torch`` (model construction on meta
included, which allocates no weights).
"""

import json
import resource
import sys
import time

import torch


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` keeps the high-water mark of the
    address space replaced by ``exec``, which after subprocess's vfork is the
    parent's (the benchmark runner's, hundreds of MB), hiding the child's own peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


BASELINE_KB = peak_rss_kb()


def main() -> None:
    tool, shape, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clock = time.process_time if sys.argv[4:] != ["wall"] else time.perf_counter
    if tool == "pytest-flops":
        import pytest_flops

        def measure(model, tokens):
            return pytest_flops.count(model, tokens).flops
    else:
        from torch.utils.flop_counter import FlopCounterMode

        def measure(model, tokens):
            with FlopCounterMode(display=False) as mode:
                model(tokens)
            return mode.get_total_flops()

    from pytest_flops import zoo

    config = zoo.LLAMA_70B if shape == "70B" else zoo.LLAMA_7B
    model = zoo.llama(**config)
    tokens = torch.zeros(1, 2048, dtype=torch.long, device="meta")
    times = []
    flops = None
    for _ in range(reps):
        start = clock()
        flops = measure(model, tokens)
        times.append(clock() - start)
    peak_kb = peak_rss_kb()
    print(json.dumps({"flops": flops, "times": times, "peak_mb": (peak_kb - BASELINE_KB) / 1024,
                      "baseline_mb": BASELINE_KB / 1024}))


if __name__ == "__main__":
    main()
