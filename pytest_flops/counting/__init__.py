"""The counting library: module tracking, the op-level counter, formulas, Measurement.

No pytest and no file output here; everything above this layer (outputs, the
plugin, the console script) takes a :class:`~pytest_flops.counting.measurement.Measurement`.
"""
