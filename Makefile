# The two commands a new user runs (see README): `make demo` and `make test`.
# Both create .venv and install the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint dev serve

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/batchrec demo

# Parallel workers (pytest-xdist), one test module per worker at a time, in collection order
# (tests/conftest.py starts the long Dagster-stack modules first); TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 4

test: install
	$(PY) -m pytest -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check .

dev: install
	$(VENV)/bin/batchrec dev

serve: install
	$(VENV)/bin/batchrec serve --show demo-user-0
