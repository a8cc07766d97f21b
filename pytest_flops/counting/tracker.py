"""Which module is running: global module hooks, qualified names, and the
forward intervals that let backward ops be charged to the module that
created them.

The tracker keeps a stack of qualified module names while forward runs. For
backward, each module call records the range of autograd sequence numbers
created inside it; the autograd node that runs a backward op carries its
sequence number, so the innermost range that holds it names the module.

Threads: the dispatch mode is thread-local, the module hooks are global. A
thread that calls modules while the counting thread is itself inside a module
(``nn.DataParallel`` runs its replicas in threads from its ``forward``) gets
a worker tracker of its own, which pushes a dispatch mode in that thread for
its outermost module call; its modules are named under the counting thread's
current module (a replica of ``module`` is named ``module``). Other threads
are left alone.
"""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.nn.modules import module as _module

if TYPE_CHECKING:  # pragma: no cover
    from .counter import FlopCounter

__all__ = ["ModuleTracker"]

_get_seq = torch.autograd._get_sequence_nr
_get_ident = threading.get_ident
_push_mode = torch._C._push_on_torch_dispatch_stack
_len_modes = torch._C._len_torch_dispatch_stack
_mode_at = torch._C._get_dispatch_stack_at


def _pop_mode(mode: Any) -> None:
    """Pop ``mode`` if it is on top of this thread's dispatch stack."""
    n = _len_modes()
    if n and _mode_at(n - 1) is mode:
        torch._C._pop_torch_dispatch_stack(None)
_grad_enabled = torch.is_grad_enabled

# Frame kinds
_PLAIN, _FORMULA, _FAST, _INSIDE_FORMULA, _PROBE = 0, 1, 2, 3, 4


class ModuleTracker:
    """Global forward hooks that maintain the current module path for one counter."""

    def __init__(self, counter: "FlopCounter", root: torch.nn.Module | None = None,
                 main: "ModuleTracker | None" = None) -> None:
        self.counter = counter
        self.main = main  # the counting thread's tracker, for a worker thread's
        self.worker = main is not None
        self.mode: Any = None  # this thread's dispatch mode (set by the counter)
        self.workers: dict[int, ModuleTracker] = {}
        # naming is shared by every thread's tracker of one counter
        self.names: dict[int, str] = main.names if main else {}
        self.types: dict[str, str] = main.types if main else {}
        self.roots: dict[int, torch.nn.Module] = main.roots if main else {}
        self.stack: list[str] = []
        self.path = ""  # ";".join(stack), the key ops are charged to
        self.frames: list[tuple[Any, ...]] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.call_paths: list[str] = []
        self.suppress = 0
        self._thread = _get_ident()
        self._handles: list[Any] = []
        self._backward_cache: dict[int, str] = {}
        self._root_names: dict[str, int] = main._root_names if main else {}
        self._info: dict[int, tuple[str, Any, Any]] = main._info if main else {}
        self._known: tuple[int, set[str]] | None = None
        self._base = ("", "")  # a worker's (path, name) of the counting thread's module it works for
        if root is not None:
            self._add_root(root)

    # -- naming -------------------------------------------------------------
    def _add_root(self, module: torch.nn.Module) -> str:
        base = type(module).__name__
        n = self._root_names.get(base, 0) + 1
        self._root_names[base] = n
        name = base if n == 1 else f"{base}#{n}"
        prefix = "" if not self.roots else name + "."
        self.roots[id(module)] = module
        names = self.names
        for sub_name, sub in module.named_modules():
            if sub_name and id(sub) not in names:
                names[id(sub)] = prefix + sub_name
        names[id(module)] = name
        return name

    def _name(self, module: torch.nn.Module) -> str:
        name = self.names.get(id(module))
        if name is None:
            if not self.stack and self.worker:
                name = self._add_worker_root(module)
            elif not self.stack:
                name = self._add_root(module)
            else:
                parent = self.stack[-1]
                if len(self.stack) == 1:  # child of a root: names are relative to it
                    name = type(module).__name__
                else:
                    name = f"{parent}.{type(module).__name__}"
                self.names[id(module)] = name
        return name

    def _add_worker_root(self, module: torch.nn.Module) -> str:
        """Name a worker thread's outermost module under the module the counting thread is in."""
        parent = self._base[1]
        own = "module" if getattr(module, "_is_replica", False) else type(module).__name__
        name = own if parent in {self.names[i] for i in self.roots} else f"{parent}.{own}"
        names = self.names
        for sub_name, sub in module.named_modules():
            names[id(sub)] = f"{name}.{sub_name}" if sub_name else name
        return name

    def known_names(self) -> set[str]:
        """Every module name given so far (cached until new names are added)."""
        if self._known is None or self._known[0] != len(self.names):  # names are only ever added
            self._known = (len(self.names), set(self.names.values()))
        return self._known[1]

    # -- threads ------------------------------------------------------------
    def _worker(self, ident: int) -> "ModuleTracker | None":
        """The tracker of another thread, adopted only while this (counting) thread is inside a module."""
        worker = self.workers.get(ident)
        if worker is None or not worker.stack:
            if not self.stack:
                return None
            if worker is None:
                worker = ModuleTracker(self.counter, main=self)
                worker._thread = ident
                worker.mode = self.counter._new_mode(worker)
                self.workers[ident] = worker
            worker._base = (self.path, self.stack[-1])
        return worker

    # -- hooks --------------------------------------------------------------
    def install(self) -> None:
        self._handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        # An exception that escaped a fast-path module must not leave our mode popped.
        while self.frames:
            frame = self.frames.pop()
            if frame[0] == _FAST:
                _push_mode(self.mode)

    def _describe(self, module: torch.nn.Module) -> tuple[str, Any, Any]:
        """(name, module formula, fast-path spec) of a module, worked out on its first call."""
        name = self.names.get(id(module)) or self._name(module)
        if name not in self.types:
            self.types[name] = type(module).__name__
            self.counter._seen_module(name)
        counter = self.counter
        info = (name, counter._module_formula(type(module)), counter._fast_spec(module))
        self._info[id(module)] = info
        return info

    def _pre(self, module: torch.nn.Module, args: tuple) -> None:
        if _get_ident() != self._thread:
            worker = self._worker(_get_ident()) if not self.worker else None
            if worker is not None:
                worker._pre(module, args)
            return
        if self.suppress:
            self.suppress += 1
            self.frames.append((_INSIDE_FORMULA, module))
            return
        info = self._info.get(id(module))
        if info is None:
            info = self._describe(module)
        name, formula, spec = info
        old_path = self.path
        if self.worker and not self.stack:  # a worker's outermost call: count its ops in this thread
            old_path = self._base[0]
            _push_mode(self.mode)
        self.stack.append(name)
        self.path = path = old_path + ";" + name if old_path else name
        index = -1
        if _grad_enabled():
            index = len(self.starts)
            self.starts.append(_get_seq())
            self.ends.append(1 << 62)
            self.call_paths.append(path)
        if formula is not None:
            self.suppress = 1
            self.frames.append((_FORMULA, module, old_path, index, formula))
            return
        if spec is not None:
            fast = self.counter._fast_formula(module, args, spec, self.mode)
            if fast is not None:
                # A tuple: a zero-cost module's first call, run through the dispatch mode to check its ops.
                self.frames.append((_PROBE if type(fast) is tuple else _FAST, module, old_path, index, fast))
                return
        self.frames.append((_PLAIN, module, old_path, index))

    def _post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if _get_ident() != self._thread:
            worker = self.workers.get(_get_ident()) if not self.worker else None
            if worker is not None and worker.frames:
                worker._post(module, args, output)
            return
        if not self.frames:
            return
        frame = self.frames.pop()
        kind = frame[0]
        if kind == _INSIDE_FORMULA:
            self.suppress -= 1
            return
        counter = self.counter
        try:
            if kind == _FAST:
                _push_mode(self.mode)
                if output is not None:
                    fast: Callable[..., Any] = frame[4]
                    counter._record_module(self, module, fast, args, output)
            elif kind == _PROBE:
                counter._end_probe(frame[4], output)
            elif kind == _FORMULA:
                self.suppress = 0
                if output is not None:
                    fn, category = frame[4]
                    counter._record_module_formula(self, module, fn, category, args, output)
        finally:
            index = frame[3]
            if index >= 0:
                self.ends[index] = _get_seq()
            self.stack.pop()
            self.path = frame[2]
            if self.worker and not self.stack:  # the worker's outermost call is over
                _pop_mode(self.mode)

    # -- backward attribution ---------------------------------------------
    def backward_path(self, node: Any) -> str:
        """The module path of the forward call that created autograd ``node``."""
        try:
            seq = node._sequence_nr()
        except Exception:  # pragma: no cover - exotic nodes
            return ""
        cached = self._backward_cache.get(seq)
        if cached is not None:
            return cached
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, seq) - 1
        path = ""
        while i >= 0:
            if starts[i] <= seq < ends[i]:
                path = self.call_paths[i]
                break
            i -= 1
        if not path and self.workers:
            # created in a worker thread (its own sequence numbers): the first worker whose calls hold it
            for worker in list(self.workers.values()):
                path = worker.backward_path(node)
                if path:
                    break
        self._backward_cache[seq] = path
        return path
