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
   rank 0 looks in both. The directory is private (mode 0700, owned by this
   user; :func:`private_dir_problem`): one that another user created, or a
   file another user owns, is refused, never read.

Every message is validated like a baseline (``record_problem``): a rank whose
message is malformed is reported as missing, with the reason.

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
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from ..outputs.records import TestRecord

__all__ = ["RankInfo", "GatherResult", "rank_info", "gather", "release", "wait_released", "exchange_dir",
           "private_dir_problem", "DEFAULT_TIMEOUT"]

#: Seconds rank 0 waits for the other ranks' records (they may still be running tests).
DEFAULT_TIMEOUT = 300.0
_CONNECT_TIMEOUT = 10.0
_KEY = "pytest_flops/records/"
_MAX_MESSAGE = 64 * 2**20  # bytes read of one rank's message


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a multi-process job."""

    rank: int
    world_size: int
    local_rank: int = 0


@dataclass
class GatherResult:
    """What rank 0 gathered: every rank's records (rank order), the ranks missing, and how each arrived."""

    records: list[TestRecord]
    missing: list[int] = field(default_factory=list)  # ranks whose records are not in ``records``
    via: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)  # rank -> why its message was not believed
    stopped: dict[int, str] = field(default_factory=dict)  # rank -> why it did not finish (it sent what it had)
    timed_out: bool = False  # some rank sent nothing within the timeout


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


def private_dir_problem(folder: Path, create: bool = True) -> str | None:
    """Make sure ``folder`` is this user's own exchange directory; say why not, else None.

    Created with mode 0700 when missing (with ``create``). An existing one must be a real
    directory (not a link) owned by this user and closed to others: another
    local user could otherwise pre-create it and plant records. (On Windows,
    without ``os.getuid``, only the link and the type are checked: the temp
    directory there is per-user.)
    """
    try:
        if create:
            os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create {folder}: {exc.strerror or exc}"
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot read {folder}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a directory (a link or a file is in its place)"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"{folder} belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    if hasattr(os, "getuid") and st.st_mode & 0o077:
        return f"{folder} is open to other users (mode {stat.S_IMODE(st.st_mode):o}, expected 700)"
    return None


def _write_file(folder: Path, rank: int, text: str) -> None:
    """A rank > 0 without a store: its message, atomically, into the private exchange directory."""
    problem = private_dir_problem(folder)
    if problem:
        sys.stderr.write(f"pytest-flops: rank {rank} cannot send its measurements: {problem}\n")
        return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".rank-{rank}.", suffix=".tmp")  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, folder / f"rank-{rank}.json")


def _read_file(path: Path, since: float | None) -> str | None:
    """The message in ``path``; None when absent, stale or not yet complete. Raises ``_Refused`` for a file
    this user did not write (another owner, a link, not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Refused(f"{path} cannot be opened safely: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"{path} is not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise _Refused(f"{path} belongs to uid {st.st_uid}, not to this user")
        if since is not None and st.st_mtime < since:
            path.unlink()  # left by an earlier job with the same id
            return None
        return f.read(_MAX_MESSAGE + 1).decode("utf-8", "replace")


class _Refused(Exception):
    """A record that rank 0 will not believe (the message says why)."""


def _records_of(payload: str, rank: int) -> tuple[list[TestRecord], str | None]:
    """The records in one rank's message, validated like a baseline, and why that rank did not finish
    (None: it did); raises ``_Refused``."""
    from ..outputs.baseline import record_problem
    from ..outputs.io import DocumentError, parse_json_document

    if len(payload) > _MAX_MESSAGE:
        raise _Refused(f"its message is larger than {_MAX_MESSAGE // 2**20} MiB")
    try:
        data = parse_json_document(payload)
    except DocumentError as exc:
        raise _Refused(f"its message {exc}") from None
    if not isinstance(data, dict) or data.get("rank") != rank or not isinstance(data.get("records"), list):
        raise _Refused(f"its message is not a pytest-flops message from rank {rank}")
    for record in data["records"]:
        problem = record_problem(record)
        if problem:
            raise _Refused(problem)
    stopped = data.get("stopped")
    if stopped is not None and (not isinstance(stopped, str) or len(stopped) > 1000):
        raise _Refused(f"its message's 'stopped' is not a short string: {str(stopped)[:40]!r}")
    from ..outputs.records import with_rank

    return [with_rank(r, rank) for r in data["records"]], stopped


def gather(records: Sequence[Mapping[str, Any]], info: RankInfo, timeout: float = DEFAULT_TIMEOUT,
           environ: Mapping[str, str] | None = None, poll: float = 0.05,
           since: float | None = None, stopped: str | None = None,
           stop: Callable[[], bool] | None = None) -> GatherResult | None:
    """Send this rank's ``records`` to rank 0; on rank 0, return every rank's (None on the others).

    Each record gets ``"rank"``. Rank 0 waits up to ``timeout`` seconds; ranks
    that sent nothing by then are listed in ``missing`` (``timed_out`` is set).
    ``stop()`` turning true ends the wait early (the plugin passes "a SIGTERM
    arrived since", see interrupt.py: torchrun stops the job when a rank
    died): what arrived is returned, the others are missing, not timed out.
    A rank whose message is not valid (or whose file another user wrote) is
    listed in ``missing`` and ``refused``. Files older than ``since`` (a
    ``time.time()``; the plugin passes its start less a minute) are left from
    an earlier job and ignored. ``stopped``: why this rank's run did not finish
    (a rank > 0 sends it with its records; rank 0 lists it in ``stopped``).
    """
    from ..outputs.records import with_rank

    env = os.environ if environ is None else environ
    own = [with_rank(r, info.rank) for r in records]
    store, store_name = _open_store(env)
    folder = exchange_dir(env)
    if info.rank != 0:
        message = json.dumps({"rank": info.rank, "world_size": info.world_size, "records": own,
                              **({"stopped": stopped} if stopped else {})})
        if store is not None:
            try:
                store.set(_key(env, info.rank), message)
                return None
            except Exception:
                pass
        _write_file(folder, info.rank, message)
        return None
    result = GatherResult(own, via={0: "local"})
    _wait_for_ranks(result, info, store, store_name, env, folder, timeout, poll, since, stop or (lambda: False))
    try:
        folder.rmdir()
    except OSError:
        pass
    return result


def _poll_rank(rank: int, store: Any, store_name: str | None, env: Mapping[str, str], folder: Path,
               since: float | None, file_ok: bool) -> tuple[str | None, str, Any]:
    """(message or None, how it came, the store: None once it failed) for one rank."""
    if store is not None:
        try:
            if store.check([_key(env, rank)]):
                return store.get(_key(env, rank)).decode("utf-8", "replace"), store_name or "store", store
        except Exception:
            store = None  # gone (e.g. the tests destroyed their group): files only from now on
    if not file_ok:
        return None, "file", store
    return _read_file(folder / f"rank-{rank}.json", since), "file", store


def _wait_for_ranks(result: GatherResult, info: RankInfo, store: Any, store_name: str | None,
                    env: Mapping[str, str], folder: Path, timeout: float, poll: float,
                    since: float | None, stop: Callable[[], bool]) -> None:
    by_rank: dict[int, list[TestRecord]] = {0: result.records}
    pending = set(range(1, info.world_size))
    deadline = time.monotonic() + max(0.0, timeout)
    file_problem: str | None = None
    stopped = False
    while pending and not (stopped := stop()):
        file_problem = private_dir_problem(folder, create=False) if os.path.lexists(folder) else None
        file_ok = os.path.lexists(folder) and file_problem is None
        for rank in sorted(pending):
            try:
                payload, how, store = _poll_rank(rank, store, store_name, env, folder, since, file_ok)
                if payload is None:
                    continue
                if how == "file":
                    (folder / f"rank-{rank}.json").unlink(missing_ok=True)
                by_rank[rank], why = _records_of(payload, rank)
                result.via[rank] = how
                if why:
                    result.stopped[rank] = why
            except _Refused as exc:
                result.refused[rank] = str(exc)
            pending.discard(rank)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if file_problem:
        result.refused.update({rank: f"the exchange directory {file_problem}" for rank in pending})
    result.records = [r for rank in sorted(by_rank) for r in by_rank[rank]]
    result.missing = sorted(pending | set(result.refused))
    result.timed_out = bool(pending) and not stopped


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
