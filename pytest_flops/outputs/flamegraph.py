"""Folded-stack files (``--flops-flamegraph=DIR``): where each test's FLOPs go, for flame graph viewers.

One file per measured test, one line per (module path, op):
``Model;layers.0;layers.0.attn;aten.bmm 1048576``, the format that
speedscope, flamegraph.pl and inferno read. Frames are the measurement's
own folded stacks (see ``Measurement.stacks``): the root model, each module
by qualified name, then the op (``aten.mm (backward)`` for backward ops).
A test with several measurements gets a leading ``[1]``, ``[2]`` ... frame.
Beside each folded file goes an ``.svg`` of the same stacks, drawn by
:mod:`pytest_flops.outputs.flamesvg` (no outside tool needed to look at it).
No pytest and no torch import here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .io import write_text_atomic
from .records import TestRecord

__all__ = ["folded_lines", "parse_folded", "filename_for", "write_flamegraphs", "SUFFIX", "SVG_SUFFIX"]

SUFFIX = ".folded"
SVG_SUFFIX = ".svg"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 120


def folded_lines(measurements: Sequence[Mapping[str, Any]]) -> list[str]:
    """``frame;frame;op count`` lines (sorted, zero counts left out) for one test's measurements."""
    totals: dict[str, int] = {}
    for i, m in enumerate(measurements):
        prefix = f"[{i + 1}];" if len(measurements) > 1 else ""
        for stack, value in m.get("stacks", {}).items():
            if value <= 0:
                continue
            key = prefix + stack.replace("\n", " ").replace("\r", " ")
            totals[key] = totals.get(key, 0) + int(value)
    return [f"{stack} {value}" for stack, value in sorted(totals.items())]


def parse_folded(text: str) -> dict[str, int]:
    """Read folded lines back: ``{stack: count}`` (the count follows the last space)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        stack, _, value = line.rpartition(" ")
        out[stack] = out.get(stack, 0) + int(value)
    return out


def filename_for(nodeid: str, suffix: str = SUFFIX) -> str:
    """A safe, unique file name for a nodeid: readable part, short hash (``test_a.py__test_x-1a2b3c4d.folded``)."""
    stem = _UNSAFE.sub("_", nodeid.replace("::", "__")).strip("._") or "test"
    digest = hashlib.sha1(nodeid.encode("utf-8")).hexdigest()[:8]
    return f"{stem[:_MAX_STEM]}-{digest}{suffix}"


def write_flamegraphs(records: Iterable[TestRecord], directory: str | Path, svg: bool = True) -> list[Path]:
    """Write one folded-stack file (and with ``svg`` one SVG flame graph) per measured test into ``directory``.

    Returns the paths written, folded files first.
    """
    from .flamesvg import render_flame_svg

    directory = Path(directory)
    folded: list[Path] = []
    pictures: list[Path] = []
    for record in records:
        lines = folded_lines(record.get("measurements", []))
        path = directory / filename_for(record["nodeid"])
        write_text_atomic(path, "".join(line + "\n" for line in lines))
        folded.append(path)
        if svg:
            names = ", ".join(dict.fromkeys(m.get("name", "") for m in record.get("measurements", [])))
            picture = directory / filename_for(record["nodeid"], SVG_SUFFIX)
            write_text_atomic(picture, render_flame_svg(parse_folded("\n".join(lines)), record["nodeid"], names))
            pictures.append(picture)
    return folded + pictures
