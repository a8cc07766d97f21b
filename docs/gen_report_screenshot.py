"""Make the screenshots of ``docs/report.md`` from a real run of the example tests.

    python docs/gen_report_screenshot.py             # writes docs/img/report.png and docs/img/report-params.png

Runs ``pytest examples --flops-html`` (the project's example tests, the main
job of the README), then loads the report in headless Chromium (Debian:
``apt-get install -y chromium``; or set ``PYTEST_FLOPS_CHROMIUM``) with one
test selected and takes a screenshot per view. Nothing is drawn by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
SELECTED = "examples/test_transformer.py::test_encoder_inference"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--hide-scrollbars", "--virtual-time-budget=5000", "--force-device-scale-factor=1"]
#: (file, URL hash after the selected row, window size)
SHOTS = (("report.png", "", "1280,1180"), ("report-params.png", "&metric=params&zoom=layers.0", "1280,1000"))


def find_browser() -> str | None:
    """A headless-capable Chrome or Chromium: ``PYTEST_FLOPS_CHROMIUM``, else the first of :data:`BROWSERS` on
    ``PATH`` (also what tests/test_html_browser.py runs the report in)."""
    for name in (os.environ.get("PYTEST_FLOPS_CHROMIUM", ""),) + BROWSERS:
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def browser() -> str:
    return find_browser() or sys.exit(
        "gen_report_screenshot.py: no Chromium found (apt-get install -y chromium, or set PYTEST_FLOPS_CHROMIUM)")


def example_report(out: Path) -> Path:
    """The HTML report of ``pytest examples`` (as the README's main job runs it)."""
    report = out / "report.html"
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider",
                           f"--flops-html={report}"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not report.exists():
        sys.exit(f"pytest examples failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return report


def row_of(report: Path, nodeid: str) -> int:
    page = report.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script id="flops-data" type="application/json">(.*?)</script>', page, re.S)[1])
    return next(i for i, row in enumerate(data["rows"]) if row["nodeid"] == nodeid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMG, help="folder for the PNG files (default docs/img)")
    args = parser.parse_args()
    chromium = browser()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = example_report(Path(tmp))
        row = row_of(report, SELECTED)
        for name, state, size in SHOTS:
            shot = args.out / name
            subprocess.run([chromium, *FLAGS, f"--window-size={size}", f"--screenshot={shot}",
                            f"{report.as_uri()}#test={row}{state}"], capture_output=True, timeout=180, check=True)
            print(f"wrote {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}")


if __name__ == "__main__":
    main()
