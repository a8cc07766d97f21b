# pytester is enabled through addopts (-p pytester) in pyproject.toml.
from __future__ import annotations

from typing import Any, Callable

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """Import once, before the first test, what in-process pytester runs must not import again.

    In-process runs restore sys.modules after each run: torch cannot be imported twice in one process,
    torch._dynamo (imported by the first torch.compile or transformers model) registers torch.library ops
    once, and hypothesis's pytest plugin would be re-imported with assertion rewriting by every run.
    The xdist controller runs no test, so it skips these imports (about 4 s of CPU).
    """
    if session.config.pluginmanager.has_plugin("dsession"):
        return
    import hypothesis  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    import pytest_flops.counting.counter  # noqa: F401


@pytest.fixture
def configure(pytester: pytest.Pytester) -> Callable[..., Any]:
    """``pytester.parseconfigure`` without the unraisable-exception plugin, whose unconfigure runs
    ``gc.collect()`` (0.1-0.5 s a config with torch loaded); in-process ``runpytest`` turns it off the same way."""
    def make(*args: str) -> Any:
        return pytester.parseconfigure("-p", "no:unraisableexception", *args)
    return make


@pytest.fixture
def no_fake_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compute=False`` must count on meta copies here: a fall-back to fake tensors fails the test."""
    import pytest_flops.counting.measure as measure

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("fell back to fake tensors")

    monkeypatch.setattr(measure, "_count_on_fake", fail)
