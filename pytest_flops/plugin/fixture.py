"""The ``flops`` fixture object: measure a model (or a block of code) inside a test.

Exported as :class:`pytest_flops.FlopsFixture` for annotations:
``def test_x(flops: FlopsFixture) -> None``. No torch at import.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from ..counting.counter import FlopCounter
    from ..counting.measurement import Measurement
    from ..counting.registry import Registry

__all__ = ["FlopsFixture"]


class FlopsFixture:
    """Measures models inside one test.

    ``flops(model, *inputs, **kwargs)`` runs ``model`` under a counter and
    returns the :class:`~pytest_flops.Measurement`; ``flops.counting()`` is the
    context-manager form for training steps and loops; ``flops.measurements``
    lists what the test measured. Formulas registered through the fixture
    apply to this test only.
    """

    def __init__(self, ops: str, strict: bool, registry_factory: Callable[[], Registry],
                 on_measurement: Callable[[Measurement], None], memory: bool = False) -> None:
        self.ops = ops
        self.memory = memory  # memory figures by default (the test's budget limits one)
        self.strict = strict
        self._registry_factory = registry_factory
        self._registry: Registry | None = None
        self._on_measurement = on_measurement
        self.measurements: list[Measurement] = []

    @property
    def registry(self) -> Registry:
        """This test's registry: the conftest/plugin formulas plus those registered here."""
        if self._registry is None:
            self._registry = self._registry_factory().child()
        return self._registry

    def register_module_formula(self, module_type: type, fn: Callable[..., int], category: str = "custom") -> None:
        self.registry.register_module_formula(module_type, fn, category)

    def register_op_formula(self, op: Any, fn: Callable[..., Any], category: str = "custom") -> None:
        self.registry.register_op_formula(op, fn, category)

    def __call__(self, model: Any, *inputs: Any, compute: bool = True, ops: str | None = None, timed: bool = False,
                 memory: bool | None = None, **kwargs: Any) -> Measurement:
        """Count ``model(*inputs, **kwargs)``; ``timed=True`` also times one uncounted run (FLOP/s in the report);
        ``memory=True`` adds the memory figures (on by default when the test's budget limits one)."""
        from ..counting.measure import count

        measurement = count(model, *inputs, compute=compute, ops=ops or self.ops, strict=self.strict,
                            registry=self.registry, timed=timed, memory=self.memory if memory is None else memory,
                            **kwargs)
        self._record(measurement)
        return measurement

    @contextlib.contextmanager
    def counting(self, model: Any = None, ops: str | None = None,
                 memory: bool | None = None) -> Iterator[FlopCounter]:
        """Count everything run inside the block; ``.measurement`` is set on the yielded counter at exit.

        Pass ``model`` to name the measurement after it and count its parameters.
        """
        from ..counting.counter import FlopCounter

        counter = FlopCounter(ops or self.ops, self.strict, registry=self.registry, model=model,
                              memory=self.memory if memory is None else memory)
        with counter:
            yield counter
        assert counter.measurement is not None  # set by FlopCounter.__exit__
        self._record(counter.measurement)

    def _record(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)
        self._on_measurement(measurement)
