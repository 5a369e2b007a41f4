# Two commands for a new user: `make run` (the demo analysis) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 2
# Python 3.12 (scanpy 1.12 needs it): on PATH, or from pyenv's versions folder.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)
# numba compiles once per machine, not once per rule process
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export MPLBACKEND ?= Agg

.PHONY: run test env lock lint format clean

run: $(VENV)/.installed
	$(SNAKEMAKE) --cores $(CORES) $(SNAKEMAKE_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

env: $(VENV)/.installed

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on this machine), every rule process
# would otherwise compile its imports from source (scanpy + texflow: 9.5 s -> 2.7 s; measured)
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12" >&2; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.8
	$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $@

# Re-resolve the pinned versions after editing requirements.in, then mirror them into envs/.
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile --quiet requirements.in -o requirements.lock --python-version 3.12
	$(PY) scripts/sync_conda_env.py

# the Python files ruff looks at: pyproject.toml's [tool.ruff] (rule set and its reasons);
# tests/unit/test_workflow_lint.py reads this line
PY_SOURCES := workflow benchmarks tests scripts/sync_conda_env.py resources/signatures

lint: $(VENV)/.installed
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/ruff check $(PY_SOURCES)

format: $(VENV)/.installed
	$(VENV)/bin/snakefmt Snakefile workflow/rules
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)

clean:
	rm -rf results .snakemake
