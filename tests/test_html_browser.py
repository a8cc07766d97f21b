"""The HTML report in a real browser: headless Chromium loads it, clicks through it and reports what it saw.

A check script appended to a copy of the report drives the page (select a
test, switch the metric, zoom, hover, sort, filter) and writes its findings
into the DOM, which ``chromium --headless --dump-dom`` prints; a script put
first in ``<head>`` records every error and ``console.error``. Skipped, with
the reason, where no Chromium is installed (Debian: ``apt-get install -y
chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_flops import count
from pytest_flops.outputs.html import write_html


def _screenshot_script() -> Any:
    """docs/gen_report_screenshot.py, which finds the browser its screenshots and these tests run in."""
    path = Path(__file__).resolve().parents[1] / "docs" / "gen_report_screenshot.py"
    spec = importlib.util.spec_from_file_location("gen_report_screenshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BROWSER = _screenshot_script().find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium found (apt-get install -y chromium, or set "
                                                        "PYTEST_FLOPS_CHROMIUM to a Chrome/Chromium binary)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--window-size=1280,1400"]

CATCH_ERRORS = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("rejection: " + e.reason); });
(function () { var original = console.error; console.error = function () {
  window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); }; })();
</script>"""

# Runs after the report's own script: every step synchronous (the page redraws on each event); the findings
# are written a virtual second later, as JSON.
CHECKS = """<script>
(function () {
  var out = {steps: []};
  function nodes() {
    return Array.prototype.map.call(document.querySelectorAll("#chart .node"), function (n) {
      return {q: n.getAttribute("data-q"), value: +n.getAttribute("data-value"), anc: n.classList.contains("anc"),
              width: n.getBoundingClientRect().width, top: parseFloat(n.style.top)};
    });
  }
  function chart() {
    var c = document.getElementById("chart");
    return {metric: c.getAttribute("data-metric"), zoom: c.getAttribute("data-zoom"), width: c.clientWidth,
            title: document.getElementById("detail-title").textContent, nodes: nodes(),
            crumbs: document.getElementById("crumbs").textContent};
  }
  function rows() {
    return Array.prototype.filter.call(document.querySelectorAll("#tests tbody tr"), function (tr) { return !tr.hidden; })
      .map(function (tr) { return tr.getAttribute("data-nodeid") + "|" + tr.cells[0].textContent; });
  }
  try {
    var want = __WANT__;
    out.ready = document.documentElement.getAttribute("data-ready");
    out.rows = rows();
    out.header = Array.prototype.map.call(document.querySelectorAll("#tests thead th"), function (th) { return th.textContent; });
    out.cards = document.getElementById("cards").textContent;
    out.env = document.getElementById("env").textContent;
    var tr = Array.prototype.filter.call(document.querySelectorAll("#tests tbody tr"), function (tr) {
      return tr.getAttribute("data-nodeid") === want.nodeid; })[0];
    tr.click();
    out.selected = chart();
    out.selectedRow = tr.classList.contains("sel");
    var top = document.querySelector('#chart .node[data-q="' + want.top + '"]');
    top.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: 300, clientY: 500}));
    out.tip = document.getElementById("tip").textContent;
    out.tipShown = document.getElementById("tip").style.display;
    top.dispatchEvent(new MouseEvent("mouseleave"));
    document.querySelector('#detail button[data-metric="params"]').click();
    out.params = chart();
    document.querySelector('#detail button[data-metric="flops"]').click();
    document.querySelector('#chart .node[data-q="' + want.zoom + '"]').click();
    out.zoomed = chart();
    out.hashAfterZoom = location.hash;
    document.querySelector('#crumbs a').click();
    out.unzoomed = chart();
    document.querySelector('#tests th[data-col="flops"]').click();
    out.sortedDown = rows();
    document.querySelector('#tests th[data-col="flops"]').click();
    out.sortedUp = rows();
    var filter = document.getElementById("filter");
    filter.value = want.filter;
    filter.dispatchEvent(new Event("input"));
    out.filtered = rows();
    out.shown = document.getElementById("shown").textContent;
  } catch (e) {
    out.exception = String(e && e.stack || e);
  }
  setTimeout(function () {  // later errors too (timers, redraws): --virtual-time-budget lets this run before the dump
    out.errors = window.__errors;
    var pre = document.createElement("pre");
    pre.id = "selfcheck";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 1000);
})();
</script>"""


def run_browser(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    assert BROWSER is not None
    return subprocess.run([BROWSER, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def drive(report: Path, want: dict[str, Any]) -> dict[str, Any]:
    """Load a copy of ``report`` with the check script in Chromium; the findings it wrote into the DOM."""
    page = report.read_text(encoding="utf-8")
    page = page.replace("<head>", "<head>" + CATCH_ERRORS, 1)
    page = page.replace("</body>", CHECKS.replace("__WANT__", json.dumps(want)) + "</body>", 1)
    checked = report.with_name("checked-" + report.name)
    checked.write_text(page, encoding="utf-8")
    done = run_browser("--virtual-time-budget=5000", "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="selfcheck">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no self-check in the dumped DOM; chromium exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.head = nn.Linear(32 * 8 * 8, 64)  # most of the params, few of the FLOPs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).flatten(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    net = count(Net(), torch.randn(2, 3, 8, 8)).to_dict()
    mlp = count(nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)), torch.randn(4, 16)).to_dict()
    records = [
        {"nodeid": "tests/test_models.py::test_net", "outcome": "passed", "worker": None, "measurements": [net],
         "budget": {"flops": 2 * net["flops"]}, "verdicts": [{"usage": {"flops": 0.5}, "excesses": []}]},
        {"nodeid": "tests/test_models.py::test_mlp[<b>&amp;</b>]", "outcome": "failed", "worker": None,
         "measurements": [mlp], "budget": None, "verdicts": None},
    ] + [{"nodeid": f"tests/test_many.py::test_case[{i}]", "outcome": "passed", "worker": None,
          "measurements": [mlp], "budget": None, "verdicts": None} for i in range(5)]
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(path, records, environment={"torch": torch.__version__, "pytest_flops": "0.1.0"})
    return path, records


def test_the_report_works_in_chromium(report: tuple[Path, list[dict[str, Any]]]) -> None:
    path, records = report
    net = records[0]["measurements"][0]
    (top, top_flops), = count(Net(), torch.randn(2, 3, 8, 8)).top_modules(1)
    assert top == "body.2"  # the 32 -> 32 conv: the most FLOPs
    seen = drive(path, {"nodeid": records[0]["nodeid"], "top": top, "zoom": "body", "filter": "test_case"})
    assert "exception" not in seen, seen.get("exception")
    assert seen["errors"] == []
    assert seen["ready"] == "1"
    # the table has every test, test ids shown as text (the <b> of a parametrize id is not markup)
    assert sorted(r.split("|")[0] for r in seen["rows"]) == sorted(r["nodeid"] for r in records)
    assert {"test", "FLOPs", "MACs", "params", "budget", "use", "outcome"} <= set(seen["header"])
    assert "measurements7" in seen["cards"].replace(" ", "") and "pytest-flops0.1.0" in seen["env"].replace(" ", "")
    # the chart of the selected test shows its top module, sized by its FLOPs
    chart = seen["selected"]
    assert seen["selectedRow"] and chart["title"] == records[0]["nodeid"] and chart["metric"] == "flops"
    by_q = {n["q"]: n for n in chart["nodes"]}
    assert by_q["Net"]["value"] == net["flops"] and by_q[top]["value"] == net["by_module"][top] == top_flops
    assert abs(by_q[top]["width"] / by_q["Net"]["width"] - top_flops / net["flops"]) < 0.01
    assert by_q[top]["top"] > by_q["body"]["top"] > by_q["Net"]["top"]  # an icicle: children below their parent
    assert top in seen["tip"] and "Conv2d" in seen["tip"] and seen["tipShown"] == "block"
    # the metric switch: the same tree sized by params, where the head has most of them
    params = {n["q"]: n for n in seen["params"]["nodes"]}
    assert seen["params"]["metric"] == "params"
    assert params["Net"]["value"] == net["params"] and params["head"]["value"] == net["module_params"]["head"]
    assert params["head"]["width"] > 0.85 * params["Net"]["width"] > by_q["head"]["width"]
    # zoom: the subtree fills the width, its ancestors stay above as the way back
    zoomed = seen["zoomed"]
    body = next(n for n in zoomed["nodes"] if n["q"] == "body" and not n["anc"])
    assert zoomed["zoom"] == "body" and "zoom=body" in seen["hashAfterZoom"]
    assert abs(body["width"] - zoomed["width"]) < 2 and [n["q"] for n in zoomed["nodes"] if n["anc"]] == ["Net"]
    assert "stem" not in {n["q"] for n in zoomed["nodes"]}
    assert seen["unzoomed"]["zoom"] == "Net"
    # sorting by FLOPs, both ways, and the filter box
    flops = {r["nodeid"]: r["measurements"][0]["flops"] for r in records}
    down = [flops[r.split("|")[0]] for r in seen["sortedDown"]]
    assert down == sorted(down, reverse=True) and down[0] == net["flops"]
    assert [flops[r.split("|")[0]] for r in seen["sortedUp"]] == sorted(down)
    assert len(seen["filtered"]) == 5 and all("test_case" in r for r in seen["filtered"])
    assert seen["shown"] == "5 of 7 measurements shown"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def png_colours(data: bytes) -> int:
    """Distinct byte values in the decompressed image data: a blank page has very few."""
    chunks, i = [], 8
    while i < len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"IDAT":
            chunks.append(data[i + 8:i + 8 + length])
        i += 12 + length
    return len(set(zlib.decompress(b"".join(chunks))))


def test_a_screenshot_of_the_report_shows_a_drawn_page(report: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    path, _ = report
    shot = tmp_path / "report.png"
    done = run_browser(f"--screenshot={shot}", "--virtual-time-budget=5000", path.as_uri() + "#test=0&metric=params")
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1280, 1400)
    assert png_colours(data) > 100
