# ErfNet offline-inference regression pipeline.
#   make install   create .venv (Python 3.11) with the pinned versions of constraints.txt; idempotent
#   make demo      the whole DAG in-process on synthetic data and a random checkpoint (see README)
#   make airflow   Airflow (standalone, LocalExecutor) with the DAG, the plugin and the demo's data as the
#                  form's defaults; prints URL, user and password; Ctrl-C stops it (AIRFLOW_PORT=8080)
#   make lint      ruff check, ruff format --check and mypy (strict on erfnet_tasks/; see pyproject.toml)
#   make test      make lint, then the whole test suite (installs chromium and docker-compose from Debian when missing)
#   make test-fast the unit tests alone (tests/unit, without the `slow` full-size ERFNet ones): no Airflow, no browser
#   make bench     the benchmark suite -> bench/results.json and BENCHMARKS.md
#   make bench-lab a cold nightly on the real cluster, today's DAG against the new one (issue 26; about
#                  10 minutes, so not in `make bench`) -> bench/lab_night.json and its BENCHMARKS.md section

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint demo airflow test test-fast bench bench-lab system-test-deps clean freeze-constraints

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[airflow,test,dev]'
	@touch $(STAMP)

# Refresh the pinned set from a working install (Airflow's own constraints file cannot be fetched here).
freeze-constraints:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

system-test-deps:
	@bash tools/ensure-system-packages.sh

demo: install
	$(BIN)/erfnet demo

AIRFLOW_PORT ?= 8080
airflow: install
	$(BIN)/python deploy/local_airflow.py --port $(AIRFLOW_PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint system-test-deps
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest tests/unit -m "not slow"

bench: install
	$(BIN)/python bench/run.py --make

bench-lab: install
	$(BIN)/python bench/lab_night.py

clean:
	rm -rf $(VENV) data artifacts .pytest_cache
