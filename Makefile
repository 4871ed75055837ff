# The two commands a newcomer needs (see README.md):
#   make demo   - create .venv, install, run the main job on the embedded default (simulator + local store)
#   make test   - create .venv, install everything the tests need (incl. the live lab), run all tests
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is a local CPU wheel; anything else may download GBs of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,live]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/persona demo

test: $(STAMP)
	# live lab (Docker --experimental, CRIU >= 4.2, pycriu, images): idempotent, ~1 min on a fresh machine
	$(VENV)/bin/persona lab up --no-demo
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check persona envs agents experiments tests
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m experiments.bench_env

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
