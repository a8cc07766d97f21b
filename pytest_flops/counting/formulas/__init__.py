"""Built-in formulas, grouped by kind of op. Importing this package registers them.

Each module registers its formulas into :data:`pytest_flops.registry.DEFAULT_REGISTRY`
beside their definitions. Conventions (see ``docs/flops.md``): one multiply-add
is 2 FLOPs; matmul-class work (matmul, conv, attention) also counts as MACs
(FLOPs / 2); every other category counts only with ``ops="all"``.
"""

from . import matmul, attention, zero, norm, pointwise, reduction  # noqa: F401  (registration side effects)
