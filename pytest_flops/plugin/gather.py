"""Gathering records from the processes of one run: xdist workers and torchrun ranks.

No pytest import, and torch only inside :func:`gather` (for its key-value store).

**xdist** needs nothing from here: each measured test's report carries its
record (``report.flops``) to the controller, which collects it in
``pytest_runtest_logreport`` like a local one; workers print and write nothing.

**torchrun** (or any launcher that sets ``RANK`` and ``WORLD_SIZE``) starts one
pytest per rank. Each rank measures its own tests; at the end of the session
every rank but 0 sends its records to rank 0 (:func:`gather`), which prints
the one report and writes the files. The transport never runs a collective,
so it cannot disturb (or hang on) the tests' own process groups:

1. the key-value store of the torchrun agent (``TORCHELASTIC_USE_AGENT_STORE``,
   at ``MASTER_ADDR:MASTER_PORT``): there for the whole job, whether or not
   the tests created a process group, and reachable from every node;
2. else the store of the tests' default process group, when it is still
   initialised (e.g. ``srun`` + ``init_process_group("env://")``);
3. else files: each rank writes ``rank-N.json`` atomically into a directory
   named after the job (:func:`exchange_dir`) under ``tempfile.gettempdir()``
   (one host only). A rank whose store fails also falls back to its file;
   rank 0 looks in both.

Rank 0 waits at most ``timeout`` seconds (``flops_gather_timeout``) for the
others and reports the ranks that did not arrive. Through a store, the other
ranks then wait (as long at most) until rank 0 has printed and written
everything (:func:`release`, :func:`wait_released`): torchrun stops every
rank as soon as one exits with failed tests, and rank 0 must not be stopped
in the middle of its report.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["RankInfo", "GatherResult", "rank_info", "gather", "release", "wait_released", "exchange_dir",
           "DEFAULT_TIMEOUT"]

#: Seconds rank 0 waits for the other ranks' records (they may still be running tests).
DEFAULT_TIMEOUT = 300.0
_CONNECT_TIMEOUT = 10.0
_KEY = "pytest_flops/records/"


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a multi-process job."""

    rank: int
    world_size: int
    local_rank: int = 0


@dataclass
class GatherResult:
    """What rank 0 gathered: every rank's records (rank order), the ranks missing, and how each arrived."""

    records: list[dict[str, Any]]
    missing: list[int] = field(default_factory=list)
    via: dict[int, str] = field(default_factory=dict)


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo | None:
    """The rank of this process from ``RANK``/``WORLD_SIZE``; None when it runs alone (world size 1)."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        return None
    if world <= 1 or not 0 <= rank < world:
        return None
    return RankInfo(rank, world, local)


def _job_id(env: Mapping[str, str]) -> str:
    parts = [env.get(name, "") for name in (
        "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE",
        "SLURM_JOB_ID", "SLURM_STEP_ID")]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def exchange_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the file fallback: one per job and user, under ``tempfile.gettempdir()``."""
    env = os.environ if environ is None else environ
    user = str(os.getuid()) if hasattr(os, "getuid") else (env.get("USERNAME") or "user")
    return Path(tempfile.gettempdir()) / f"pytest-flops-{user}-{_job_id(env)}"


def _key(env: Mapping[str, str], rank: int) -> str:
    return f"{_KEY}{_job_id(env)}/{rank}"


def _done_key(env: Mapping[str, str]) -> str:
    return f"{_KEY}{_job_id(env)}/done"


def _open_store(env: Mapping[str, str]) -> tuple[Any, str] | tuple[None, None]:
    """The store every rank can reach (see the module docstring), or (None, None)."""
    try:
        from datetime import timedelta

        import torch.distributed as dist
    except Exception:  # pragma: no cover - torch without distributed
        return None, None
    if not dist.is_available():  # pragma: no cover
        return None, None
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        try:
            store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                                  timeout=timedelta(seconds=_CONNECT_TIMEOUT))
            return store, "agent store"
        except Exception:
            pass
    try:
        if dist.is_initialized():
            return dist.distributed_c10d._get_default_store(), "process-group store"
    except Exception:
        pass
    return None, None


def _write_atomic(path: Path, text: str) -> None:
    from ..outputs.io import write_text_atomic  # only on ranks > 0 without a store: keeps start-up light

    write_text_atomic(path, text)


def gather(records: Sequence[Mapping[str, Any]], info: RankInfo, timeout: float = DEFAULT_TIMEOUT,
           environ: Mapping[str, str] | None = None, poll: float = 0.05,
           since: float | None = None) -> GatherResult | None:
    """Send this rank's ``records`` to rank 0; on rank 0, return every rank's (None on the others).

    Each record gets ``"rank"``. Rank 0 waits up to ``timeout`` seconds; ranks
    that sent nothing by then are listed in ``missing``. Files older than
    ``since`` (a ``time.time()``; the plugin passes its start less a minute)
    are left from an earlier job and ignored.
    """
    env = os.environ if environ is None else environ
    own = [{**r, "rank": info.rank} for r in records]
    store, store_name = _open_store(env)
    how = "local"
    folder = exchange_dir(env)
    if info.rank != 0:
        message = json.dumps({"rank": info.rank, "world_size": info.world_size, "records": own})
        if store is not None:
            try:
                store.set(_key(env, info.rank), message)
                return None
            except Exception:
                pass
        _write_atomic(folder / f"rank-{info.rank}.json", message)
        return None

    by_rank: dict[int, list[dict[str, Any]]] = {0: own}
    via: dict[int, str] = {0: "local"}
    pending = set(range(1, info.world_size))
    deadline = time.monotonic() + max(0.0, timeout)
    while pending:
        for rank in sorted(pending):
            payload: str | None = None
            if store is not None:
                try:
                    if store.check([_key(env, rank)]):
                        payload, how = store.get(_key(env, rank)).decode("utf-8"), store_name or "store"
                except Exception:
                    store = None  # gone (e.g. the tests destroyed their group): files only from now on
            path = folder / f"rank-{rank}.json"
            if payload is None and path.exists():
                try:
                    if since is not None and path.stat().st_mtime < since:
                        path.unlink()  # left by an earlier job with the same id
                        continue
                    payload, how = path.read_text(encoding="utf-8"), "file"
                except OSError:
                    payload = None
            if payload is None:
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue  # not written by our atomic writer: try again
            if how == "file":
                path.unlink(missing_ok=True)
            by_rank[rank] = [{**r, "rank": rank} for r in data.get("records", [])]
            via[rank] = how
            pending.discard(rank)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    try:
        folder.rmdir()
    except OSError:
        pass
    gathered = [r for rank in sorted(by_rank) for r in by_rank[rank]]
    return GatherResult(gathered, sorted(pending), via)


def release(info: RankInfo, environ: Mapping[str, str] | None = None) -> None:
    """Rank 0, once its report and files are out: let the other ranks exit (see :func:`wait_released`)."""
    env = os.environ if environ is None else environ
    store, _ = _open_store(env)
    if store is not None and info.rank == 0:
        try:
            store.set(_done_key(env), "1")
        except Exception:
            pass


def wait_released(info: RankInfo, timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] | None = None,
                  poll: float = 0.05) -> bool:
    """A rank > 0 that sent its records through a store: wait until rank 0 calls :func:`release` (True), or
    ``timeout`` seconds (False). Without a store it returns at once (False)."""
    env = os.environ if environ is None else environ
    store, _ = _open_store(env)
    if store is None or info.rank == 0:
        return False
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            if store.check([_done_key(env)]):
                return True
        except Exception:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
