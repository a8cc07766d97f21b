"""Regenerate the pytest output pasted in README.md and the docs from real runs.

    python docs/gen_output.py --python PLAIN_ENV/bin/python [PAGE ...]

Every ```console block of the pages below that starts with ``$ pytest`` is run
again, command by command, and its output replaced by what the run printed:
README.md and docs/budgets.md from the repository root, docs/quickstart.md and
docs/ci.md in a scratch project made of the page's own test code (ci.md's
third command onwards with the widened model the page describes). The terminal
width is the one of the block's ``=== test session starts ===`` line; the
``rootdir:`` line keeps the path the page shows.

The run must come from a plain environment, so the ``plugins:`` line shows
what a reader gets: torch, numpy (without it torch warns "Failed to
initialize NumPy" in a user's project; the repository's own pyproject.toml
filters that warning), pytest-flops installed from this checkout, and no
other pytest plugin. Make one with

    python -m venv /tmp/plain
    /tmp/plain/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /tmp/plain/bin/pip install numpy -e .

The script stops, naming them, if the environment has other pytest plugins.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: page -> (where its commands run, the file the page's test code goes to)
PAGES: dict[str, tuple[str, str | None]] = {
    "README.md": ("root", None),
    "docs/budgets.md": ("root", None),
    "docs/quickstart.md": ("project", "test_mlp.py"),
    "docs/ci.md": ("project", "tests/test_model.py"),
}
#: docs/ci.md: "widen one layer, MLP() to MLP(hidden=512) for the second block", from its third command on.
CI_GROWTH = (2, "nn.Sequential(MLP(), MLP())", "nn.Sequential(MLP(), MLP(hidden=512))")
_BLOCK = re.compile(r"^```console\n(\$ pytest.*?)^```$", re.MULTILINE | re.DOTALL)
_PYTHON = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_TEST_DEF = re.compile(r"^def test_", re.MULTILINE)


class NotPlain(Exception):
    pass


def run(python: str, command: str, cwd: Path, columns: int) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "FLOPS_")) and k not in ("PYTHONPATH", "GITHUB_STEP_SUMMARY",
                                                                   "PY_COLORS", "FORCE_COLOR", "CI")}
    env.update(COLUMNS=str(columns), PYTHONDONTWRITEBYTECODE="1")
    args = command.split()
    assert args[0] == "pytest", command
    proc = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout.rstrip("\n")
    plugins = re.search(r"^plugins: (.*)$", out, re.MULTILINE)
    others = [p for p in (plugins.group(1).split(", ") if plugins else []) if not p.startswith("flops-")]
    if others or not plugins:
        raise NotPlain(f"{python} is not a plain environment: pytest lists the plugins "
                       f"{plugins.group(1) if plugins else '(none: pytest-flops is not installed)'}")
    return out


def project_code(text: str, block_start: int) -> str:
    """The page's last Python test file before the console block at ``block_start``."""
    blocks = [m.group(1) for m in _PYTHON.finditer(text, 0, block_start) if _TEST_DEF.search(m.group(1))]
    return blocks[-1]


def regenerate(page: str, python: str) -> str:
    where, target = PAGES[page]
    text = (ROOT / page).read_text(encoding="utf-8")
    out: list[str] = []
    last = 0
    command_index = 0
    with tempfile.TemporaryDirectory(prefix="pytest-flops-output-") as tmp:
        cwd = ROOT if where == "root" else Path(tmp)
        for block in _BLOCK.finditer(text):
            shown = block.group(1)
            header = next((line for line in shown.splitlines() if "test session starts" in line), None)
            if header is None:  # commands without their output (e.g. ci.md's git steps)
                continue
            rootdir = re.search(r"^rootdir: (.*)$", shown, re.MULTILINE).group(1)  # type: ignore[union-attr]
            commands = re.findall(r"^\$ (pytest.*)$", shown, re.MULTILINE)
            outputs = []
            for command in commands:
                if target:
                    code = project_code(text, block.start())
                    if page == "docs/ci.md" and command_index >= CI_GROWTH[0]:
                        code = code.replace(CI_GROWTH[1], CI_GROWTH[2])
                    (cwd / target).parent.mkdir(parents=True, exist_ok=True)
                    (cwd / target).write_text(code, encoding="utf-8")
                result = run(python, command, cwd, len(header))
                result = re.sub(r"^rootdir: .*$", f"rootdir: {rootdir}", result, count=1, flags=re.MULTILINE)
                outputs.append(f"$ {command}\n{result}\n")
                command_index += 1
            out.append(text[last:block.start(1)] + "\n".join(outputs))
            last = block.end(1)
    out.append(text[last:])
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the plain environment's Python")
    parser.add_argument("pages", nargs="*", default=list(PAGES), help=f"default: {' '.join(PAGES)}")
    args = parser.parse_args()
    changed = []
    for page in args.pages:
        try:
            new = regenerate(page, args.python)
        except NotPlain as exc:
            print(f"gen_output: {exc}", file=sys.stderr)
            return 2
        if new != (ROOT / page).read_text(encoding="utf-8"):
            changed.append(page)
            (ROOT / page).write_text(new, encoding="utf-8")
        print(f"gen_output: {page}: {'changed' if page in changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
