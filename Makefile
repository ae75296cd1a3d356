# capture-ext developer commands. `make demo` and `make test` work on a fresh machine:
# both create the virtual environment they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup lock test lint unit functional integration e2e demo clean example-plugin bench sim

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned exactly: the CPU wheel lies on this disk; a looser spec may pull a CUDA build.
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Refresh constraints.txt from the current .venv (after a dependency change that installs cleanly).
lock: setup
	{ sed -n '1,3p' constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^capture-ext'; } > constraints.tmp
	mv constraints.tmp constraints.txt

lint: setup template-lint
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

demo: setup
	$(PY) -m capture_ext.testing.demo

# The deterministic simulation of the delivery core (tests/sim; `make test` runs 1,000 seeds).
# `make sim SEEDS=300` runs seeds 0..299; `make sim SEED=42` replays one seed. A failure prints
# its seed and a shrunk history with the exact command that replays it.
SEEDS ?= 300
sim: setup
	$(PY) -m tests.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

# Benchmarks (~10 min) print numbers and assert nothing; results vary 20-30 % on a shared VM.
# Regenerates docs/benchmarks.md and its plot (bench/run.py; bench/serialize.py runs inside
# bench/flush.py). Needs wrk, a Debian package.
bench: setup
	@command -v wrk >/dev/null 2>&1 || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get install -y -q wrk || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk; }; }
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

# -- deployment (SAM) -------------------------------------------------------------------------
# SAM CLI lives in its own venv: its boto3 pin conflicts with aioboto3's botocore range.
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
MODEL_DIR ?= models/distilbert-base-cased-distilled-squad
# No credentials and a fixed region: the template checks run offline, on any machine.
OFFLINE_AWS := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0

.PHONY: template-lint model layer build deploy delete

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0

template-lint: setup $(SAM)
	$(OFFLINE_AWS) $(VENV)/bin/cfn-lint template.yaml
	$(OFFLINE_AWS) $(SAM) validate --lint --template template.yaml

# The real model for local runs (`python -m inference_fn`); the image fetches its own copy.
model: setup
	$(PY) -m inference_fn.download_model --model-dir $(MODEL_DIR)

# layer-build/capture-ext-layer.zip (+ the unpacked tree template.yaml publishes).
layer: setup
	$(PY) layer/build_layer.py --out layer-build

# Needs Docker or Finch (the function is a container image), so CI never runs it.
build: layer $(SAM)
	$(SAM) build --template template.yaml

# The first deploy asks for stack name, region and confirms IAM (saved to samconfig.toml).
deploy: build
	@if [ -f samconfig.toml ]; then $(SAM) deploy; else $(SAM) deploy --guided; fi

delete: $(SAM)
	$(SAM) delete
