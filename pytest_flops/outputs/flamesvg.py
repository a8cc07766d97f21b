"""A static SVG flame graph of folded stacks, drawn by the project (``--flops-flamegraph`` writes one per test).

Readable without JavaScript: each frame is a rectangle with its label and a
``<title>`` tooltip (the full frame, its FLOPs and share of the total). The
root frame is at the bottom, callees above, as flamegraph.pl draws; module
frames are warm colours, op frames (``aten.mm``) cool ones. Frames narrower
than :data:`MIN_WIDTH` pixels are left out (their FLOPs stay in their parent's
width). No pytest and no torch import here.
"""

from __future__ import annotations

import hashlib
from html import escape
from typing import Mapping

from ..units import format_quantity

__all__ = ["render_flame_svg", "MIN_WIDTH"]

WIDTH = 1200
FRAME_HEIGHT = 17
_PAD = 10
_HEADER = 44
_CHAR_WIDTH = 6.7  # 11px monospace
MIN_WIDTH = 0.5


class _Frame:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, _Frame] = {}


def _tree(stacks: Mapping[str, int]) -> _Frame:
    root = _Frame("all")
    for stack, value in sorted(stacks.items()):
        if value <= 0:
            continue
        root.value += value
        node = root
        for name in stack.split(";"):
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Frame(name)
            child.value += value
            node = child
    return root


def _depth(frame: _Frame) -> int:
    return 1 + max((_depth(c) for c in frame.children.values()), default=0)


def _colour(name: str) -> str:
    digest = hashlib.md5(name.encode("utf-8")).digest()
    a, b, c = digest[0] / 255, digest[1] / 255, digest[2] / 255
    if name.startswith(("aten.", "prims.")) or " (module formula)" in name:  # an op: cool
        return f"rgb({int(80 + 60 * a)},{int(150 + 60 * b)},{int(200 + 50 * c)})"
    return f"rgb({int(205 + 50 * a)},{int(80 + 150 * b)},{int(30 + 40 * c)})"


def _label(name: str, parent: str, width: float) -> str:
    """The frame's text as far as it fits: the full name, else its part below the parent, else cut with '..'."""
    fits = int((width - 6) / _CHAR_WIDTH)
    if fits < 3:
        return ""
    if len(name) <= fits:
        return name
    short = name[len(parent) + 1:] if parent and name.startswith(parent + ".") else name
    return short if len(short) <= fits else short[:fits - 2] + ".."


def _frames(frame: _Frame, parent: str, x: float, level: int, scale: float, total: int, height: int,
            out: list[str]) -> None:
    width = frame.value * scale
    if width < MIN_WIDTH:
        return
    y = height - _PAD - (level + 1) * FRAME_HEIGHT
    share = 100 * frame.value / total
    name = escape(frame.name)
    tip = f"{name}: {escape(format_quantity(frame.value, 'FLOPs'))} ({share:.2f}%)"
    text = escape(_label(frame.name, parent, width))
    out.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{FRAME_HEIGHT - 1}" '
               f'fill="{_colour(frame.name)}" rx="2"/>'
               + (f'<text x="{x + 3:.1f}" y="{y + FRAME_HEIGHT - 5}">{text}</text>' if text else "") + "</g>")
    child_x = x
    for child in sorted(frame.children.values(), key=lambda c: c.name):
        _frames(child, frame.name if level else "", child_x, level + 1, scale, total, height, out)
        child_x += child.value * scale


def render_flame_svg(stacks: Mapping[str, int], title: str, subtitle: str = "") -> str:
    """An SVG document: the flame graph of ``{"Root;child;op": FLOPs}`` stacks, ``title`` above it."""
    root = _tree(stacks)
    levels = _depth(root) if root.value else 1
    height = _HEADER + levels * FRAME_HEIGHT + 2 * _PAD
    total_text = format_quantity(root.value, "FLOPs") if root.value else "no FLOPs counted"
    body: list[str] = []
    if root.value:
        _frames(root, "", _PAD, 0, (WIDTH - 2 * _PAD) / root.value, root.value, height, body)
    sub = escape(f"{total_text}" + (f" · {subtitle}" if subtitle else ""))
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fdfdf8"/>',
        f'<text x="{_PAD}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{_PAD}" y="36" fill="#555">{sub}</text>',
        *body,
        "</svg>",
        "",
    ])
