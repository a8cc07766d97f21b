"""Memory figures of the counted work, from the same pass as the FLOP count.

A :class:`MemoryTracker` is a ``TorchDispatchMode`` of its own, entered
*below* the counter's mode (so the counter's fast paths, which step their own
mode aside, leave it in place) and a pair of saved-tensor hooks. It follows
tensor storages the way ``torch.distributed._tools.mem_tracker.MemTracker``
does: every storage an op outputs that it has not seen is added, with a weak
reference whose callback takes it off when the storage is freed; the total
after each op is what the peak is judged on.

- ``peak_memory``: the most storage bytes alive at once: the parameters,
  buffers and gradients of the modules the counter saw, optimizer state used
  by an ``optimizer.step()`` inside, and everything created inside.
- ``input_memory``: storages made before the counted work that it read
  (the inputs), not part of ``peak_memory``.
- ``activations``: elements output by forward matmul-class ops (conv, linear,
  mm/bmm/einsum, fused attention): fvcore's ``ActivationCountAnalysis``.
- ``saved_memory``: the most bytes held at once by autograd's saved tensors
  (storages created inside; parameters and inputs are held anyway).
- ``memory_traffic``: bytes of the input and output tensors of every op
  (views excluded).

Works on real, ``meta`` and fake tensors alike: only sizes are read. On ``meta``,
``F.scaled_dot_product_attention`` runs the fused kernel a CPU run would pick
(meta alone would take the math path and materialise the score matrices).
Everything runs in the thread that entered it (worker threads' ops are not
seen).
"""

from __future__ import annotations

from typing import Any, Callable, Collection

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary, WeakIdRef

from .signature import TRANSPARENT_MODES

__all__ = ["MemoryTracker", "ACTIVATION_OPS"]

_current_node = torch._C._current_autograd_node
_Tensor = torch.Tensor

_aten = torch.ops.aten
#: Ops whose output elements are "activations" (fvcore's convention: conv, linear, matmul, einsum, attention).
ACTIVATION_OPS: frozenset[Any] = frozenset(
    getattr(_aten, name) for name in (
        "convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
        "cudnn_convolution_transpose", "mkldnn_convolution", "mm", "addmm", "bmm", "baddbmm", "addbmm",
        "mv", "addmv", "dot", "_int_mm", "_scaled_mm",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable", "_flash_attention_forward",
        "_efficient_attention_forward",
    ) if hasattr(_aten, name)
)

#: Ops that take in a tensor made outside dispatch (``torch.tensor(...)``) as a new one.
_FRESH_OPS = frozenset(getattr(_aten, name) for name in ("lift_fresh", "lift_fresh_copy", "lift")
                       if hasattr(_aten, name))
#: Batch norm in eval: CPU kernels return empty saved mean/invstd, meta kernels C-sized ones; only the
#: output counts, so real, meta and fake runs agree. (packet, index of the ``training`` argument or None)
_EVAL_NORM_OPS = {getattr(_aten, name): index for name, index in (
    ("native_batch_norm", 5), ("_native_batch_norm_legit_no_training", None)) if hasattr(_aten, name)}
# An op's kind, worked out once per overload: writes its inputs, an activation op, a lift, a batch norm
_MUTABLE, _ACTIVATION, _FRESH, _NORM = 1, 2, 4, 8
# Storage entries: [bytes, origin, saved]; origin: made inside the work, or held before it (params, state)
_INSIDE, _HELD = 0, 1


def _tensors(args: tuple, kwargs: dict | None) -> list[torch.Tensor]:
    """The tensors among an op's arguments (one level of lists, as aten schemas allow)."""
    found = []
    for a in args:
        if isinstance(a, _Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(b for b in a if isinstance(b, _Tensor))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, _Tensor):
                found.append(a)
            elif isinstance(a, (list, tuple)):
                found.extend(b for b in a if isinstance(b, _Tensor))
    return found


def _storage(t: torch.Tensor) -> Any:
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested, opaque subclasses: no storage
        return None


class _MemoryMode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as the counter's mode: no torch._dynamo import on the first op

    def __init__(self, tracker: "MemoryTracker") -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **kwargs) if kwargs else func(*args)
        self.tracker.op(func, args, kwargs, out, _current_node())
        return out


class _CpuAttentionOnMeta(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` on ``meta`` runs the kernel a CPU run would pick.

    Meta tensors always take the math path (score matrices materialised); a CPU run takes the fused
    flash kernel where it applies. Ask the CPU's own backend choice on zero-stride CPU stand-ins and,
    when it is flash, run that kernel's meta implementation: real and compute-free runs then agree.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _sdpa and args and getattr(args[0], "is_meta", False):
            out = _flash_on_meta(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _flash_on_meta(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                   is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
    from torch.nn.attention import SDPBackend
    from torch.utils._python_dispatch import _disable_current_modes

    tensors = (query, key, value) + ((attn_mask,) if attn_mask is not None else ())
    if enable_gqa or not all(isinstance(t, _Tensor) and t.is_meta and t.dim() >= 1 for t in tensors):
        return None
    with _disable_current_modes():
        stand_ins = [torch.empty(t.shape[-1], dtype=t.dtype, device="cpu").expand(t.shape) for t in tensors]
        mask = stand_ins[3] if attn_mask is not None else None
        choice = _sdp_choice(*stand_ins[:3], mask, dropout_p, is_causal, scale=scale)
    flash: Any = SDPBackend.FLASH_ATTENTION
    if choice != int(flash):
        return None
    return _aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


_sdpa = torch.nn.functional.scaled_dot_product_attention
TRANSPARENT_MODES[_CpuAttentionOnMeta] = frozenset({_sdpa})  # a counter under it replays every other call
#: private: the backend ``F.scaled_dot_product_attention`` would pick for these inputs
_sdp_choice: Any = torch._fused_sdp_choice


class MemoryTracker:
    """Storage lifetimes, activations, saved tensors and traffic of the work run while entered.

    ``where(node)`` names the module path (``Root;layers.0;layers.0.fc``) an
    op belongs to: the running module in forward (``node`` is None) or the
    one that created autograd ``node`` in backward. ``roots()`` gives the
    modules whose parameters, buffers and gradients count from the start.
    """

    def __init__(self, where: Callable[[Any], str], roots: Callable[[], Collection[torch.nn.Module]]) -> None:
        self.where = where
        self.roots = roots
        self.current = 0
        self.peak = 0
        self.input_memory = 0
        self.activations = 0
        self.traffic = 0
        self.saved_now = 0
        self.saved_peak = 0
        self.saved_available = True
        self._live: dict[Any, list[int]] = {}
        self._external: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._fake_mode: Any = None  # a FakeTensorMode we run inside: real tensors it converts are no new memory
        self._kinds: dict[Any, int] = {}
        self._scanned = -1  # how many roots had their parameters adopted
        self._peak_fw: dict[str, int] = {}
        self._peak_bw: dict[str, int] = {}
        self._acts: dict[str, int] = {}
        self._traffic: dict[str, int] = {}
        self._saved: dict[str, int] = {}
        self._handles: list[Any] = []
        self._hooks: Any = None
        self._mode = _MemoryMode(self)
        self._attention = _CpuAttentionOnMeta()

    # -- context -------------------------------------------------------------
    def __enter__(self) -> "MemoryTracker":
        from torch._guards import active_fake_mode
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._fake_mode = active_fake_mode()

        self._handles = [register_optimizer_step_pre_hook(self._optimizer_step)]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        try:
            self._hooks.__enter__()
        except RuntimeError:  # saved-tensor hooks disabled by the caller: no saved_memory figure
            self._hooks = None
            self.saved_available = False
        self._mode.__enter__()
        self._attention.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._attention.__exit__(*exc)
            self._mode.__exit__(*exc)
        finally:
            if self._hooks is not None:
                self._hooks.__exit__(*exc)
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._live = {}  # drops the weak references: their callbacks no longer fire
            self._external = WeakIdKeyDictionary()

    # -- storages --------------------------------------------------------------
    def _add(self, storage: Any, origin: int) -> list[int]:
        nbytes = storage.nbytes()
        entry = [nbytes, origin, 0]
        live = self._live
        live[WeakIdRef(storage, self._free)] = entry
        self.current += nbytes
        return entry

    def _free(self, ref: Any) -> None:
        entry = self._live.pop(ref, None)
        if entry is not None:
            self.current -= entry[0]
            if entry[2]:
                self.saved_now -= entry[0]

    def _adopt(self, t: Any) -> None:
        """Count a tensor that exists before the work (a parameter, buffer, gradient, optimizer state)."""
        if not isinstance(t, _Tensor):
            return
        storage = _storage(t)
        if storage is not None and WeakIdRef(storage) not in self._live:
            self._external.pop(storage, None)
            self._add(storage, _HELD)

    def _adopt_roots(self) -> None:
        roots = self.roots()
        if len(roots) == self._scanned:
            return
        self._scanned = len(roots)
        for root in roots:
            for p in root.parameters():
                self._adopt(p)
                if p.grad is not None:
                    self._adopt(p.grad)
            for b in root.buffers():
                self._adopt(b)

    def _alias_fake(self, t: torch.Tensor) -> None:
        """A real tensor under a FakeTensorMode: its fake copy (what the op saw) is the same memory."""
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(t, FakeTensor):
            return
        fake = _storage(self._fake_mode.from_tensor(t))
        if fake is not None and WeakIdRef(fake) not in self._live:
            self._external[fake] = None

    def _optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer state and parameters an ``optimizer.step()`` inside uses count, made before or not."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                self._adopt(p)
                self._adopt(p.grad)
        for state in optimizer.state.values():
            for value in state.values():
                self._adopt(value)

    # -- per op ------------------------------------------------------------------
    def _kind(self, func: Any) -> int:
        kind = 0
        try:
            if func._schema.is_mutable:
                kind |= _MUTABLE
        except Exception:  # pragma: no cover - ops without a schema
            pass
        if func._overloadpacket in ACTIVATION_OPS:
            kind |= _ACTIVATION
        if func._overloadpacket in _FRESH_OPS:
            kind |= _FRESH
        if func._overloadpacket in _EVAL_NORM_OPS:
            kind |= _NORM
        self._kinds[func] = kind
        return kind

    def op(self, func: Any, args: tuple, kwargs: dict | None, out: Any, node: Any) -> None:
        live = self._live
        moved = 0
        kind = self._kinds.get(func)
        if kind is None:
            kind = self._kind(func)
        for t in _tensors(args, kwargs) if not kind & _FRESH else ():
            moved += t.numel() * t.element_size()
            storage = _storage(t)
            if storage is None:
                continue
            ref = WeakIdRef(storage)
            if ref not in live and storage not in self._external:
                self._adopt_roots()
                if WeakIdRef(storage) not in live:
                    self._external[storage] = None
                    self.input_memory += storage.nbytes()
            if self._fake_mode is not None:
                self._alias_fake(t)
        outs = [out] if isinstance(out, _Tensor) else [o for o in out if isinstance(o, _Tensor)] \
            if isinstance(out, (list, tuple)) else []
        if kind & _NORM:
            index = _EVAL_NORM_OPS[func._overloadpacket]
            if index is None or (len(args) > index and not args[index]):
                outs = outs[:1]
        new = False
        written = 0
        for t in outs:
            written += t.numel() * t.element_size()
            storage = _storage(t)
            if storage is None:
                continue
            entry = live.get(WeakIdRef(storage))
            if entry is None:
                if storage in self._external:
                    continue
                self._add(storage, _INSIDE)
                new = True
            elif entry[0] != storage.nbytes():  # resized in place (out= variants, resize_)
                size = storage.nbytes()
                self.current += size - entry[0]
                entry[0] = size
                new = True
        path = self.where(node)
        if new or kind & _MUTABLE:  # a view or an alias moves no data
            moved += written
            self.traffic += moved
            self._traffic[path] = self._traffic.get(path, 0) + moved
        if kind & _ACTIVATION and node is None and outs:
            n = outs[0].numel()
            self.activations += n
            self._acts[path] = self._acts.get(path, 0) + n
        current = self.current
        if current > self.peak:
            self.peak = current
        peaks = self._peak_bw if node is not None else self._peak_fw
        if peaks.get(path, -1) < current:
            peaks[path] = current

    # -- saved tensors -------------------------------------------------------------
    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = _storage(t)
        if storage is not None:
            entry = self._live.get(WeakIdRef(storage))
            if entry is not None and entry[1] == _INSIDE and not entry[2]:
                entry[2] = 1
                self.saved_now += entry[0]
                if self.saved_now > self.saved_peak:
                    self.saved_peak = self.saved_now
                path = self.where(_current_node())
                self._saved[path] = self._saved.get(path, 0) + entry[0]
        # Not ``t`` itself: a saved output would then hold its own grad_fn, a cycle that keeps it alive.
        return t.detach()

    # -- result ------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The fields of a :class:`~pytest_flops.counting.measurement.Measurement` this tracker measured."""
        by_module: dict[str, dict[str, int]] = {}
        split: dict[str, list[str]] = {}

        def names(path: str) -> list[str]:
            found = split.get(path)
            if found is None:
                found = split[path] = list(dict.fromkeys(path.split(";"))) if path else []
            return found

        for key, per_path in (("peak_forward", self._peak_fw), ("peak_backward", self._peak_bw)):
            for path, value in per_path.items():
                for name in names(path):
                    row = by_module.setdefault(name, {})
                    if row.get(key, -1) < value:
                        row[key] = value
        for key, per_path in (("activations", self._acts), ("saved", self._saved), ("traffic", self._traffic)):
            for path, value in per_path.items():
                for name in names(path):
                    row = by_module.setdefault(name, {})
                    row[key] = row.get(key, 0) + value
        return {
            "peak_memory": self.peak,
            "input_memory": self.input_memory,
            "activations": self.activations,
            "saved_memory": self.saved_peak if self.saved_available else None,
            "memory_traffic": self.traffic,
            "memory_by_module": by_module,
        }


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t
