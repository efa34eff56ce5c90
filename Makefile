# The README's two commands: `make demo` (set-up, then the demo DAG) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# CPU machines: the CPU build of torch is installed before the package so that pip never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: demo report test test-slow test-slurm lint docs clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps brainspace==0.3.0
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) all
	$(BIN)/snakemake --report results/report.html

# The HTML report of every result (runs what is missing first): results/report.html, opened in any browser.
report: demo

# The suite in two parts, each well inside 20 minutes on 2 cores (CI runs both): `make test`, every test not marked
# `slow`; `make test-slow`, the end-to-end workflow runs (real Snakemake runs of the tiny config in .test/, the
# report in a headless browser) and the other tests marked `slow` where --durations measured them (the real-Slurm
# test is `make test-slurm`). --durations: the slowest tests, so that the marks follow measurements.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" --durations=25

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "slow and not slurm" --durations=25

# `snakemake --profile slurm all` on a real single-node Slurm started here (root, Debian: installs munge and
# slurm-wlm when missing; stops the daemons it started). CI runs it.
test-slurm: $(VENV)/.installed
	BRAINJEPA_SLURM=1 $(BIN)/python -m pytest -q tests/test_slurm.py

# Lint (CI runs it with the tests; .pre-commit-config.yaml runs the same commands): Python style and errors, the
# package's floors and no import circles (import-linter, [tool.importlinter] in pyproject.toml), Snakefile
# formatting, Snakemake's own checks on the demo config and on the tiny test config (.test/config/).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --directory .test

# The documentation site (docs/, Sphinx + MyST) into docs/_build/html, warnings as errors, offline. Its tools are
# the package's `docs` extra, installed into the same .venv once (again when pyproject.toml changes).
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean-demo:
	rm -rf results logs resources/demo .snakemake
