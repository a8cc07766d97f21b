"""Ops by name, for registration on any torch from 2.4 on.

``aten.mm`` here is ``torch.ops.aten.mm`` where the running torch has the op,
and the name ``"aten::mm"`` where it does not; the registry skips a name it
cannot resolve. So a formula for an op that only newer torch versions have
(``aten._fused_rms_norm`` from 2.9, ``aten._grouped_mm``) is registered where
the op exists and skipped elsewhere, instead of failing the import.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["OpNamespace", "aten"]


class OpNamespace:
    """Attribute access to the ops of one namespace that never fails: an absent op reads as its name."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(getattr(torch.ops, self.namespace), name)
        except (AttributeError, RuntimeError):
            return f"{self.namespace}::{name}"

    def has(self, name: str) -> bool:
        """Whether the running torch has the op ``name``."""
        return not isinstance(getattr(self, name), str)


aten = OpNamespace("aten")
