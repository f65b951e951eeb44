# tujie: `make demo` and `make test` are all a newcomer needs. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := core nlp vision driving health privacy
STAMP := $(VENV)/.tujie-installed
# Offline at run time: no hub downloads, no ultralytics auto-install.
export HF_HUB_OFFLINE := 1
export YOLO_OFFLINE := true
export YOLO_AUTOINSTALL := false
export MPLBACKEND := Agg

.PHONY: help setup demo test test-slow test-browser lint bench app constraints clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install every package pinned by constraints.txt (idempotent)

$(STAMP): constraints.txt pyproject.toml $(wildcard packages/*/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt \
		$(foreach p,$(PACKAGES),-e packages/$(p)) -e ".[all,app,dev]"
	@touch $@

demo: setup ## train every installed domain's demo on the embedded defaults; prints a metrics table
	$(BIN)/tujie demo

test: setup ## run the test suite (slow tests excluded) and the import contracts
	$(BIN)/lint-imports
	$(BIN)/pytest

test-slow: setup ## run only the slow tests
	$(BIN)/pytest -m slow

test-browser: setup ## drive the app in headless Chromium (Debian's chromium + fonts-noto-cjk); screenshots in runs/browser
	$(BIN)/pytest -m browser

lint: setup ## ruff + import-linter contracts (one-way package dependencies)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: setup ## run every benchmark in quick mode; JSON results in runs/bench/
	@mkdir -p runs/bench
	@for script in benchmarks/*.py; do \
		name=$$(basename $$script .py); \
		$(BIN)/python $$script --quick --json runs/bench/$$name.json || exit 1; \
	done

app: setup ## start the Streamlit app on http://localhost:8501 (every domain; offline)
	$(BIN)/streamlit run apps/streamlit_app.py

constraints: setup ## re-pin constraints.txt from the current environment
	@{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^tujie'; } > constraints.new
	@mv constraints.new constraints.txt

clean: ## remove the virtual environment and run folders
	rm -rf $(VENV) runs
