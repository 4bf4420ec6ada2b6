# vxm_tf: `make install` sets up .venv; `make test` runs the suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test lint bench bench-model clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,reference]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check vxm_tf tests tools

bench-model: install
	$(PY) tools/bench_model.py --out bench/model.json

bench: bench-model

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
