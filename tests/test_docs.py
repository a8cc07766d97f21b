"""The docs' code runs: every ```python block of docs/*.md and README.md, and the docs build.

How a block is treated is decided by an HTML comment on the line just before
its fence (invisible in the rendered page):

* ``<!-- not-run -->``: shown only (a fragment, or code that needs a GPU).
* ``<!-- file: NAME -->``: written to ``NAME`` (e.g. ``conftest.py``) next to
  the test files that follow it on the same page.
* ``<!-- fails -->``: a test file that must fail (the budget is exceeded).

Any other block that defines ``test_`` functions is a test file, run with
pytester and expected to pass; every other block is executed, in order, in
one namespace per page (so a block may use names an earlier one defined).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
_ANNOTATION = re.compile(r"^<!--\s*(not-run|fails|file:\s*(?P<file>[\w./-]+))\s*-->$")
_TEST_DEF = re.compile(r"^(?:def test_|class Test)", re.MULTILINE)
#: Seconds one executed block may take: the snippets are written to run in well under 2 s, but the first use
#: of torch.utils.flop_counter (the FAQ compares with it) costs seconds on its own, more on a loaded CI machine.
SNIPPET_SECONDS = 10.0


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    code: str
    annotation: str | None
    file: str | None

    @property
    def is_test_file(self) -> bool:
        return self.file is None and bool(_TEST_DEF.search(self.code))

    def label(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            language = fence[3:].strip()
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if language == "python":
                before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                match = _ANNOTATION.match(before)
                annotation = match.group(1).split(":")[0] if match else None
                file = match.group("file") if match else None
                blocks.append(Block(page, i + 2, "\n".join(lines[i + 1:end]) + "\n", annotation, file))
            i = end + 1
        else:
            i += 1
    return blocks


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def clean_registry():
    """Snapshot the global registry: snippets register formulas globally; other tests must not see them."""
    from pytest_flops.counting.registry import DEFAULT_REGISTRY

    ops, modules, user = dict(DEFAULT_REGISTRY._ops), dict(DEFAULT_REGISTRY._modules), set(DEFAULT_REGISTRY._user)
    yield
    DEFAULT_REGISTRY._ops.clear()
    DEFAULT_REGISTRY._ops.update(ops)
    DEFAULT_REGISTRY._modules.clear()
    DEFAULT_REGISTRY._modules.update(modules)
    DEFAULT_REGISTRY._user.clear()
    DEFAULT_REGISTRY._user.update(user)
    DEFAULT_REGISTRY._generation += 1  # a change like any registration: counters drop what they cached


@pytest.mark.parametrize("page", [p for p in PAGES if any(not b.is_test_file and b.annotation is None
                                                          and b.file is None for b in python_blocks(p))],
                         ids=page_id)
def test_page_snippets_run(page: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch,
                           tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        if block.annotation or block.file or block.is_test_file:
            continue
        start = time.perf_counter()
        try:
            exec(compile(block.code, block.label(), "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"the snippet at {block.label()} raised {type(exc).__name__}: {exc}", pytrace=True)
        elapsed = time.perf_counter() - start
        assert elapsed < SNIPPET_SECONDS, f"the snippet at {block.label()} took {elapsed:.1f} s"


def _test_file_blocks() -> list[tuple[Block, list[Block]]]:
    out = []
    for page in PAGES:
        files: list[Block] = []
        for block in python_blocks(page):
            if block.file:
                files.append(block)
            elif block.annotation != "not-run" and block.is_test_file:
                out.append((block, list(files)))
    return out


@pytest.mark.parametrize("block,files", _test_file_blocks(), ids=lambda v: v.label() if isinstance(v, Block) else "")
def test_page_test_files_pass_or_fail_as_documented(pytester: pytest.Pytester, block: Block,
                                                    files: list[Block]) -> None:
    for extra in files:
        target = pytester.path / extra.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(extra.code, encoding="utf-8")
    pytester.makepyfile(test_snippet=block.code)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "test_snippet.py")
    outcomes = result.parseoutcomes()
    if block.annotation == "fails":
        assert outcomes.get("failed", 0) >= 1, f"{block.label()} should fail:\n{result.stdout.str()}"
        assert "max_flops:" in result.stdout.str()
    else:
        assert result.ret == 0, f"{block.label()} should pass:\n{result.stdout.str()}"


def test_every_python_block_is_runnable_or_marked() -> None:
    """A block shown as Python parses; a fragment that does not must say <!-- not-run -->."""
    for page in PAGES:
        for block in python_blocks(page):
            if block.annotation == "not-run":
                continue
            try:
                compile(block.code, block.label(), "exec")
            except SyntaxError as exc:
                pytest.fail(f"{block.label()}: not valid Python ({exc}); mark fragments with <!-- not-run -->")


def test_blocks_are_found() -> None:
    assert any(python_blocks(p) for p in PAGES)
    assert any(b.is_test_file for p in PAGES for b in python_blocks(p))


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, re.MULTILINE))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "mkdocs.yml lists pages that do not exist"


def test_every_option_and_ini_key_is_documented(pytester: pytest.Pytester) -> None:
    """docs/configuration.md names every --flops-* option and flops_* ini key the plugin registers."""
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    options = set(re.findall(r"(--flops-[a-z-]+)", text))
    keys = set(re.findall(r"^\s+(flops_[a-z_]+)\s", text, re.MULTILINE))
    assert options and keys
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(name for name in options | keys if f"`{name}" not in page)
    assert not missing, f"docs/configuration.md does not document {', '.join(missing)}"


def test_cli_help_is_documented() -> None:
    from pytest_flops.cli import build_parser

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        for option in action._actions:
            for flag in option.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page or flag == "--no-compute", f"docs/cli.md does not document {flag}"


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs is not installed (tox -e docs installs it)")
def test_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    command = [str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
