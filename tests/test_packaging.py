"""Packaging and house habits: what pyproject.toml declares exists, the wheel carries the configs and
runs `harness` from a fresh virtual environment, make and CI run the linter."""
import ast
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tokenize
import tomllib
from pathlib import Path

import pytest

from conftest import CHEAP_CNN

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What a source checkout needs to build the wheel (tests/, results/ and the rest stay out).
SOURCES = ("pyproject.toml", "README.md", "harness", "conf", "experiments")


def test_declared_package_data_exists():
    """Every file pyproject.toml promises to ship is there (a declared py.typed that is missing, say)."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    for package, patterns in setuptools.get("package-data", {}).items():
        folder = ROOT / package.replace(".", "/")
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"package-data {package}: {pattern} matches no file"


def test_test_and_lint_tools_are_extras_not_dependencies():
    runtime = [d.split("=")[0].split(">")[0].strip() for d in PYPROJECT["project"]["dependencies"]]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "pytest" not in runtime and any(d.startswith("pytest") for d in extras["test"])
    assert any(d.startswith("ruff") for d in extras["lint"]) and "ruff" in PYPROJECT["tool"]


def test_make_installs_the_test_extra_and_ci_lints_and_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[test]"' in makefile
    dry = subprocess.run(["make", "-n", "-B", "lint"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert '".[test,lint]"' in dry and "ruff check" in dry
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith("make lint") for line in ci) and any(line.startswith("make test") for line in ci)


def test_make_help_lists_every_target():
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    for target in phony.split(":", 1)[1].split():
        assert f"make {target} " in listed, f"make help does not list {target}"


@pytest.mark.slow  # about a minute: builds the wheel, makes a venv, starts TensorFlow there
def test_wheel_in_a_fresh_venv_runs_harness(tmp_path):
    """A plain (not editable) install of the built wheel runs `harness layers model=mnist_cnn` and finds
    the configs and experiments inside the installed package, not in this checkout. The fresh venv
    borrows this one's dependencies through a .pth file (no download); the MNIST CNN comes from the
    model cache (HARNESS_CACHE_DIR, else ~/.cache/saliency-harness; trained there on first use)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True)

    work = tmp_path / "elsewhere"  # not the checkout: nothing may come from it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([python, "-c", "from harness import config; print(config.CONFIG_DIR); "
                            "print(config.EXPERIMENTS_DIR)"], cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(site) and Path(line).is_dir(), where.stdout
    layers = subprocess.run([venv / "bin" / "harness", "layers", "model=mnist_cnn", f"model.source={CHEAP_CNN}"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert layers.returncode == 0, layers.stderr
    assert "fc1/kernel" in layers.stdout and "3,212,288 parameters" in layers.stdout
    reproduce = subprocess.run([python, "-m", "harness.reproduce", "nonsense"], cwd=work, env=env,
                               capture_output=True, text=True, timeout=300)
    assert "valid: calibration, cascading_cnn" in reproduce.stderr  # the experiments shipped too


# Citations a reader of this repository cannot open: notes kept elsewhere, an issue tracker, the
# protocol's section numbers without the file. Comments cite docs/protocol.md §N instead.
UNOPENABLE = re.compile(r"stack[- ]notes|pitfall \d|protocol section|section \d+ of the protocol|the issue\b",
                        re.IGNORECASE)
CITATION = re.compile(r"docs/protocol\.md §(\d+(?:\.\d+)?)|(?<=[ (,])§(\d+(?:\.\d+)?)")


def _comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python file, or every comment line of a YAML file."""
    source = path.read_text()
    if path.suffix != ".py":
        return [(n, line.split("#", 1)[1]) for n, line in enumerate(source.splitlines(), 1) if "#" in line]
    found = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline)
             if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            found.append((node.body[0].lineno, ast.get_docstring(node)))
    return found


def _protocol_sections() -> set[str]:
    """'5', '5.1', ...: the numbered headings of docs/protocol.md and the numbered items below them."""
    sections, current = set(), None
    for line in (ROOT / "docs" / "protocol.md").read_text().splitlines():
        if heading := re.match(r"## (\d+)\. ", line):
            current = heading.group(1)
            sections.add(current)
        elif current and (item := re.match(r"(\d+)\. ", line)):
            sections.add(f"{current}.{item.group(1)}")
    return sections


def test_comments_cite_only_what_the_repository_holds():
    sections = _protocol_sections()
    assert {"1", "4.3", "5.1", "5.7", "7", "8.3"} <= sections
    files = [p for folder in ("harness", "tests", "conf", "experiments") for p in sorted((ROOT / folder).rglob("*"))
             if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    for path in files:
        for line, text in _comments_and_docstrings(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            assert not UNOPENABLE.search(text), f"{where} cites what no reader can open: {text.strip()[:100]}"
            if "protocol.md" in text:
                for match in CITATION.finditer(text):
                    cited = match.group(1) or match.group(2)
                    assert cited in sections, f"{where} cites docs/protocol.md §{cited}, which does not exist"
