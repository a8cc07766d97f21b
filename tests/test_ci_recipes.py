"""docs/ci.md's CI recipes work as pasted: their shell steps run, in CI's order, on a scratch project.

Each recipe (the YAML block after ``<!-- ci-recipe: NAME -->``) runs twice: as the main branch's pipeline,
which saves the baseline, then as a pull request's that grows a model, which must fail with the growth in
its report. The steps' shell lines run through a small interpreter that knows each command the recipes use:

* ``pip install``: the network installs are checked (torch pinned from PyTorch's CPU index, the plugin from
  the project's git URL) and replaced by what this test runs in: the checkout's pytest-flops and torch;
* ``pytest``: runs in this process on the scratch project (pytester), ``-n auto`` as ``-n 0``;
* ``curl`` (GitLab's artifact download): served from the artifacts the earlier job kept;
* ``echo``; the GitHub actions (checkout, setup-python, cache, upload-artifact) are simulated.

Any other command fails the test: a recipe must not grow a step this test does not run.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

yaml = pytest.importorskip("yaml")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
CI_DOC = ROOT / "docs" / "ci.md"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def recipe(name: str) -> dict[str, Any]:
    text = CI_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^<!-- ci-recipe: {name} -->\n```yaml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/ci.md has no <!-- ci-recipe: {name} --> block"
    return yaml.safe_load(match.group(1))


def project_git_url() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        return "git+" + tomllib.loads(text)["project"]["urls"]["Source"]
    return "git+" + re.search(r'^Source = "(.*)"$', text, re.MULTILINE).group(1)  # type: ignore[union-attr]


def scratch_model_test() -> str:
    """The model test of docs/ci.md's "Try it" section (the first Python block after that heading)."""
    text = CI_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Try it"):]
    return re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL).group(1)  # type: ignore[union-attr]


GROWN = ("nn.Sequential(MLP(), MLP())", "nn.Sequential(MLP(), MLP(hidden=512))")


@dataclasses.dataclass
class Shell:
    """Runs the shell lines of CI steps in ``pytester.path``, with local equivalents of the network commands."""

    pytester: pytest.Pytester
    variables: dict[str, str]
    artifacts: dict[str, Path]  # download URL -> kept file
    log: list[str] = dataclasses.field(default_factory=list)
    results: list[pytest.RunResult] = dataclasses.field(default_factory=list)

    def run(self, script: str) -> int:
        """Run every line of ``script`` (stopping at the first failing one, as ``bash -e``); the exit status."""
        for line in script.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            status = 1
            for alternative in line.split(" || "):  # `a || b`: b runs only if a failed
                status = self.command(shlex.split(self.expand(alternative)))
                if status == 0:
                    break
            if status != 0:
                return status
        return 0

    def expand(self, text: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: self.variables.get(m.group(1), ""), text)

    def command(self, argv: list[str]) -> int:
        self.log.append(shlex.join(argv))
        handler: Callable[[list[str]], int] | None = {"pip": self.pip, "pytest": self.pytest, "curl": self.curl,
                                                      "echo": lambda a: 0}.get(argv[0])
        assert handler is not None, f"the recipe runs {argv[0]!r}: give it a local equivalent in this test"
        return handler(argv[1:])

    def pip(self, args: list[str]) -> int:
        assert args[0] == "install", args
        requirements = [a for a in args[1:] if not a.startswith("-")]
        if any(r.startswith("torch") for r in requirements):
            # torch pinned, from the CPU index: what this test runs with stands in for it.
            assert requirements and re.fullmatch(r"torch==2\.\d+\.\d+", requirements[0]), requirements
            assert args[args.index("--index-url") + 1] == CPU_INDEX, args
            return 0
        plugin = [r for r in requirements if r.startswith("pytest-flops")]
        assert plugin == [f"pytest-flops @ {project_git_url()}"], requirements
        assert requirements[1:] == ["pytest-xdist"], requirements
        pytest.importorskip("xdist")  # in the test extra; pytest-flops itself is installed where this runs
        return 0

    def pytest(self, args: list[str]) -> int:
        args = ["0" if a == "auto" and args[i - 1] == "-n" else a for i, a in enumerate(args)]
        result = self.pytester.runpytest("-p", "no:cacheprovider", *args)
        self.results.append(result)
        return int(result.ret)

    def curl(self, args: list[str]) -> int:
        url = next(a for a in args if a.startswith("http"))
        output = Path(args[args.index("--output") + 1])
        assert "--fail" in args and f"JOB-TOKEN: {self.variables['CI_JOB_TOKEN']}" in args, args
        if url not in self.artifacts:
            return 22  # curl --fail on a 404
        shutil.copy(self.artifacts[url], self.pytester.path / output)
        return 0


def scratch_project(pytester: pytest.Pytester) -> None:
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_model.py").write_text(scratch_model_test(), encoding="utf-8")


def grow_the_model(pytester: pytest.Pytester) -> None:
    """The change docs/ci.md makes: the second block's MLP twice as wide."""
    text = scratch_model_test()
    assert GROWN[0] in text
    (pytester.path / "tests" / "test_model.py").write_text(text.replace(*GROWN), encoding="utf-8")


def fresh_checkout(pytester: pytest.Pytester, keep: tuple[str, ...] = ("tests",)) -> None:
    for path in pytester.path.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


# -- GitHub Actions ----------------------------------------------------------------
def github_condition(expression: str | bool, context: dict[str, Any]) -> Any:
    """Evaluate the expressions the recipe uses (``==``, ``&&``, ``!``, ``contains``, ``always()``)."""
    if isinstance(expression, bool):
        return expression
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    for name, value in sorted(context.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(name, repr(value))
    text = text.replace("&&", " and ").replace("||", " or ").replace("!", " not ").replace(" not =", "!=")
    return eval(text, {"__builtins__": {}}, {"contains": lambda seq, x: x in seq, "always": lambda: True})


def github_value(text: str, context: dict[str, Any]) -> str:
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: str(github_condition(m.group(1), context)), text)


def run_github_job(shell: Shell, job: dict[str, Any], context: dict[str, Any], cache: dict[str, Path]) -> bool:
    """Run the job's steps as Actions does; True when the job passed."""
    failed = False
    for step in job["steps"]:
        condition = step.get("if", "success()")
        context["success()"] = not failed
        if not github_condition(condition, context):
            continue
        uses = step.get("uses", "")
        inputs = {k: github_value(str(v), context) for k, v in step.get("with", {}).items()}
        if "run" in step:
            ok = shell.run(step["run"]) == 0
            failed = failed or not (ok or github_condition(step.get("continue-on-error", False), context))
        elif uses.startswith("actions/cache/save@"):
            kept = cache[inputs["key"]] = shell.pytester.path.parent / f"cache-{len(cache)}"
            shutil.copy(shell.pytester.path / inputs["path"], kept)
        elif uses.startswith("actions/cache/restore@"):
            prefixes = inputs.get("restore-keys", "").split()
            hit = inputs["key"] if inputs["key"] in cache else next(
                (k for k in reversed(cache) if any(k.startswith(p) for p in prefixes)), None)
            if hit:
                shutil.copy(cache[hit], shell.pytester.path / inputs["path"])
        elif uses.startswith("actions/upload-artifact@"):
            for path in inputs["path"].split():
                assert (shell.pytester.path / path).exists(), f"upload-artifact: {path} was not written"
        else:
            assert uses.startswith(("actions/checkout@", "actions/setup-python@")), f"unknown step {step}"
    return not failed


def test_github_recipe_saves_on_main_and_fails_the_pull_request_that_grows(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = recipe("github")
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    (job,) = workflow["jobs"].values()
    scratch_project(pytester)
    cache: dict[str, Path] = {}
    summary = pytester.path.parent / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    # A push to main: the baseline is measured and cached under the commit.
    main = Shell(pytester, {}, {})
    push = {"github.event_name": "push", "github.sha": "c0ffee"}
    assert run_github_job(main, job, push, cache), main.log
    assert list(cache) == ["flops-baseline-c0ffee"]
    assert any("--flops-save-baseline=flops-baseline.json" in line for line in main.log)

    # A pull request from that commit that widens a layer: the comparison fails, the summary shows the growth.
    for labels, passes in (([], False), (["flops-accepted"], True)):
        fresh_checkout(pytester)
        grow_the_model(pytester)
        summary.write_text("")
        pr = Shell(pytester, {}, {})
        event = {"github.event_name": "pull_request", "github.sha": "beef",
                 "github.event.pull_request.base.sha": "c0ffee", "github.event.pull_request.labels.*.name": labels}
        assert run_github_job(pr, job, event, cache) is passes, pr.log
        (result,) = pr.results
        assert result.ret == 1
        result.stdout.fnmatch_lines(["*regressed: tests/test_model.py::test_forward  +48.0%*"])
        text = summary.read_text()
        assert "### pytest-flops" in text and "+48.0%" in text and "1 regressed" in text, text


# -- GitLab CI -----------------------------------------------------------------------
def gitlab_rule(rule: str, variables: dict[str, str]) -> bool:
    left, right = (side.strip() for side in rule.split("=="))

    def value(side: str) -> str:
        return variables.get(side[1:], "") if side.startswith("$") else side.strip('"')

    return value(left) == value(right)


def run_gitlab_pipeline(pytester: pytest.Pytester, pipeline: dict[str, Any], variables: dict[str, str],
                        artifacts: dict[str, Path]) -> dict[str, tuple[bool, Shell]]:
    """Run the jobs whose rules match; keep their artifacts (download URL -> file). Job name -> (passed, shell)."""
    default = pipeline.get("default", {})
    out = {}
    for name, job in pipeline.items():
        if name == "default" or not isinstance(job, dict) or "script" not in job:
            continue
        if not any(gitlab_rule(r["if"], variables) for r in job.get("rules", [{"if": "1 == 1"}])):
            continue
        shell = Shell(pytester, variables, artifacts)
        passed = all(shell.run(line) == 0 for line in [*job.get("before_script", default.get("before_script", [])),
                                                       *job["script"]])
        kept = job.get("artifacts", {})
        if passed or kept.get("when") == "always":
            for path in kept.get("paths", []):
                assert (pytester.path / path).exists(), f"{name}: artifact {path} was not written"
                url = (f"{variables['CI_API_V4_URL']}/projects/{variables['CI_PROJECT_ID']}/jobs/artifacts/"
                       f"{variables.get('CI_COMMIT_BRANCH', '')}/raw/{path}?job={name}")
                artifacts[url] = pytester.path.parent / f"artifact-{len(artifacts)}"
                shutil.copy(pytester.path / path, artifacts[url])
        out[name] = passed, shell
    return out


def test_gitlab_recipe_saves_on_the_default_branch_and_fails_the_merge_request_that_grows(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pipeline = recipe("gitlab")
    assert pipeline["default"]["image"].startswith("python:3")
    scratch_project(pytester)
    artifacts: dict[str, Path] = {}
    common = {"CI_DEFAULT_BRANCH": "main", "CI_API_V4_URL": "https://gitlab.example/api/v4", "CI_PROJECT_ID": "7",
              "CI_JOB_TOKEN": "token"}

    ran = run_gitlab_pipeline(pytester, pipeline, {**common, "CI_COMMIT_BRANCH": "main",
                                                   "CI_PIPELINE_SOURCE": "push"}, artifacts)
    assert list(ran) == ["flops-baseline"] and ran["flops-baseline"][0], ran["flops-baseline"][1].log
    assert len(artifacts) == 1

    fresh_checkout(pytester)
    grow_the_model(pytester)
    ran = run_gitlab_pipeline(pytester, pipeline, {**common, "CI_PIPELINE_SOURCE": "merge_request_event"}, artifacts)
    assert list(ran) == ["flops-gate"]
    passed, shell = ran["flops-gate"]
    assert not passed, shell.log
    (result,) = shell.results
    result.stdout.fnmatch_lines(["*regressed: tests/test_model.py::test_forward  +48.0%*"])
    markdown = (pytester.path / "flops.md").read_text()
    assert "### pytest-flops" in markdown and "+48.0%" in markdown

    # Before the default branch has a baseline, the merge request's job passes, every test new.
    fresh_checkout(pytester)
    ran = run_gitlab_pipeline(pytester, pipeline, {**common, "CI_PIPELINE_SOURCE": "merge_request_event"}, {})
    passed, shell = ran["flops-gate"]
    assert passed, shell.log
    shell.results[0].stdout.fnmatch_lines(["*0 regressed, 2 new*"])
