# Two commands do all the set-up on a fresh machine: `make reproduce` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LINT_STAMP := $(VENV)/.lint-stamp

.PHONY: help install test smoke test-all test-slurm lint package reproduce bench bench-sweep clean
.DEFAULT_GOAL := help

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 20

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,lint]"
	touch $(LINT_STAMP)

install: $(STAMP)  ## create .venv and install the harness (editable) with its test tools

test: $(STAMP)  ## the fast suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

smoke: $(STAMP)  ## a short check on another Python: `make smoke PYTHON=python3.13 VENV=.venv-py3.13` (CI runs it on 3.12 and 3.13)
	$(BIN)/python -m pytest -q -m "smoke and not slow"

test-all: $(STAMP)  ## including the slow tests (Inception-scale models, the wheel in a fresh venv)
	$(BIN)/python -m pytest -q

SLURM_STATE ?= /tmp/harness-slurm
test-slurm: $(STAMP)  ## opt-in: a 4-job sweep through submitit_slurm on a one-node Slurm started here (root; apt-get install slurmctld slurmd slurm-client munge)
	tests/slurm/cluster.sh start $(SLURM_STATE)
	SLURM_CONF=$(SLURM_STATE)/slurm.conf HARNESS_TEST_SLURM=1 $(BIN)/python -m pytest -q -m slurm tests/test_slurm.py; \
	  status=$$?; tests/slurm/cluster.sh stop $(SLURM_STATE); exit $$status

lint: $(LINT_STAMP)  ## ruff, with the settings in pyproject.toml (CI runs it too)
	$(BIN)/ruff check .

package: $(STAMP)  ## build the wheel, install it in a fresh venv, run `harness layers model=mnist_cnn` there
	$(BIN)/python -m pytest -q -m slow tests/test_packaging.py

reproduce: $(STAMP)  ## the paper's experiments on the built-in models, then the report
	$(BIN)/python -m harness.reproduce --out results/reproduce

bench: $(STAMP)  ## every benchmark (harness/bench/): results/bench/bench.md and the generated docs/benchmarks.md
	$(BIN)/python -m harness.bench

bench-sweep: $(STAMP)  ## only the sweep scenario (basic vs joblib launcher): results/bench/sweep/bench.md
	$(BIN)/python -m harness.bench --scenarios sweep --out results/bench/sweep

clean:  ## remove generated results and build output (keeps .venv and the model cache)
	rm -rf results/runs results/sweeps results/reproduce results/reproduce-quick results/bench .pytest_cache build dist
