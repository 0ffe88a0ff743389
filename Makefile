# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
export JAX_PLATFORMS ?= cpu

.PHONY: venv demo test test-slow test-all results-synthetic results-celeba benchmark clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## The main job on the embedded synthetic faces: pretrain -> FedFace -> evaluate -> attack.
demo: $(STAMP)
	$(BIN)/python -m launch.demo --workdir=$(WORKDIR)

## Fast default suite (< ~10 min on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## Slower end-to-end checks.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

## Throughput / MFU / memory sweep, class-table step and peers -> BENCHMARKS.md (~15-25 min).
benchmark: $(STAMP)
	PY=$(BIN)/python bash scripts/run_benchmarks.sh

clean:
	rm -rf runs .pytest_cache
