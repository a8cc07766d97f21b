"""Which module is running: a service that knows nothing about counting.

:class:`ModuleTracker` installs global module hooks and keeps, per thread, the
stack of running module calls (:class:`Frame`) with their qualified names
(``layers.3.attn``, the root named by its class), in the manner of
``torch.distributed._tools.mod_tracker.ModTracker``. Subscribers get events:
``module_enter(view, frame, module, args)`` (its return value is kept as
``frame.token``), ``module_exit(view, frame, module, args, output)``, and
``thread_enter(view)`` / ``thread_exit(view)`` around a worker thread's
outermost adopted call (on that thread).

Backward attribution: each module call under grad records an interval of the
autograd sequence numbers made inside it, with its parent interval; the node
that runs a backward op carries its sequence number, so the innermost interval
that holds it is found by one bisection and a walk up the parents (at most
the nesting depth), never a scan of the history. The history is bounded
(:data:`INTERVAL_LIMIT`): a counter around a long loop does not grow with it.

Threads: the thread that installs the tracker is its home. Another thread's
module calls are tracked only while the home thread is inside a module, if
that thread started after the tracker was installed (``nn.DataParallel``
starts its replicas' threads from its ``forward``) and has no tracker of its
own; its modules are named under the home thread's current module (a replica
of ``module`` is named ``module``). Other threads are left alone. A worker
call still running when the tracker is removed gets its ``thread_exit`` when
it ends, on its thread.

Module names and per-module caches hold modules weakly (a module made inside
``forward`` and freed never lends its name to the next object at its address);
roots, and the modules of their trees when they were named, are kept alive for
the tracker's lifetime (so their names are found by ``id`` without a weak
reference made on every call).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from typing import Any, Callable

import torch
from torch.nn.modules import module as _module

from ._torch import sequence_nr

__all__ = ["ModuleTracker", "Frame", "ThreadView"]

_get_ident = threading.get_ident
_grad_enabled = torch.is_grad_enabled
_OPEN = 1 << 62
#: Per thread: how many trackers this thread has installed (a thread with its own is never adopted).
_local = threading.local()


class Frame:
    """One running module call."""

    __slots__ = ("module", "name", "path", "outer", "interval", "token")

    def __init__(self, module: torch.nn.Module, name: str, path: str, outer: str, interval: int) -> None:
        self.module = module
        self.name = name
        self.path = path  # ";"-joined names of the calls on the stack, this one last
        self.outer = outer  # the path before this call
        self.interval = interval  # index of its backward interval, -1 when grad was off
        self.token: Any = None  # what the enter subscriber returned


#: Backward intervals a thread keeps: past this many, the oldest closed ones go, half of them at a time (a
#: counter around a long training loop does not grow without bound). A node made by a call whose interval
#: went (at least half this many module calls before its backward ran, and outside the call running now) is
#: charged to no module; its FLOPs still count.
INTERVAL_LIMIT = 200_000


class ThreadView:
    """The tracker's state for one thread: its stack of calls and its backward intervals.

    Intervals are indexed from the first one this view made; ``dropped`` of them are gone from the front of
    its lists (see :data:`INTERVAL_LIMIT`), never one that is open or after one that is.
    """

    __slots__ = ("ident", "thread", "worker", "stack", "path", "base_path", "base_name",
                 "starts", "ends", "paths", "parents", "open", "steps", "dropped", "prune_at")

    def __init__(self, ident: int, thread: Any, worker: bool) -> None:
        self.ident = ident
        self.thread = thread
        self.worker = worker
        self.stack: list[Frame] = []
        self.path = ""
        self.base_path = ""  # a worker's: the home thread's path when it was adopted
        self.base_name = ""  # a worker's: the home thread's innermost module then
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.paths: list[str] = []
        self.parents: list[int] = []  # each interval's parent, by index (-1: none)
        self.open = -1  # the innermost open interval
        self.steps = 0  # intervals visited by lookups: the work backward attribution did
        self.dropped = 0
        self.prune_at = INTERVAL_LIMIT

    def push_interval(self, path: str) -> int:
        if len(self.starts) >= self.prune_at:
            self._prune()
        index = self.dropped + len(self.starts)
        self.starts.append(sequence_nr())
        self.ends.append(_OPEN)
        self.paths.append(path)
        self.parents.append(self.open)
        self.open = index
        return index

    def close_interval(self, index: int) -> None:
        i = index - self.dropped  # >= 0: an open interval is never dropped
        self.ends[i] = sequence_nr()
        self.open = self.parents[i]

    def _prune(self) -> None:
        """Drop the oldest intervals down to half the limit, but none from the outermost open one on."""
        cut = len(self.starts) - INTERVAL_LIMIT // 2
        i = self.open
        while i >= 0:  # up the open calls (the nesting depth)
            cut = min(cut, i - self.dropped)
            i = self.parents[i - self.dropped]
        if cut > 0:
            for kept in (self.starts, self.ends, self.paths, self.parents):
                del kept[:cut]
            self.dropped += cut
        self.prune_at = len(self.starts) + INTERVAL_LIMIT // 2

    def lookup(self, seq: int) -> str:
        """The path of the innermost call whose interval holds sequence number ``seq`` ("" if none)."""
        i = bisect.bisect_right(self.starts, seq) - 1
        ends, parents, dropped = self.ends, self.parents, self.dropped
        while i >= 0:
            self.steps += 1
            if seq < ends[i]:
                return self.paths[i]
            i = parents[i] - dropped  # < 0: none, or one that was dropped
        return ""


class ModuleTracker:
    """Global module hooks that say which module runs, on which thread, for the subscribers."""

    def __init__(self, root: torch.nn.Module | None = None) -> None:
        #: names of the modules met outside the roots' trees (made in ``forward``, say), held weakly
        self.names: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
        self._tree: dict[int, tuple[torch.nn.Module, str]] = {}  # the roots' trees, pinned: ids stay valid
        self.types: dict[str, str] = {}  # name -> class name, of every module that ran
        self.roots: dict[int, torch.nn.Module] = {}  # kept alive: ids stay valid while the tracker lives
        self.home = ThreadView(_get_ident(), threading.current_thread(), worker=False)
        self._views: dict[int, ThreadView] = {}  # worker threads by ident (the live ones)
        self._workers: list[ThreadView] = []  # every worker view, for backward attribution
        self._root_names: dict[str, int] = {}
        self._known: set[str] | None = None  # every name given so far, made when asked for
        self._enter: list[Callable[..., Any]] = []
        self._exit: list[Callable[..., Any]] = []
        self._thread_enter: list[Callable[[ThreadView], None]] = []
        self._thread_exit: list[Callable[[ThreadView], None]] = []
        self._handles: list[Any] = []
        self._preexisting: set[Any] = set()
        self._backward_cache: dict[int, str] = {}
        if root is not None:
            self._add_root(root)

    def subscribe(self, listener: Any) -> None:
        """Call ``listener``'s ``module_enter``/``module_exit``/``thread_enter``/``thread_exit`` (those it has)."""
        for name, hooks in (("module_enter", self._enter), ("module_exit", self._exit),
                            ("thread_enter", self._thread_enter), ("thread_exit", self._thread_exit)):
            fn = getattr(listener, name, None)
            if fn is not None:
                hooks.append(fn)

    # -- install / remove ---------------------------------------------------
    def install(self) -> None:
        _Sweeper.collect()
        if self.home.ident != _get_ident():
            raise RuntimeError("a ModuleTracker is installed by the thread that made it")
        self._preexisting = set(threading.enumerate())
        _local.trackers = getattr(_local, "trackers", 0) + 1
        self._handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]

    def remove(self) -> None:
        """Remove the hooks; worker calls still running get their ``thread_exit`` when they end."""
        for handle in self._handles:
            handle.remove()
        if self._handles:
            _local.trackers = max(0, getattr(_local, "trackers", 1) - 1)
        self._handles = []
        self.home.stack.clear()
        self.home.path = ""
        running = [view for view in self._views.values() if view.stack]
        if running:
            _Sweeper(running, list(self._thread_exit))

    def view(self) -> ThreadView | None:
        """The calling thread's view, if the tracker follows this thread."""
        ident = _get_ident()
        return self.home if ident == self.home.ident else self._views.get(ident)

    # -- naming -------------------------------------------------------------
    def _set_name(self, module: torch.nn.Module, name: str) -> None:
        self.names[module] = name
        if self._known is not None:
            self._known.add(name)

    def _add_root(self, module: torch.nn.Module) -> str:
        base = type(module).__name__
        n = self._root_names.get(base, 0) + 1
        self._root_names[base] = n
        name = base if n == 1 else f"{base}#{n}"
        prefix = "" if not self.roots else name + "."
        self.roots[id(module)] = module
        tree, weak = self._tree, self.names if len(self.names) else None
        tree[id(module)] = (module, name)  # first: a module that holds the root is not walked into
        seen: set[int] = set()  # modules named outside the trees, walked here for their children

        def walk(parent: torch.nn.Module, at: str) -> None:  # named_modules' order: each module once, first name
            for key, sub in parent._modules.items():
                if sub is None or id(sub) in tree:  # named, with its subtree, already
                    continue
                sub_name = at + key
                if weak is not None and sub in weak:
                    if id(sub) in seen:
                        continue
                    seen.add(id(sub))
                else:
                    tree[id(sub)] = (sub, prefix + sub_name)
                walk(sub, sub_name + ".")

        walk(module, "")
        self._known = None
        return name

    def _add_worker_root(self, view: ThreadView, module: torch.nn.Module) -> str:
        """Name a worker thread's outermost module under the module the home thread is in."""
        parent = view.base_name
        own = "module" if getattr(module, "_is_replica", False) else type(module).__name__
        root_names = {self.name_of(m) for m in self.roots.values()}
        name = own if parent in root_names else f"{parent}.{own}"
        for sub_name, sub in module.named_modules():
            self._set_name(sub, f"{name}.{sub_name}" if sub_name else name)
        return name

    def _name(self, view: ThreadView, module: torch.nn.Module) -> str:
        stack = view.stack
        if not stack:
            return self._add_worker_root(view, module) if view.worker else self._add_root(module)
        name = type(module).__name__ if len(stack) == 1 else f"{stack[-1].name}.{type(module).__name__}"
        self._set_name(module, name)
        return name

    def name_of(self, module: torch.nn.Module, default: str = "") -> str:
        entry = self._tree.get(id(module))  # a pinned module: no other object has its id
        return entry[1] if entry is not None else self.names.get(module, default)

    def known_names(self) -> set[str]:
        """Every name given so far to a module that is alive."""
        if self._known is None:
            self._known = {name for _, name in self._tree.values()}
            self._known.update(self.names.values())
        return self._known

    # -- threads ------------------------------------------------------------
    def _adopt(self, ident: int) -> ThreadView | None:
        """A view for another thread's outermost call, if this tracker follows it (see the module doc)."""
        home = self.home
        if not home.stack or getattr(_local, "trackers", 0) > 0:
            return None
        thread = threading.current_thread()
        if thread in self._preexisting:
            return None
        view = self._views.get(ident)
        if view is None or view.thread is not thread:
            view = self._views[ident] = ThreadView(ident, thread, worker=True)
            self._workers.append(view)
        view.base_path, view.base_name = home.path, home.stack[-1].name
        view.path = view.base_path
        return view

    # -- hooks --------------------------------------------------------------
    def _pre(self, module: torch.nn.Module, args: tuple) -> None:
        ident = _get_ident()
        view = self.home
        adopted = False
        if ident != view.ident:
            found = self._views.get(ident)
            if found is None or not found.stack:
                found = self._adopt(ident)
                if found is None:
                    return
                adopted = True
            view = found
        entry = self._tree.get(id(module))  # name_of, inline: this runs on every module call
        name = entry[1] if entry is not None else self.names.get(module)
        if name is None:
            name = self._name(view, module)
        if name not in self.types:
            self.types[name] = type(module).__name__
        outer = view.path
        path = outer + ";" + name if outer else name
        frame = Frame(module, name, path, outer, view.push_interval(path) if _grad_enabled() else -1)
        view.stack.append(frame)
        view.path = path
        if adopted:
            for fn in self._thread_enter:
                fn(view)
        for fn in self._enter:
            frame.token = fn(view, frame, module, args)

    def _post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        ident = _get_ident()
        view = self.home if ident == self.home.ident else self._views.get(ident)
        if view is None or not view.stack or view.stack[-1].module is not module:
            return  # a call that began before the tracker was installed, or on a thread it does not follow
        frame = view.stack[-1]
        try:
            for fn in self._exit:
                fn(view, frame, module, args, output)
        finally:
            view.stack.pop()
            view.path = frame.outer
            if frame.interval >= 0:
                view.close_interval(frame.interval)
            if view.worker and not view.stack:
                for fn in self._thread_exit:
                    fn(view)

    # -- backward attribution ---------------------------------------------
    def backward_path(self, node: Any) -> str:
        """The module path of the forward call that created autograd ``node`` ("" if none did)."""
        try:
            seq = node._sequence_nr()
        except Exception:  # pragma: no cover - exotic nodes
            return ""
        cached = self._backward_cache.get(seq)
        if cached is not None:
            return cached
        path = self.home.lookup(seq)
        if not path:
            # made in a worker thread (its own sequence numbers): the first worker whose calls hold it
            for view in list(self._workers):
                path = view.lookup(seq)
                if path:
                    break
        if len(self._backward_cache) >= INTERVAL_LIMIT:
            self._backward_cache.clear()
        self._backward_cache[seq] = path
        return path

    def lookup_steps(self) -> int:
        """Intervals visited by backward lookups so far, over all threads (what attribution cost)."""
        return self.home.steps + sum(view.steps for view in self._workers)


class _Sweeper:
    """Hooks left after a tracker is removed while worker calls still run: ``thread_exit`` when each ends.

    The hooks go once every call has ended: from a pre-hook, or at the next install (never from inside
    the exception path of ``Module._call_impl``, which iterates the live hook dict).
    """

    _finished: list["_Sweeper"] = []

    def __init__(self, views: list[ThreadView], exits: list[Callable[[ThreadView], None]]) -> None:
        self.depth = {view.ident: (view, len(view.stack)) for view in views}
        self.exits = exits
        self.handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]
        for view in views:
            view.stack.clear()

    def _pre(self, module: Any, args: Any) -> None:
        entry = self.depth.get(_get_ident())
        if entry is not None:
            self.depth[entry[0].ident] = (entry[0], entry[1] + 1)
        if not self.depth:
            self.close()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        entry = self.depth.get(_get_ident())
        if entry is None:
            return
        view, depth = entry
        if depth > 1:
            self.depth[view.ident] = (view, depth - 1)
            return
        del self.depth[view.ident]
        for fn in self.exits:
            fn(view)
        if not self.depth:
            _Sweeper._finished.append(self)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @classmethod
    def collect(cls) -> None:
        while cls._finished:
            cls._finished.pop().close()
