"""Parsing and formatting of quantities such as ``"4.1G"`` or ``"8.2 GFLOPs"``.

Decimal SI suffixes only (K = 1e3, M = 1e6, G = 1e9, T = 1e12, P = 1e15),
case-insensitive, with an optional unit word (FLOPs, FLOP, MACs, MAC,
params, parameters). No torch import here: budgets are parsed at collection.
"""

from __future__ import annotations

import math
import re
from typing import Collection, Sequence

__all__ = ["parse_quantity", "quantity_unit", "format_quantity", "compact_quantity", "format_bytes", "align_columns", "ACCEPTED_FORMS",
           "OPS_CHOICES", "METRIC_UNITS", "parse_bytes", "BYTES_FORMS", "MEMORY_METRICS"]

#: What a count covers (``ops=``): the one list the counter, the marker, the plugin options and the CLI accept.
OPS_CHOICES = ("matmul", "all")
#: The counts a budget or a baseline gates, with the unit word shown after them.
METRIC_UNITS: dict[str, str] = {"flops": "FLOPs", "macs": "MACs", "params": "params"}
#: The memory figures a budget can limit (``memory=True`` counts): byte quantities, and activations (elements).
MEMORY_METRICS: dict[str, str] = {"peak_memory": "bytes", "activations": "activations", "saved_memory": "bytes"}

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_UNITS = ("flops", "flop", "macs", "mac", "params", "param", "parameters")
_PATTERN = re.compile(
    r"^\s*(?P<num>[+]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*"
    r"(?P<suffix>[kmgtp]?)\s*(?P<unit>" + "|".join(_UNITS) + r")?\s*$",
    re.IGNORECASE,
)
ACCEPTED_FORMS = (
    "a non-negative int or float, or a string such as '4100000000', '4.1G', '8.2 GFLOPs', "
    "'25.6M params' (suffixes K, M, G, T, P)"
)


_UNIT_METRIC = {"flops": "flops", "flop": "flops", "macs": "macs", "mac": "macs", "params": "params",
                "param": "params", "parameters": "params"}


def quantity_unit(value: object) -> str | None:
    """The metric a quantity's unit word names (``"flops"``, ``"macs"``, ``"params"``), None without one.

    >>> quantity_unit("300K MACs")
    'macs'
    >>> quantity_unit("4.1G") is None
    True
    """
    match = _PATTERN.match(value) if isinstance(value, str) else None
    unit = match.group("unit") if match is not None else None
    return _UNIT_METRIC[unit.lower()] if unit else None


def parse_quantity(value: object) -> int:
    """Return the integer that ``value`` denotes.

    >>> parse_quantity("4.1G")
    4100000000
    >>> parse_quantity("8.2 GFLOPs")
    8200000000
    >>> parse_quantity(25_600_000)
    25600000

    Raises ``ValueError`` naming the bad value and the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}: expected {ACCEPTED_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid quantity {value!r}: must not be negative; expected {ACCEPTED_FORMS}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid quantity {value!r}: expected {ACCEPTED_FORMS}")
        return round(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match is not None:
            result = _scaled(match.group("num"), _SUFFIXES[match.group("suffix").lower()])
            if result is not None:
                return result
    raise ValueError(f"invalid quantity {value!r}: expected {ACCEPTED_FORMS}")


def _scaled(number: str, scale: int) -> int | None:
    """``number`` (digits with ``_`` separators, maybe a fraction or exponent) times ``scale``: exact for an
    integer, rounded otherwise; None when the result is not finite."""
    number = number.replace("_", "")
    if re.fullmatch(r"\+?\d+", number):
        return int(number) * scale
    result = float(number) * scale
    return round(result) if math.isfinite(result) else None


_BYTE_SCALES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
                "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}
_BYTES = re.compile(r"^\s*(?P<num>\+?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*"
                    r"(?P<scale>[kmgtp]i?)?(?P<unit>b|bytes?)\s*$", re.IGNORECASE)
BYTES_FORMS = ("a non-negative number of bytes, or a string with a byte unit such as '12GB', '4 GiB', '512MiB', "
               "'800 MB' (KB, MB, GB, TB decimal; KiB, MiB, GiB, TiB binary)")


def parse_bytes(value: object) -> int:
    """Bytes that ``value`` denotes: ``"12GB"`` (decimal, 12e9) or ``"12GiB"`` (binary, 12 * 2**30).

    >>> parse_bytes("1.5GiB")
    1610612736
    >>> parse_bytes("800MB")
    800000000

    A plain number is bytes; a string needs a byte unit (``"12G"`` is refused: FLOPs or bytes?).
    Raises ``ValueError`` naming the bad value and the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid byte quantity {value!r}: expected {BYTES_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid byte quantity {value!r}: expected {BYTES_FORMS}")
        return round(value)
    if isinstance(value, str):
        match = _BYTES.match(value)
        if match is not None:
            result = _scaled(match.group("num"), _BYTE_SCALES[(match.group("scale") or "").lower()])
            if result is not None:
                return result
        elif re.fullmatch(r"\s*\+?\d+(?:_\d+)*\s*", value):
            return int(value.replace("_", ""))
    raise ValueError(f"invalid byte quantity {value!r}: expected {BYTES_FORMS}")


def format_quantity(n: float, unit: str = "", precision: int = 2) -> str:
    """Format ``n`` with the largest SI suffix that keeps it >= 1.

    >>> format_quantity(9_410_000_000, "FLOPs")
    '9.41 GFLOPs'
    >>> format_quantity(512)
    '512'
    """
    sign = "-" if n < 0 else ""
    n = abs(n)
    scales = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3))
    for i, (suffix, scale) in enumerate(scales):
        if n >= scale:
            # when rounding reaches 1000, take the next suffix: 999_995_000 reads 1.00G, not 1000.00M
            if i > 0 and round(n / scale, precision) >= 1000:
                suffix, scale = scales[i - 1]
            text = f"{sign}{n / scale:.{precision}f} {suffix}"
            return text + unit if unit else text.replace(" ", "")
    text = f"{sign}{n:g}" if isinstance(n, float) and not float(n).is_integer() else f"{sign}{int(n)}"
    return f"{text} {unit}" if unit else text


def compact_quantity(n: float) -> str:
    """:func:`format_quantity` without trailing zeros: ``8.3G``, ``4G``, ``512`` (budgets, tolerances).

    >>> compact_quantity(8_300_000_000)
    '8.3G'
    >>> compact_quantity(4_000_000_000)
    '4G'
    """
    text = format_quantity(n)
    if "." in text:
        number, suffix = (text[:-1], text[-1]) if not text[-1].isdigit() else (text, "")
        text = number.rstrip("0").rstrip(".") + suffix
    return text


def format_bytes(n: float, precision: int = 2) -> str:
    """Format a byte count with binary units (KiB, MiB, GiB, TiB).

    >>> format_bytes(3 * 2**30)
    '3.00 GiB'
    >>> format_bytes(512)
    '512 B'
    """
    sign = "-" if n < 0 else ""
    n = abs(n)
    for suffix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{sign}{n / scale:.{precision}f} {suffix}"
    return f"{sign}{int(n)} B"


def align_columns(rows: Sequence[Sequence[str]], right: Collection[int] = (), indent: str = "") -> list[str]:
    """Lines of ``rows`` with each column padded to its widest cell, two spaces apart.

    Columns whose index is in ``right`` are right-aligned; columns empty in
    every row are dropped.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths)) if w).rstrip() for row in rows]
