"""Many processes and many devices: xdist, torchrun ranks, collectives, devices, timing, DataParallel.

The torchrun tests launch ``python -m torch.distributed.run --standalone
--nproc-per-node=2 -m pytest`` (gloo, CPU) on a small suite: one where the
tests create a process group, one where they do not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first count imports it; in-process pytester runs must not re-import it)

from pytest_flops import count
from pytest_flops.plugin.gather import RankInfo, exchange_dir, gather, rank_info
from pytest_flops.counting.counter import FlopCounter
from pytest_flops.outputs.terminal import columns, render_table, totals

TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
_RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK", "ROLE_RANK",
             "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT")

# A suite whose tests spread over xdist workers: budgets, a whole-test measurement, two measurements, a failure
# (SMALL: test_small's width, 16 unless a test changes it).
SUITE = """
import pytest, torch
from torch import nn

def mlp(width):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))

SMALL = 16

@pytest.mark.max_flops("1M")
def test_small(flops):
    flops(mlp(SMALL), torch.randn(4, SMALL))

@pytest.mark.max_flops("10M", params="2K")
def test_params_over(flops):
    flops(mlp(32), torch.randn(4, 32))

def test_two(flops):
    flops(mlp(8), torch.randn(2, 8))
    flops(mlp(8), torch.randn(3, 8))

@pytest.mark.max_flops("1M")
def test_whole():
    mlp(24)(torch.randn(5, 24))

@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(flops, n):
    flops(mlp(4 * n), torch.randn(n, 4 * n))
"""


#: For the pytest sessions these tests start in new interpreters (xdist workers, torchrun ranks): plugins of
#: this environment that they do not use, hypothesis's above all (it imports all of hypothesis, about 1 s).
LEAN = ("-p", "no:hypothesispytest", "-p", "no:anyio")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RANK_ENV and k != "GITHUB_STEP_SUMMARY"}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _report_rows(text: str) -> list[list[str]]:
    """The cells of the "flops report" table's rows (and total lines), split on runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"=+ flops report =+", line))
    out = []
    for line in lines[start + 1:]:
        if re.match(r"^\d+ tests?, ", line) or line.startswith("="):
            break
        if line.startswith("-") or line.startswith("test "):
            continue
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def _markdown_rows(text: str) -> tuple[list[str], list[list[str]]]:
    table = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return cells[0], cells[2:]


def _drop_column(header: list[str], rows: list[list[str]], name: str) -> list[list[str]]:
    if name not in header:
        return rows
    i = header.index(name)
    return [r[:i] + r[i + 1:] for r in rows]


# -- xdist ------------------------------------------------------------------------
def test_xdist_gives_the_serial_report_json_markdown_and_baseline(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``-n 2``: the controller reports what a serial run reports, each row naming its worker; one writer;
    the gate fails the test that grew past the baseline and collects every test.

    The sessions run in this process (pytester); only the two xdist workers are new interpreters."""
    for k in _RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    # The baseline: test_small was smaller, test_whole did not exist yet.
    pytester.makepyfile(test_suite=SUITE.replace("SMALL = 16", "SMALL = 8"))
    pytester.runpytest("-p", "no:cacheprovider", "--flops-save-baseline=old.json",
                       "--deselect=test_suite.py::test_whole").assert_outcomes(passed=5, failed=1)
    pytester.makepyfile(test_suite=SUITE)
    runs = {}
    for name, args in (("serial", ()), ("xdist", ("-n", "2"))):
        summary = pytester.path / f"{name}-step-summary.md"
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        result = pytester.runpytest(
            "-p", "no:cacheprovider", *LEAN, *args, "--flops-report", f"--flops-json={name}.json",
            f"--flops-markdown={name}.md", f"--flops-save-baseline={name}-baseline.json", "--flops-baseline=old.json")
        result.assert_outcomes(passed=5, failed=2)
        result.stdout.fnmatch_lines(["*1 regressed, 5 unchanged, 1 new",
                                     "FAILED test_suite.py::test_small - Failed: flops baseline: Sequential grew*"])
        runs[name] = result.stdout.str(), summary.read_text()
    assert [p.name for p in pytester.path.iterdir() if p.name.endswith(".tmp")] == []

    # The terminal report: the same rows (run order and the worker column aside), both workers named.
    serial_rows, xdist_rows = _report_rows(runs["serial"][0]), _report_rows(runs["xdist"][0])
    body = [r for r in xdist_rows if "::" in r[0]]
    worker = [c for r in body for c in r if re.fullmatch(r"gw\d", c)]
    assert len(worker) == len(body) and set(worker) == {"gw0", "gw1"}
    assert sorted([c for c in r if not re.fullmatch(r"gw\d", c)] for r in xdist_rows) == sorted(serial_rows)
    assert len(serial_rows) == 9  # 8 measurements and the total
    assert {r[0].split(" [")[0] for r in body} == {f"test_suite.py::{t}" for t in (
        "test_small", "test_params_over", "test_two", "test_whole", "test_param[1]", "test_param[2]", "test_param[3]")}
    assert runs["xdist"][0].count("flops report") == 1

    # JSON: the same tests and summary, each test naming its worker.
    docs = {name: json.loads((pytester.path / f"{name}.json").read_text()) for name in runs}
    assert {t["worker"] for t in docs["xdist"]["tests"]} == {"gw0", "gw1"}
    assert {t["worker"] for t in docs["serial"]["tests"]} == {None}

    def tests(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted(({k: v for k, v in t.items() if k != "worker"} for t in doc["tests"]),
                      key=lambda t: t["nodeid"])

    assert tests(docs["xdist"]) == tests(docs["serial"])
    assert docs["xdist"]["summary"] == docs["serial"]["summary"]

    # Markdown (file and step summary, written once): the same rows, run order and worker aside.
    for name in runs:
        assert runs[name][1].count("### pytest-flops") == 1
    markdown = {name: _markdown_rows((pytester.path / f"{name}.md").read_text()) for name in runs}
    header, rows = markdown["xdist"]
    assert sorted(_drop_column(header, rows, "worker")) == sorted(markdown["serial"][1])

    # Baseline files: identical.
    assert (pytester.path / "xdist-baseline.json").read_text() == (pytester.path / "serial-baseline.json").read_text()


# -- torchrun ---------------------------------------------------------------------------
TORCHRUN_PLAIN = """
import os, pytest, torch
RANK = int(os.environ["RANK"])

@pytest.mark.max_flops("10K")  # per rank: rank 1 runs a wider layer and goes over
def test_budget_per_rank(flops):
    width = 16 if RANK == 0 else 64
    flops(torch.nn.Linear(width, width), torch.randn(4, width))

def test_same_on_every_rank(flops):
    flops(torch.nn.Linear(8, 8), torch.randn(2, 8))
"""

TORCHRUN_GROUP = """
import pytest, torch, torch.distributed as dist

@pytest.fixture(scope="session")
def group():
    dist.init_process_group("gloo")  # env:// from torchrun; left initialised to the end on purpose
    yield dist.group.WORLD

def test_collectives_cost_nothing(flops, group):
    layer = torch.nn.Linear(4, 4)
    with flops.counting(layer, ops="all") as counter:
        y = layer(torch.ones(3, 4))
        dist.all_reduce(y)
        parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, y)
        dist.broadcast(y, src=0)
        dist.barrier()
    m = counter.measurement
    assert m.uncounted == {}, m.uncounted
    assert list(m.by_op) == ["aten.addmm"]  # the collectives count nothing

def test_timed(flops, group):
    m = flops(torch.nn.Linear(32, 32), torch.randn(16, 32), timed=True)
    assert m.extra["time_s"] > 0
"""


def _torchrun(tmp_path: Path, suite: str | dict[str, str], *args: str
              ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    files = suite if isinstance(suite, dict) else {"test_suite.py": suite}
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    summary = tmp_path / "step-summary.md"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *LEAN, "--flops-report",
           "--flops-json=out.json", *args]
    # torchrun's agent makes a torchelastic_* log folder in the temporary directory: keep it inside tmp_path.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(cmd, cwd=tmp_path, env=_clean_env(GITHUB_STEP_SUMMARY=str(summary), TMPDIR=str(scratch)),
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("torchelastic_")] == [], list(scratch.iterdir())
    assert output.count("flops report") == 1, output
    assert summary.read_text().count("### pytest-flops") == 1  # rank 0 alone writes files
    return proc, json.loads((tmp_path / "out.json").read_text())


def test_torchrun_rank0_reports_every_rank_once(tmp_path: Path) -> None:
    """One torchrun job, two files: tests without a process group (rank 1 fails its budget) and tests of a
    gloo group the suite initialises and leaves up (collectives count nothing; a timed measurement)."""
    proc, doc = _torchrun(tmp_path, {"test_plain.py": TORCHRUN_PLAIN, "test_group.py": TORCHRUN_GROUP})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0  # rank 1 failed its budget
    header = next(line for line in output.splitlines() if line.startswith("test "))
    assert re.split(r"\s{2,}", header)[-3:] == ["rank", "FLOP/s", "outcome"]
    rows = [r for r in _report_rows(output) if r[0].startswith("test_plain.py::")]
    assert [(r[0], r[1], r[-3], r[-1]) for r in rows] == [
        ("test_plain.py::test_budget_per_rank", "2.05K", "0", "passed"),
        ("test_plain.py::test_same_on_every_rank", "256", "0", "passed"),
        ("test_plain.py::test_budget_per_rank", "32.77K", "1", "failed"),
        ("test_plain.py::test_same_on_every_rank", "256", "1", "passed"),
    ]
    macs = 3 * 4 * 4 + 16 * 32 * 32  # the group file's two tests, on each rank; ops="all" adds the bias (3 x 4)
    group = 2 * macs + 3 * 4
    assert doc["summary"]["by_rank"] == {"0": {"flops": 2304 + group, "macs": 1152 + macs, "measurements": 4},
                                         "1": {"flops": 33024 + group, "macs": 16512 + macs, "measurements": 4}}
    assert doc["summary"]["flops"] == 2304 + 33024 + 2 * group
    for line in (r"rank 0 total +35.18K +17.58K\b", r"rank 1 total +65.90K +32.94K\b",
                 r"world total +101.08K +50.53K\b", r"4 tests, 8 measurements on 2 ranks$"):
        assert len(re.findall(f"^{line}", output, re.M)) == 1, (line, output)
    # torchrun stops every rank once rank 1 exits failed: rank 1 waited until rank 0 had written everything.
    assert "flops results written to" in output
    assert [(t["nodeid"], t["rank"], t["outcome"]) for t in doc["tests"]] == [
        (f"test_{f}.py::test_{name}", rank, "failed" if (rank, name) == (1, "budget_per_rank") else "passed")
        for rank in (0, 1) for f, name in (("group", "collectives_cost_nothing"), ("group", "timed"),
                                           ("plain", "budget_per_rank"), ("plain", "same_on_every_rank"))]
    assert all(t["measurements"][0]["uncounted"] == {} for t in doc["tests"] if "group" in t["nodeid"])


TORCHRUN_RANK_DIES = """
import os, time, torch
RANK = int(os.environ["RANK"])

def test_measured(flops):
    flops(torch.nn.Linear(16, 16), torch.randn(4, 16))

def test_rank1_dies():
    if RANK == 1:
        for _ in range(600):  # once rank 0 has measured (a loaded machine may be slow to get there)
            if os.path.exists("rank0-busy"):
                break
            time.sleep(0.1)
        os._exit(3)  # no report, no records: torchrun then stops rank 0 with SIGTERM
    open("rank0-busy", "w").close()
    time.sleep(60)  # rank 0 is still busy when it is stopped
"""


def test_torchrun_rank0_writes_what_it_has_when_a_rank_dies(tmp_path: Path) -> None:
    """Issue 12, case 5: rank 0 is SIGTERMed mid-test; it still prints its report and writes the JSON and the
    Markdown, marked incomplete, naming the rank that sent nothing."""
    begin = time.monotonic()
    proc, doc = _torchrun(tmp_path, TORCHRUN_RANK_DIES, "-o", "flops_gather_timeout=1")  # waits 1 s, not 5
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and time.monotonic() - begin < 50, output
    assert doc["complete"] is False, doc
    assert doc["incomplete"]["stopped"] == "the run was stopped by SIGTERM"
    assert doc["incomplete"]["missing_ranks"] == [1] and doc["incomplete"]["timed_out"] is False
    assert [(t["nodeid"].split("::")[1], t["rank"]) for t in doc["tests"]] == [("test_measured", 0)]
    why = "the run was stopped by SIGTERM; rank 1 of 2 sent no measurements before rank 0 stopped"
    assert doc["incomplete"]["why"] == why
    assert "incomplete run: the run was stopped by SIGTERM" in output
    assert f"**Incomplete run:** {why}." in (tmp_path / "step-summary.md").read_text()


def test_a_rank_stopped_early_sends_what_it_has() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": f"stopped-{os.getpid()}"}
    gather([{"nodeid": "t1", "measurements": []}], RankInfo(1, 2), 5, env, stopped="the run was stopped by SIGTERM")
    result = gather([{"nodeid": "t0", "measurements": []}], RankInfo(0, 2), timeout=10, environ=env)
    assert result is not None and [r["nodeid"] for r in result.records] == ["t0", "t1"]
    assert result.missing == [] and result.stopped == {1: "the run was stopped by SIGTERM"}


def test_a_sigterm_while_rank0_waits_ends_the_wait(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the session is finishing, the plugin's guard only counts a SIGTERM (no KeyboardInterrupt then); a new
    one ends rank 0's wait for the other ranks: they are missing, not timed out. A real signal to this process,
    sent (by the suite's conftest, as its session finishes) only once the plugin's handler is in place."""
    pytester.makeconftest("""
        import signal, threading, pytest

        @pytest.hookimpl(wrapper=True)  # around the plugin's sessionfinish, where rank 0 waits
        def pytest_sessionfinish(session):
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            threading.Timer(0.3, signal.raise_signal, (signal.SIGTERM,)).start()
            return (yield)
    """)
    pytester.makepyfile(test_suite=TORCHRUN_PLAIN.replace('int(os.environ["RANK"])', "0"))
    for k in _RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in dict(RANK="0", WORLD_SIZE="2", MASTER_PORT=f"term-{os.getpid()}").items():
        monkeypatch.setenv(k, v)
    begin = time.monotonic()
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "-o", "flops_gather_timeout=30",
                                "--flops-json=out.json")
    assert time.monotonic() - begin < 10  # not the 30 s timeout
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["incomplete"]["missing_ranks"] == [1] and doc["incomplete"]["timed_out"] is False
    assert doc["incomplete"]["why"] == "rank 1 of 2 sent no measurements before rank 0 stopped"


def test_ranks_exchange_files_without_torchrun(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK/WORLD_SIZE from another launcher, no agent store, no process group: the file fallback.

    Both ranks run in this process (pytester), one after the other: rank 1 leaves its record and ends, rank 0
    finds it. That the ranks run at once is the torchrun tests' part.
    """
    pytester.makepyfile(test_suite=TORCHRUN_PLAIN)
    port = f"files-{os.getpid()}"
    ranks = dict(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    for k in _RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in dict(COLUMNS="200", **ranks).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RANK", "1")
    rank1 = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist", "--flops-report")
    rank1.assert_outcomes(passed=1, failed=1)
    assert "flops report" not in rank1.stdout.str()
    monkeypatch.setenv("RANK", "0")
    rank0 = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist", "--flops-report")
    rank0.assert_outcomes(passed=2)
    rank0.stdout.re_match_lines([r"test_suite.py::test_budget_per_rank +32.77K .* 1 +failed",
                                 r"rank 1 total +33.02K", r"world total +35.33K"])
    assert not exchange_dir(ranks).exists()


def test_rank0_stops_waiting_after_the_timeout(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_suite=TORCHRUN_PLAIN.replace('int(os.environ["RANK"])', "0"))
    for k in _RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", f"timeout-{os.getpid()}")
    begin = time.monotonic()
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report", "-o", "flops_gather_timeout=0.3",
                                "--flops-json=out.json")
    assert time.monotonic() - begin < 30
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())  # the JSON says which rank is missing, and why
    assert doc["complete"] is False and doc["incomplete"]["missing_ranks"] == [1] and doc["incomplete"]["timed_out"]
    assert doc["incomplete"]["why"] == "rank 1 of 2 sent no measurements within flops_gather_timeout (0.3 s)"
    result.stdout.fnmatch_lines(["rank 0 total*2.30K*", "world total*2.30K*",
                                 "incomplete run: rank 1 of 2 sent no measurements within flops_gather_timeout (0.3 s)"])


# -- collect.py -------------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, RankInfo(1, 2, 1)),
    ({"RANK": "3", "WORLD_SIZE": "8"}, RankInfo(3, 8, 3)),
    ({"RANK": "2", "WORLD_SIZE": "2"}, None),
    ({"RANK": "x", "WORLD_SIZE": "2"}, None),
])
def test_rank_info(env: dict[str, str], expected: RankInfo | None) -> None:
    assert rank_info(env) == expected


def test_gather_through_files_in_threads(tmp_path: Path) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": f"threads-{os.getpid()}"}
    folder = exchange_dir(env)
    folder.mkdir(mode=0o700)
    stale = folder / "rank-2.json"
    stale.write_text(json.dumps({"rank": 2, "records": [{"nodeid": "stale", "measurements": []}]}))
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    senders = [threading.Thread(target=gather, args=([{"nodeid": f"t{r}", "measurements": []}], RankInfo(r, 3), 5,
                                                     env))
               for r in (1, 2)]
    senders[0].start()
    senders[0].join()
    later = threading.Timer(0.3, senders[1].start)
    later.start()
    result = gather([{"nodeid": "t0", "measurements": []}], RankInfo(0, 3), timeout=10, environ=env,
                    since=time.time() - 60)
    later.join()
    senders[1].join()
    assert result is not None
    assert [(r["nodeid"], r["rank"]) for r in result.records] == [("t0", 0), ("t1", 1), ("t2", 2)]
    assert result.missing == [] and result.via == {0: "local", 1: "file", 2: "file"}
    assert not folder.exists()


# -- report -----------------------------------------------------------------------------
def _record(nodeid: str, flops: int, rank: int | None, **extra: Any) -> dict[str, Any]:
    m = {"name": "M", "flops": flops, "macs": flops // 2, "params": 1, "devices": ["cpu"], "extra": extra}
    return {"nodeid": nodeid, "measurements": [m], "rank": rank, "outcome": "passed"}


def test_totals_and_table_per_rank() -> None:
    records = [_record("t::a", 1000, 0), _record("t::a", 3000, 1), _record("t::b", 500, 1)]
    assert totals(records) == {"flops": 4500, "macs": 2250, "measurements": 3, "by_rank": {
        0: {"flops": 1000, "macs": 500, "measurements": 1}, 1: {"flops": 3500, "macs": 1750, "measurements": 2}}}
    lines = render_table(records, width=120, extra_columns=columns(records))
    assert lines[0].split()[-2:] == ["rank", "outcome"]
    assert [line.split("  ")[0] for line in lines[-4:-1]] == ["rank 0 total", "rank 1 total", "world total"]
    assert lines[-1] == "2 tests, 3 measurements on 2 ranks"
    single = [_record("t::a", 1000, None)]
    assert totals(single)["by_rank"] == {} and [h for h, _ in columns(single)] == []
    assert render_table(single)[-2].startswith("total")


def test_flops_per_second_column_only_with_timing() -> None:
    timed = [_record("t::a", 2_000_000, None, time_s=0.001, flops_per_s=2e9), _record("t::b", 10, None)]
    header, fn = columns(timed)[-1]
    assert header == "FLOP/s"
    lines = render_table(timed, extra_columns=columns(timed))
    assert "2.00G" in lines[2] and lines[3].split()[-2] == "-"


# -- collectives, devices, timing, DataParallel (in process) ----------------------------------
def test_collectives_are_zero_cost_not_uncounted() -> None:
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        x = torch.ones(4, 4)
        with FlopCounter(ops="all") as counter:
            dist.all_reduce(x)
            dist.all_gather([torch.empty_like(x)], x)
            with warnings.catch_warnings():  # deprecated names in recent torch, still what many codes call
                warnings.simplefilter("ignore", FutureWarning)
                dist.all_gather_into_tensor(torch.empty_like(x), x)
                dist.reduce_scatter_tensor(torch.empty_like(x), x)
            dist.broadcast(x, src=0)
            dist.barrier()
            dist.all_reduce(x, async_op=True).wait()
            y = funcol.all_reduce(x, "sum", dist.group.WORLD) + 1
        assert y.shape == (4, 4)
        m = counter.measurement
        assert m is not None and m.uncounted == {}
        assert m.by_op == {"aten.add": 16}
        # the payload each collective moved: 4x4 float32 = 64 bytes (all_gather's is its output list)
        moved = m.extra.get("collective_bytes", {})
        if TORCH < (2, 5) and "c10d.allreduce_" not in moved:
            pytest.skip("torch 2.4's eager c10d collectives do not reach a dispatch mode: no payload to record")
        assert moved["c10d.allreduce_"] == 2 * 64 and moved["c10d.broadcast_"] == 64
        assert moved["c10d.allgather_"] == 64 and moved["_c10d_functional.all_reduce"] == 64
        assert "c10d.barrier" not in moved
    finally:
        dist.destroy_process_group()


def test_devices_cpu_and_meta() -> None:
    layer = torch.nn.Linear(8, 8)
    assert count(layer, torch.randn(2, 8)).devices == ("cpu",)
    assert count(torch.nn.Linear(8, 8, device="meta"), torch.randn(2, 8, device="meta")).devices == ("meta",)


def test_timed_on_cpu_times_an_uncounted_run() -> None:
    layer = torch.nn.Linear(64, 64)
    calls = []
    layer.register_forward_hook(lambda *a: calls.append(
        torch._C._len_torch_dispatch_stack() + torch._C._len_torch_function_stack()))
    m = count(layer, torch.randn(32, 64), timed=True)
    assert calls == [1, 0]  # the second (timed) run has no counting mode on the stack
    assert m.extra["timer"] == "perf_counter" and m.extra["time_s"] > 0
    assert m.extra["flops_per_s"] == pytest.approx(m.flops / m.extra["time_s"])
    assert count(layer, torch.randn(32, 64)).extra == {}
    with pytest.raises(ValueError, match="needs compute=True"):
        count(layer, torch.randn(32, 64), timed=True, compute=False)


def test_timed_through_the_fixture_shows_flop_rate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_t="""
        import torch
        def test_timed(flops):
            m = flops(torch.nn.Linear(32, 32), torch.randn(8, 32), timed=True)
            assert m.extra["flops_per_s"] > 0
        def test_untimed(flops):
            flops(torch.nn.Linear(32, 32), torch.randn(8, 32))
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--flops-report")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["test *FLOP/s*outcome", "*test_timed *cpu *[0-9.]*[KMG] *passed",
                                 "*test_untimed *cpu *- *passed"])


def test_data_parallel_on_cpu_counts_the_module() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)
    plain = count(model, x)
    wrapped = count(torch.nn.DataParallel(model), x)  # no GPU: DataParallel calls the module itself
    assert (wrapped.flops, wrapped.params) == (plain.flops, plain.params)
    assert wrapped.by_module["module.0"] == plain.by_module["0"]


@CUDA
def test_cuda_device_and_cuda_event_timing() -> None:
    layer = torch.nn.Linear(256, 256, device="cuda")
    m = count(layer, torch.randn(64, 256, device="cuda"), timed=True)
    assert m.devices == ("cuda:0",)
    assert m.extra["timer"] == "cuda_event" and m.extra["time_s"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_data_parallel_replicas_are_counted() -> None:
    # Not yet run on real GPUs; the thread mechanism is tested on CPU in test_counter.py (_Fanout).
    model = torch.nn.Linear(64, 64).cuda()
    x = torch.randn(32, 64, device="cuda")
    plain = count(model, x)
    wrapped = count(torch.nn.DataParallel(model, device_ids=[0, 1]), x)
    assert wrapped.flops == plain.flops
    assert set(wrapped.devices) == {"cuda:0", "cuda:1"}
