# Two commands do all the set-up on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-all reproduce bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)  ## the fast suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)  ## including the slow Inception-scale tests
	$(BIN)/python -m pytest -q

reproduce: $(STAMP)  ## the paper's experiments on the built-in models, then the report
	$(BIN)/python -m harness.reproduce --out results/reproduce

bench: $(STAMP)  ## harness vs. PAIR saliency vs. raw TensorFlow
	$(BIN)/python -m harness.bench

clean:
	rm -rf results/runs results/sweeps results/reproduce results/bench .pytest_cache
