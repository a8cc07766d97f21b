"""The pytest plugin (the ``pytest11`` entry point ``flops``): the only layer that imports pytest.

The hooks live in :mod:`pytest_flops.plugin.hooks`; they are re-exported here because
pytest reads hook functions and fixtures from the entry-point module. Torch is
imported lazily, when a test first measures something.
"""

from .hooks import (
    flops,
    pytest_addhooks,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_load_initial_conftests,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)

__all__ = [
    "flops",
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_load_initial_conftests",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
]
