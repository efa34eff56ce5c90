"""Packaging: the conda environments (clusters, rules) stay consistent with pyproject.toml (pip)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch-gpu": "torch", "pytorch": "torch"}
CONDA_ONLY = {"cuda-version": "=12"}  # conda-forge's CUDA pin (docs/cluster.md): no pip counterpart


def _split(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", spec.split("#")[0])
    return match[1].lower(), match[2].replace(" ", "")


def _conda_deps(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, version = _split(dep)
            conda[CONDA_NAMES.get(name, name)] = version
    return conda


def _pip_deps() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(_split(d) for d in project["dependencies"])


def test_environment_matches_pyproject():
    conda = _conda_deps(REPO / "environment.yml")
    assert conda.pop("python") == "=3.11"
    conda.pop("pip")
    assert {k: conda.pop(k) for k in CONDA_ONLY} == CONDA_ONLY
    assert conda == _pip_deps(), "environment.yml and pyproject.toml list different packages or versions"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.startswith("-e .") for line in pip_section), "the package itself is installed from the repo"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "gpu" in project["optional-dependencies"]


def test_rule_environment_matches_pyproject():
    """workflow/envs/brainjepa.yaml (--sdm conda) holds the package's dependencies, Snakemake (and its Slurm
    executor, which only the driver uses) aside."""
    conda = _conda_deps(REPO / "workflow" / "envs" / "brainjepa.yaml")
    assert conda.pop("python") == "=3.11"
    assert {k: conda.pop(k) for k in CONDA_ONLY} == CONDA_ONLY
    pip = _pip_deps()
    pip.pop("snakemake")
    pip.pop("snakemake-executor-plugin-slurm")
    assert conda == pip


def test_python_requirement_and_console_script():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11")
    assert project["scripts"]["brainjepa"] == "brainjepa.cli:main"


def test_version_is_written_once():
    """The version's one place is brainjepa/__init__.py: pyproject.toml reads it from there (dynamic, statically:
    nothing is imported) and CITATION.cff has none."""
    toml = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in toml["project"] and "version" in toml["project"]["dynamic"]
    assert toml["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "brainjepa.__version__"}
    assert "version" not in yaml.safe_load((REPO / "CITATION.cff").read_text())


def test_no_function_of_the_package_is_over_60_lines():
    """The house rule (docs/development.md): a function longer than 60 lines, its docstring included, is split."""
    import ast

    long = []
    for path in sorted((REPO / "brainjepa").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
