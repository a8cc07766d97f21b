"""The result of one count: plain, immutable data that every later layer passes around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..units import align_columns, format_bytes, format_quantity

__all__ = ["Measurement", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """FLOPs, MACs and parameters of one counted run.

    ``by_module`` maps qualified module names to the FLOPs spent inside them
    (parents include their children; the root is named by its class).
    ``stacks`` maps folded stacks (``Root;layers.0;layers.0.attn;aten.bmm``)
    to the FLOPs of that op in that innermost module: the source of every
    per-module and per-op figure, and a flame graph as it stands.
    """

    name: str
    flops: int
    macs: int
    params: int
    trainable_params: int
    forward_flops: int
    backward_flops: int
    by_module: Mapping[str, int] = field(default_factory=dict)
    by_op: Mapping[str, int] = field(default_factory=dict)
    by_category: Mapping[str, int] = field(default_factory=dict)
    uncounted: Mapping[str, int] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    module_types: Mapping[str, str] = field(default_factory=dict)
    #: parameters of each module that ran, children included (a parameter shared by two modules counts in each)
    module_params: Mapping[str, int] = field(default_factory=dict)
    stacks: Mapping[str, int] = field(default_factory=dict)
    ops: str = "matmul"
    computed: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Memory figures (``memory=True``; None when not measured): see counting/memory.py and docs/memory.md
    peak_memory: int | None = None
    input_memory: int | None = None
    activations: int | None = None
    saved_memory: int | None = None
    memory_traffic: int | None = None
    #: per module: ``peak_forward``/``peak_backward`` (bytes alive at the peak while it ran),
    #: ``activations`` (elements), ``saved`` and ``traffic`` (bytes); keys absent where nothing was seen
    memory_by_module: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    # -- views -----------------------------------------------------------
    def self_flops(self) -> dict[str, int]:
        """FLOPs spent by each module's own ops, children excluded (from ``stacks``)."""
        own: dict[str, int] = {}
        for stack, flops in self.stacks.items():
            frames = stack.split(";")
            if len(frames) > 1:
                own[frames[-2]] = own.get(frames[-2], 0) + flops
        return own

    def top_modules(self, n: int = 5) -> list[tuple[str, int]]:
        """The ``n`` modules whose own ops spent the most FLOPs (children excluded).

        These are the layers that spend the budget (``layers.3.linear1``), not
        the containers that wrap them; a module with functional ops of its own
        (``torch.matmul`` in a custom attention block) is listed for those.
        """
        order = {name: i for i, name in enumerate(self.by_module)}
        items = sorted(self.self_flops().items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order)), kv[0]))
        return [(name, value) for name, value in items if value > 0][:n]

    def by_module_type(self) -> dict[str, int]:
        """FLOPs by module class (own ops of every module of that class), largest first."""
        totals: dict[str, int] = {}
        for name, value in self.self_flops().items():
            kind = self.module_types.get(name, name)
            totals[kind] = totals.get(kind, 0) + value
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    # -- memory views ------------------------------------------------------
    def peak_by_module(self, phase: str = "any") -> dict[str, int]:
        """Bytes alive at the peak reached while each module ran: ``phase`` "forward", "backward" or "any"."""
        if phase not in ("any", "forward", "backward"):
            raise ValueError(f"invalid phase={phase!r}: expected 'any', 'forward' or 'backward'")
        keys = ("peak_forward", "peak_backward") if phase == "any" else (f"peak_{phase}",)
        out: dict[str, int] = {}
        for name, row in self.memory_by_module.items():
            values = [row[k] for k in keys if k in row]
            if values:
                out[name] = max(values)
        return out

    def peak_modules(self, n: int = 5) -> list[tuple[str, int]]:
        """The innermost modules that were running when the peak was reached (deepest first)."""
        if not self.peak_memory:
            return []
        at_peak = [name for name, value in self.peak_by_module().items() if value == self.peak_memory]
        levels = self._levels()
        at_peak.sort(key=lambda name: -levels.get(name, 0))
        return [(name, self.peak_memory) for name in at_peak[:n]]

    def _memory_column(self, key: str) -> dict[str, int]:
        return {name: row[key] for name, row in self.memory_by_module.items() if key in row}

    def activations_by_module(self) -> dict[str, int]:
        """Elements output by each module's matmul-class ops (children included)."""
        return self._memory_column("activations")

    def saved_by_module(self) -> dict[str, int]:
        """Bytes each module saved for backward (children included; a storage counts once)."""
        return self._memory_column("saved")

    def traffic_by_module(self) -> dict[str, int]:
        """Bytes read and written by each module's ops, forward and backward (children included)."""
        return self._memory_column("traffic")

    def arithmetic_intensity(self) -> dict[str, float]:
        """FLOPs per byte of traffic, per module (the root's is the whole run's)."""
        return {name: self.by_module.get(name, 0) / traffic
                for name, traffic in self.traffic_by_module().items() if traffic}

    def _levels(self) -> dict[str, int]:
        """Depth of each module in the tree of modules that ran (the root is 0)."""
        levels: dict[str, int] = {}
        for name in self.by_module:
            if name == self.name:
                levels[name] = 0
                continue
            parent, level = name, 1
            while "." in parent:
                parent = parent.rsplit(".", 1)[0]
                if parent in self.by_module:
                    level = levels.get(parent, 0) + 1
                    break
            levels[name] = level
        return levels

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe data; ``Measurement.from_dict(m.to_dict()) == m``."""
        return {
            "name": self.name,
            "flops": self.flops,
            "macs": self.macs,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "forward_flops": self.forward_flops,
            "backward_flops": self.backward_flops,
            "by_module": dict(self.by_module),
            "by_op": dict(self.by_op),
            "by_category": dict(self.by_category),
            "uncounted": dict(self.uncounted),
            "devices": list(self.devices),
            "module_types": dict(self.module_types),
            "module_params": dict(self.module_params),
            "stacks": dict(self.stacks),
            "ops": self.ops,
            "computed": self.computed,
            "extra": dict(self.extra),
            **self._memory_dict(),
        }

    def _memory_dict(self) -> dict[str, Any]:
        if self.peak_memory is None:
            return {}
        return {
            "peak_memory": self.peak_memory,
            "input_memory": self.input_memory,
            "activations": self.activations,
            "saved_memory": self.saved_memory,
            "memory_traffic": self.memory_traffic,
            "memory_by_module": {name: dict(row) for name, row in self.memory_by_module.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Measurement":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "devices" in known:
            known["devices"] = tuple(known["devices"])
        missing = {"name", "flops", "macs", "params", "trainable_params", "forward_flops", "backward_flops"} - known.keys()
        if missing:
            raise ValueError(f"measurement data lacks {', '.join(sorted(missing))}")
        return cls(**known)

    def table(self, depth: int | None = 3, min_share: float = 0.0) -> str:
        """A per-module table: module, type, FLOPs and share of the total.

        ``depth`` counts levels of modules that ran (a ``ModuleList`` that is
        never called is no level of its own).
        """
        total = self.flops or 1
        levels = self._levels()
        memory = self.peak_memory is not None  # measured with memory=True: peak and activations columns
        peaks, acts = (self.peak_by_module(), self.activations_by_module()) if memory else ({}, {})
        header: tuple[str, ...] = ("module", "type", "FLOPs", "%") + (("peak", "activations") if memory else ())
        rows = [header]
        for name, value in self.by_module.items():
            level = levels.get(name, 0)
            if depth is not None and level > depth:
                continue
            if name != self.name and value / total < min_share:
                continue
            row: tuple[str, ...] = ("  " * level + name, self.module_types.get(name, ""), format_quantity(value),
                                    f"{100 * value / total:.1f}")
            if memory:
                row += (format_bytes(peaks[name]) if name in peaks else "-",
                        format_quantity(acts[name]) if name in acts else "-")
            rows.append(row)
        lines = align_columns(rows, right={2, 3, 4, 5})
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def summary(self) -> str:
        parts = [
            f"{self.name}: {format_quantity(self.flops, 'FLOPs')}",
            f"{format_quantity(self.macs, 'MACs')}",
            f"{format_quantity(self.params)} params",
        ]
        if self.backward_flops:
            parts.append(
                f"forward {format_quantity(self.forward_flops, 'FLOPs')}, backward {format_quantity(self.backward_flops, 'FLOPs')}"
            )
        if self.peak_memory is not None:
            parts.append(f"peak memory {format_bytes(self.peak_memory)}, "
                         f"activations {format_quantity(self.activations or 0)}")
        if self.devices:
            parts.append("on " + ", ".join(self.devices))
        return ", ".join(parts)

    def __str__(self) -> str:
        text = self.summary() + "\n" + self.table()
        if self.uncounted:
            text += "\n" + uncounted_line(self.uncounted)
        return text


def uncounted_calls(uncounted: Mapping[str, int]) -> str:
    """``aten._fft_r2c x1, aten.foo x3``: the ops that ran without a FLOP formula, sorted, with their calls."""
    return ", ".join(f"{op} x{n}" for op, n in sorted(uncounted.items()))


def uncounted_line(uncounted: Mapping[str, int]) -> str:
    """The one sentence every output uses for ops without a formula."""
    return f"uncounted ops (no formula, counted as 0): {uncounted_calls(uncounted)}"
