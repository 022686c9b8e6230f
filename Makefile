# jpki-va: the two commands of the README's Quick start, and the rest.
#   make demo   build the demo PKI and population under var/demo and run the main job,
#               with a group appliance (団体署名検証者) fed from it on 127.0.0.1:8081
#               (make demo KEYS=softhsm: every signing key in a SoftHSM2 token, under var/demo-softhsm;
#               ports in use are replaced by free ones; DEMO_ARGS="--port N ..." chooses them)
#   make test   lint (ruff, import-linter), type check (mypy) and the whole pytest suite
#   make bench  rerun every benchmark and update the table in bench/README.md
#               (make bench-national: the 10,000,000-holder store, hours; not in make bench)
#   make compiled  the OCSP hot path compiled with mypyc, in place (or make venv MYPYC=1);
#               needs a C compiler and Python's headers; make clean goes back to pure Python
#   make test-compiled  the whole suite against that build (.ci/run runs it after make test)
#   make lock   deploy/constraints.txt (the releases make venv installs) from PyPI's newest

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KEYS   ?= pem
DEMO   ?= var/demo$(if $(filter softhsm,$(KEYS)),-softhsm)
HOLDERS ?= 100000
DEMO_ARGS ?=
CONSTRAINTS := deploy/constraints.txt
LOCKVENV := $(VENV)-lock

.PHONY: demo test test-compiled test-shifted lint typecheck pytest bytecode bench bench-tools bench-national clean distclean venv compiled lock

# The native build (docs/operations.md, setup.py): the modules of pyproject.toml's
# [tool.jpki-va.mypyc] compiled next to their sources, which Python then imports instead.
# Rebuilt when any source changes; once built, demo, pytest and bench keep it up to date.
MYPYC  ?=
NATIVE := $(VENV)/.compiled
SOURCES := $(shell find crlbuilder responder -name '*.py' 2>/dev/null)

venv: $(STAMP) $(if $(MYPYC),$(NATIVE))

compiled: $(NATIVE)

$(NATIVE): $(STAMP) setup.py pyproject.toml $(SOURCES)
	@command -v cc >/dev/null 2>&1 || { echo "make: no C compiler (Debian: apt-get install gcc python3-dev)"; exit 1; }
	@$(PY) -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| { echo "make: Python.h not found (Debian: apt-get install python3-dev)"; exit 1; }
	JPKI_VA_MYPYC=1 $(PY) setup.py --quiet build_ext --inplace
	@touch $@

demo pytest bench: $(if $(wildcard $(NATIVE)),$(NATIVE))

# The releases installed are deploy/constraints.txt's, the ones the suite passed with.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (Python 3.11+ is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@

# deploy/constraints.txt again from the newest releases pyproject.toml allows, resolved in a
# venv of its own (then `make test` before committing it).
lock:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (Python 3.11+ is required)"; exit 1; }
	rm -rf $(LOCKVENV)
	$(PYTHON) -m venv $(LOCKVENV)
	$(LOCKVENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCKVENV)/bin/python -m pip install --quiet '.[dev]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(LOCKVENV)/bin/python -m pip freeze --all --exclude jpki-va --exclude pip; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCKVENV)

demo: $(STAMP)
	$(PY) -m crlbuilder.demo --dir $(DEMO) --holders $(HOLDERS) --keys $(KEYS) $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check crlbuilder responder tests bench
	$(VENV)/bin/ruff format --check crlbuilder responder tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# four processes (pytest-xdist), one test file each at a time (module fixtures stay whole; each
# process builds the session's demo store once), the slowest files first (tests/conftest.py
# RUN_FIRST; xdist's own order, most tests first, left a long file for the end): on two cores
# the suite is CPU-bound, but its tests wait on servers they start, and four keep both cores
# busier than two (measured 2026-12-07: 958 s against 1,122 s). make test-shifted runs the same.
PYTEST_PROCS := -n 4 --dist loadfile --no-loadscope-reorder
pytest: $(STAMP) bytecode
	$(VENV)/bin/pytest -q $(PYTEST_PROCS)

# the project's modules compiled once, before the suite starts a thousand processes that
# import them (with PYTHONDONTWRITEBYTECODE set, as on some CI images, each compiled them from
# source: 4% of the suite's CPU, profiled); __pycache__ is ignored by git
bytecode: $(STAMP)
	$(PY) -m compileall -q crlbuilder responder tests bench

test: lint typecheck pytest

# The suite against the native build (make compiled): CI runs it after make test, so a change
# mypyc refuses, or one that behaves otherwise compiled, cannot land unseen. It leaves the .so
# files next to the sources (make clean removes them).
test-compiled: $(NATIVE) bytecode
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_PROCS)

# The suite under a shifted clock and another time zone: libfaketime (Debian package
# faketime) moves the wall clock so that the run starts at 14:58 UTC, two minutes before
# midnight in Japan, where the ledger's days turn, and TZ is not UTC. Tests marked
# real_clock (timed waits, which libfaketime 0.9.10 breaks under Python 3.11, and the
# Go-built Prometheus, which the preload does not reach) are skipped.
FAKETIME_LIB ?= /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
test-shifted: $(STAMP) bytecode
	@test -f $(FAKETIME_LIB) || { echo "make: $(FAKETIME_LIB) not found (apt-get install faketime)"; exit 1; }
	LD_PRELOAD=$(FAKETIME_LIB) TZ=America/New_York \
	FAKETIME="$$($(PY) -c 'import datetime as d; n = d.datetime.now(d.UTC); print(f"{round(((n.replace(hour=14, minute=58, second=0) - n).total_seconds()) / 60):+d}m")')" \
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_PROCS)

# the peers and probes the benchmarks run (wrk, nginx, cfssl ...), installed when missing
bench-tools:
	bash bench/tools

bench: $(STAMP) bench-tools
	$(PY) -m bench.run

# hours on 2 cores: a 10,000,000-holder store built and served (bench/README.md, national scale)
bench-national: $(STAMP) bench-tools
	$(PY) -m bench.run --only national

clean:
	rm -rf var/test .pytest_cache .mypy_cache .ruff_cache build $(NATIVE)
	find crlbuilder responder -name '*.so' -delete

distclean: clean
	rm -rf $(VENV) var
