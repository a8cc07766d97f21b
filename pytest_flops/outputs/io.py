"""Reading and writing result files.

Writes are atomic (a reader never sees half a file), go through a symlink to
its target (the link stays a link), and keep the mode of the file they
replace (a new file gets 0644 less the umask, as ``open()`` would give it).
Reads of JSON documents are bounded in size and nesting, so a hostile or
broken file gives one line, not a traceback or an unbounded read.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_text_atomic", "read_json_document", "parse_json_document", "DocumentError", "BadNumber", "bad_number_path",
           "MAX_DOCUMENT_BYTES", "MAX_INT_DIGITS", "MAX_DEPTH"]

#: The largest JSON document (baseline, results, gathered records) read, in bytes.
MAX_DOCUMENT_BYTES = 64 * 2**20
#: Integers with more digits than this are not counts (10**40 FLOPs is far beyond any model); they are
#: kept as :class:`BadNumber` markers so that validation can name the field instead of crashing.
MAX_INT_DIGITS = 40
#: The deepest nesting of arrays and objects accepted (pytest-flops files are a few levels deep).
MAX_DEPTH = 32


class DocumentError(ValueError):
    """A JSON document that cannot be read: the message says why (without the path; callers add it)."""


class BadNumber(str):
    """A number no count can be (NaN, Infinity, 1e400, an integer of more than :data:`MAX_INT_DIGITS`
    digits), kept as its text so that the validator can name the field that holds it."""

    def __repr__(self) -> str:
        return str(self) if len(self) <= 24 else f"{self[:12]}...({len(self)} characters)"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _target(path: Path) -> Path:
    """Where a write to ``path`` should land: the final target of a symlink (which may not exist yet)."""
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside the target of ``path``, then ``os.replace`` it.

    Readers never see half a file. A symlink at ``path`` is followed (its target is replaced, the link
    kept); the target's permission bits are kept, a new file gets ``0o666 & ~umask`` (0644 usually).
    """
    path = Path(path)
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _parse_int(text: str) -> Any:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else BadNumber(text)


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if value == value and value not in (float("inf"), float("-inf")) else BadNumber(text)


def bad_number_path(value: Any, where: str = "", depth: int = 0) -> str | None:
    """The path (``tests['a'].measurements[0].flops``) of the first :class:`BadNumber` or the first level
    deeper than :data:`MAX_DEPTH` in ``value``; None when there is none."""
    if depth > MAX_DEPTH:
        return f"{where or 'the document'} (nested deeper than {MAX_DEPTH} levels)"
    if isinstance(value, BadNumber):
        return f"{where} = {value!r}"
    if isinstance(value, dict):
        items: Any = ((f"{where}[{k!r}]" if where else repr(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, child in items:
        found = bad_number_path(child, key, depth + 1)
        if found:
            return found
    return None


def read_json_document(path: str | Path, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """The parsed JSON at ``path``, read with a bound on its size and nesting.

    Raises ``FileNotFoundError`` and ``IsADirectoryError`` as ``open`` does, and :class:`DocumentError`
    for the rest (unreadable, larger than ``max_bytes``, not UTF-8, not JSON, nested too deeply).
    NaN, Infinity and numbers no count can be come back as :class:`BadNumber` for the validator.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:
        raise DocumentError(f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise DocumentError(f"is larger than {max_bytes // 2**20} MiB, the most read")
    return parse_json_document(raw)


def parse_json_document(raw: bytes | str) -> Any:
    """:func:`read_json_document` for text already read (a message from another process)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise DocumentError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=BadNumber, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        raise DocumentError(f"is nested deeper than {MAX_DEPTH} levels: not a pytest-flops file") from None
    except ValueError as exc:
        raise DocumentError(f"is corrupt: not valid JSON ({exc})") from None
