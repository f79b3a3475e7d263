# sb3-frontier: `make demo` and `make test` are the two set-up commands of README's quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pins torch to the CPU build; `make test CONSTRAINTS=` lifts the pin.
CONSTRAINTS ?= .ci/constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
EXTRAS ?= tests,zoo,minatar,distributed
PYTEST_ARGS ?=
comma := ,

.PHONY: demo test lint type pytest bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-$(subst $(comma),-,$(EXTRAS)): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_C) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

demo: install
	$(BIN)/python -m sb3_frontier.demo

lint: install
	$(BIN)/ruff check sb3_frontier tests benchmarks
	$(BIN)/ruff format --check sb3_frontier tests benchmarks

type: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "no tests collected" && exit 0; exit $$rc

test: lint type pytest

bench:
	$(MAKE) install EXTRAS=tests,zoo,minatar,bench,distributed
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
