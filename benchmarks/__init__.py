"""Benchmarks for pytest-flops: ``python -m benchmarks [--quick] [--only NAME]``.

See ``docs/performance.md``. Nothing here is collected by pytest and no
benchmark asserts on time: each prints ratios measured side by side in one run.
"""
