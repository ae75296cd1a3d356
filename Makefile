# capture-ext developer commands. `make demo` and `make test` work on a fresh machine:
# both create the virtual environment they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup lock test lint unit functional integration e2e demo clean example-plugin bench sim mutate

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
	$(VENV)/bin/lint-imports --no-cache

# The example plugin is installed like any third-party sink, and its own tests (the sink
# contract kit against a local HTTP receiver) run from its directory.
WEBHOOK_EXAMPLE := examples/capture-ext-webhook

example-plugin: setup
	$(PIP) install -q -e $(WEBHOOK_EXAMPLE) --no-deps

# Branch coverage of every process the tests start (pyproject.toml [tool.coverage.*]): the table
# per package is printed last, and the run fails under the floors (docs/testing.md).
test: lint example-plugin
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest -q -p no:cacheprovider --durations=20 tests
	cd $(WEBHOOK_EXAMPLE) && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --skip-covered --sort=cover
	$(PY) -m tests.coverage_summary

unit: setup
	$(PY) -m pytest -q tests/unit

functional: setup
	$(PY) -m pytest -q tests/functional

integration: setup
	$(PY) -m pytest -q tests/integration

e2e: setup
	$(PY) -m pytest -q tests/e2e

demo: setup
	$(PY) -m demo

# The deterministic simulation of the delivery core (tests/sim; `make test` runs 1,000 seeds).
# `make sim SEEDS=300` runs seeds 0..299; `make sim SEED=42` replays one seed. A failure prints
# its seed and a shrunk history with the exact command that replays it.
SEEDS ?= 300
sim: setup
	$(PY) -m tests.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

# Mutation testing of the delivery core (docs/testing.md): about forty minutes with one worker, not run by `make test`.
# Writes docs/mutation.md. `make mutate MODULES="core/buffer.py client.py"` runs some modules only.
MODULES ?=
mutate: setup
	$(PY) -m tests.mutation $(if $(MODULES),--modules $(MODULES))

# Benchmarks (~10 min) print numbers and assert nothing; results vary 20-30 % on a shared VM.
# Regenerates docs/benchmarks.md and its plot (bench/run.py; bench/serialize.py runs inside
# bench/flush.py). Needs wrk, a Debian package.
bench: setup
	@command -v wrk >/dev/null 2>&1 || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get install -y -q wrk || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk; }; }
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info .coverage .coverage.* htmlcov mutants

# -- deployment (SAM) -------------------------------------------------------------------------
# SAM CLI lives in its own venv: its boto3 pin conflicts with aioboto3's botocore range.
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
MODEL_DIR ?= models/distilbert-base-cased-distilled-squad
# No credentials and a fixed region: the template checks run offline, on any machine.
OFFLINE_AWS := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0

# checkov too (it pins its own boto3 and more); skips are inline, with reasons (docs/deployment.md).
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# The function's architecture and the layers' (x86_64 or arm64): `make deploy ARCH=arm64`.
ARCH ?= x86_64
LAYER_ARCHS := x86_64 arm64
LAYER_PYTHONS := 3.11 3.12 3.13
# Extra `sam deploy` parameter overrides, e.g. PARAMETERS="ApiAuth=API_KEY ReservedConcurrency=10".
PARAMETERS ?=
BASE_IMAGE := public.ecr.aws/lambda/python:3.12
MODEL_REPO := distilbert-base-cased-distilled-squad

.PHONY: template-lint model layer layers layers-arch stack-layers model-revision base-image-digest build deploy delete

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30

template-lint: setup $(SAM) $(CHECKOV)
	$(OFFLINE_AWS) $(VENV)/bin/cfn-lint template.yaml
	$(OFFLINE_AWS) $(SAM) validate --lint --template template.yaml
	$(OFFLINE_AWS) BC_SKIP_MAPPING=TRUE $(CHECKOV) --quiet --compact --skip-download --framework cloudformation dockerfile \
		-f template.yaml -f inference_fn/Dockerfile

# The real model for local runs (`python -m inference_fn`); the image fetches its own copy.
model: setup
	$(PY) -m inference_fn.download_model --model-dir $(MODEL_DIR)

# layer-build/capture-ext-layer.zip (+ its unpacked tree): Python 3.12, x86_64.
layer: setup
	$(PY) layer/build_layer.py --out layer-build

# Every variant: layer-build/<arch>/python<version>/capture-ext-layer.zip (+ layer/), 2 x 3 builds.
layers: setup
	@for arch in $(LAYER_ARCHS); do $(MAKE) --no-print-directory layers-arch ARCH=$$arch || exit 1; done

layers-arch: setup
	@for py in $(LAYER_PYTHONS); do \
		$(PY) layer/build_layer.py --arch $(ARCH) --python-version $$py --out layer-build/$(ARCH)/python$$py || exit 1; \
	done

# What template.yaml publishes (layer-build/stack/python<version>/): the layers of ARCH.
stack-layers: layers-arch
	rm -rf layer-build/stack && mkdir -p layer-build/stack
	@for py in $(LAYER_PYTHONS); do cp -al layer-build/$(ARCH)/python$$py/layer layer-build/stack/python$$py; done

# The model commit the image bakes in. Made once (it needs the Hugging Face hub, as the image
# build does); commit the file so every later build fetches the same weights. Delete it and
# run again to move to the newest commit of main.
inference_fn/model-revision.txt: | setup
	$(PY) -c "import sys; from huggingface_hub import HfApi; print(HfApi().model_info(sys.argv[1], revision='main').sha)" \
		$(MODEL_REPO) > $@.tmp
	grep -Eqx '[0-9a-f]{40}' $@.tmp && mv $@.tmp $@

model-revision: inference_fn/model-revision.txt

# Re-pin the Dockerfile's base image to the digest its tag points at now (the multi-arch index,
# so x86_64 and arm64 builds share it). Needs skopeo or docker buildx.
base-image-digest:
	@if command -v skopeo >/dev/null 2>&1; then \
		digest="sha256:$$(skopeo inspect --raw docker://$(BASE_IMAGE) | sha256sum | cut -d' ' -f1)"; \
	else \
		digest="$$(docker buildx imagetools inspect $(BASE_IMAGE) --format '{{.Manifest.Digest}}')"; \
	fi; \
	echo "$$digest" | grep -Eqx 'sha256:[0-9a-f]{64}' || { echo "no digest for $(BASE_IMAGE): $$digest" >&2; exit 1; }; \
	sed -i -E "s|^(FROM $(BASE_IMAGE))@sha256:[0-9a-f]{64}|\1@$$digest|" inference_fn/Dockerfile; \
	grep -n '^FROM ' inference_fn/Dockerfile

# Needs Docker or Finch (the function is a container image), so CI never runs it.
build: stack-layers inference_fn/model-revision.txt $(SAM)
	$(SAM) build --template template.yaml --parameter-overrides Architecture=$(ARCH)

# samconfig.toml answers what `sam deploy --guided` would ask (stack nlp-qa, IAM capability,
# managed S3 bucket and ECR repository), so the first deploy runs to the end unattended.
deploy: build
	$(SAM) deploy --parameter-overrides Architecture=$(ARCH) $(PARAMETERS)

delete: $(SAM)
	$(SAM) delete
