# tiqu developer entry points. `make demo` and `make test` work on a bare machine: they create
# the virtualenv, install the project and start a local Redis when none answers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TIQU := $(VENV)/bin/tiqu
STAMP := $(VENV)/.installed
DEMO_ROWS ?= 1000

.PHONY: install redis demo test lint format docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

redis: install
	$(PY) deploy/local/ensure_redis.py

demo: install
	DEMO_ROWS=$(DEMO_ROWS) deploy/local/demo.sh

test: install redis
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install
	$(PY) deploy/local/update_readme_config.py

clean:
	rm -rf var .pytest_cache .ruff_cache
