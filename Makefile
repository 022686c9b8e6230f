# jpki-va: the two commands of the README's Quick start, and the rest.
#   make demo   build the demo PKI and population under var/demo and run the main job
#   make test   lint (ruff), type check (mypy) and the whole pytest suite
#   make bench  rerun every benchmark and update the table in bench/README.md

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= var/demo
HOLDERS ?= 100000

.PHONY: demo test lint typecheck pytest bench clean distclean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (Python 3.11+ is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(PY) -m crlbuilder.demo --dir $(DEMO) --holders $(HOLDERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check crlbuilder responder tests bench
	$(VENV)/bin/ruff format --check crlbuilder responder tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf var/test .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) var
