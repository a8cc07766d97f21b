# pytester is enabled through addopts (-p pytester) in pyproject.toml.
#
# In-process pytester runs restore sys.modules after each run; torch cannot be
# imported twice in one process, so import it (and the counter) once up front.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (the first count imports it; it registers torch.library ops once)
import pytest_flops.counting.counter  # noqa: F401

# hypothesis's pytest plugin would otherwise be re-imported (with assertion rewriting) by every in-process run.
import hypothesis  # noqa: F401
