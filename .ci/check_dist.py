"""Build the sdist and the wheel and check what a distributor gets.

    python .ci/check_dist.py [--out DIR] [--test]

* ``python -m build`` prints no warning (run with byte-compiling on: with
  PYTHONDONTWRITEBYTECODE set, setuptools warns that it skips it);
* the sdist holds every file git tracks, but for the CI's own folder and the
  git files (so its tests, docs, examples, mkdocs.yml, tox.ini and the license);
* the wheel's metadata has the SPDX license, the license file, the classifiers
  and the project URLs;
* with ``--test``: the sdist is installed (with its ``test`` extra) into this
  Python and its own test suite runs from the unpacked folder.

Exits non-zero, naming what is wrong, on the first problem.
"""

from __future__ import annotations

import argparse
import email
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Tracked files a user of the sdist has no use for.
NOT_IN_SDIST = (".ci/", ".gitignore", ".gitattributes", ".github/")
WANTED_METADATA = {
    "License-Expression": ["MIT"],
    "License-File": ["LICENSE"],
}
WANTED_CLASSIFIERS = ("Framework :: Pytest", "Development Status :: ", "Programming Language :: Python :: 3.")
WANTED_URLS = ("Source", "Documentation", "Issues", "Changelog")


def fail(message: str) -> None:
    print(f"check_dist: {message}", file=sys.stderr)
    raise SystemExit(1)


def build(out: Path) -> tuple[Path, Path]:
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], env=env,
                          capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        fail(f"python -m build failed:\n{output}")
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    if warnings:
        fail("python -m build warned:\n" + "\n".join(warnings))
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    print(f"check_dist: built {sdist.name} and {wheel.name}, no warnings")
    return sdist, wheel


def tracked_files() -> list[str] | None:
    try:
        proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (an unpacked sdist): nothing to compare with
    return [f for f in proc.stdout.splitlines() if not f.startswith(NOT_IN_SDIST) and (ROOT / f).exists()]


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for required in ("LICENSE", "CHANGELOG.md", "tox.ini", "mkdocs.yml", "tests/conftest.py", "docs/index.md"):
        if required not in names:
            fail(f"the sdist lacks {required}")
    tracked = tracked_files()
    if tracked is not None:
        missing = sorted(set(tracked) - names)
        if missing:
            fail("the sdist lacks tracked files (add them to MANIFEST.in): " + ", ".join(missing))
    stray = sorted(n for n in names if "__pycache__" in n or n.endswith(".pyc"))
    if stray:
        fail("the sdist holds bytecode: " + ", ".join(stray[:5]))
    print(f"check_dist: the sdist holds {len(names)} entries, every tracked file among them")


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        meta_name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(whl.read(meta_name))
        licenses = [n for n in whl.namelist() if ".dist-info/licenses/" in n]
    for key, values in WANTED_METADATA.items():
        if meta.get_all(key) != values:
            fail(f"wheel metadata {key} is {meta.get_all(key)}, expected {values}")
    if not licenses:
        fail("the wheel has no .dist-info/licenses/ file")
    classifiers = meta.get_all("Classifier") or []
    for wanted in WANTED_CLASSIFIERS:
        if not any(c.startswith(wanted) for c in classifiers):
            fail(f"no classifier starting with {wanted!r} in the wheel metadata")
    urls = [u.split(",", 1)[0] for u in meta.get_all("Project-URL") or []]
    if sorted(urls) != sorted(WANTED_URLS):
        fail(f"the wheel's project URLs are {urls}, expected {list(WANTED_URLS)}")
    print(f"check_dist: wheel metadata: license {meta['License-Expression']}, {len(classifiers)} classifiers, "
          f"URLs {', '.join(urls)}")


def test_sdist(sdist: Path, pytest_args: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="pytest-flops-sdist-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp)
        (unpacked,) = Path(tmp).iterdir()
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{sdist}[test]"], check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # The installed pytest script: the tests import the installed package, not the unpacked folder.
        command = [str(Path(sys.executable).parent / "pytest"), "tests", "-p", "no:cacheprovider",
                   *(pytest_args or ["-q", "-n", "2"])]
        print(f"check_dist: in {unpacked}: pytest {' '.join(command[1:])}", flush=True)
        proc = subprocess.run(command, cwd=unpacked, env=env)
        if proc.returncode != 0:
            fail(f"the sdist's tests failed (exit {proc.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where to build (emptied first)")
    parser.add_argument("--test", action="store_true", help="install the sdist and run its own tests")
    parser.add_argument("pytest_args", nargs="*", help="for --test: pytest arguments (default -q -n 2)")
    args = parser.parse_args()
    sdist, wheel = build(args.out)
    check_sdist(sdist)
    check_wheel(wheel)
    if args.test:
        test_sdist(sdist, args.pytest_args)


if __name__ == "__main__":
    main()
