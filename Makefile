# capture-ext developer commands. `make demo` and `make test` work on a fresh machine:
# both create the virtual environment they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint unit functional integration e2e demo clean example-plugin bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned exactly: the CPU wheel lies on this disk; a looser spec may pull a CUDA build.
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The example plugin is installed like any third-party sink, and its own tests (the sink
# contract kit against a local HTTP receiver) run from its directory.
WEBHOOK_EXAMPLE := examples/capture-ext-webhook

example-plugin: setup
	$(PIP) install -q -e $(WEBHOOK_EXAMPLE) --no-deps

test: lint example-plugin
	$(PY) -m pytest -q -p no:cacheprovider tests
	cd $(WEBHOOK_EXAMPLE) && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider

unit: setup
	$(PY) -m pytest -q tests/unit

functional: setup
	$(PY) -m pytest -q tests/functional

integration: setup
	$(PY) -m pytest -q tests/integration

e2e: setup
	$(PY) -m pytest -q tests/e2e

# Benchmarks print numbers and assert nothing; results vary 20-30 % on a shared VM.
bench: setup
	$(PY) bench/serialize.py --drain 10000 --moto-process

demo: setup
	$(PY) -m capture_ext.testing.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
