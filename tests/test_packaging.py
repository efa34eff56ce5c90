"""Packaging: environment.yml (conda, clusters) stays consistent with pyproject.toml (pip)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch-gpu": "torch", "pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", spec.split("#")[0])
    return match[1].lower(), match[2].replace(" ", "")


def test_environment_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip = dict(_split(d) for d in project["dependencies"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, version = _split(dep)
            conda[CONDA_NAMES.get(name, name)] = version
    assert conda.pop("python") == "=3.11"
    conda.pop("pip")
    assert conda == pip, "environment.yml and pyproject.toml list different packages or versions"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.startswith("-e .") for line in pip_section), "the package itself is installed from the repo"
    assert "gpu" in project["optional-dependencies"]


def test_python_version_pins_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11")
    assert project["scripts"]["brainjepa"] == "brainjepa.cli:main"


def test_makefile_installs_cpu_torch_before_the_package():
    makefile = (REPO / "Makefile").read_text()
    torch_at = makefile.index('pip install "$(TORCH_SPEC)"')
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile
    assert torch_at < makefile.index('pip install -e ".[test]"')
