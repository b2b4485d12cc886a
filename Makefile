# Two entry points a newcomer needs: `make study` (main job) and `make test` (whole suite).
# Each creates .venv if missing and installs the package into it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results/subgroups

.PHONY: venv study test lint bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

study: venv
	$(BIN)/vaerob subgroups --out $(OUT)

lint: venv
	$(BIN)/ruff format --check vaerob_jax tests benchmarks experiments
	$(BIN)/ruff check vaerob_jax tests benchmarks experiments
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 --durations=15

bench: venv
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
