# One entry point for people and CI. The virtualenv is created on first use from pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install run serve notify-test test check lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## make run: start the stack, run the demo pipeline through the queue (fake LLM), print a summary, stop
run: install
	$(PY) -m deployments demo

## make serve: the stack in the foreground (Prefect server, GPU worker, queue manager) until Ctrl-C
serve: install
	$(PY) -m deployments serve

## make notify-test: send a test message through each configured channel (TELEGRAM_*, SMTP_*)
notify-test: install
	$(PY) -m deployments notify-test

## make test: lint first (so CI enforces the import boundaries), then the test suite against a real
## Prefect server, real HTTP peers, real databases: most of it in two processes (each with a
## Prefect server of its own; most of a test's time is waiting for processes), then the tests
## marked `alone` (latency, 50 clients, the cluster with a GPU host) with the machine to themselves
test: install lint
	$(BIN)/pytest -n 2 --dist loadfile -m "not alone"
	$(BIN)/pytest -m alone

## make lint: formatting, lint rules, types and the import boundaries of design.md
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## make check: everything CI would want to see green (`make test` already runs lint first)
check: test

## make bench: the LLM client's throughput, the queue's idle gap between tasks, a failure's message latency
## (perf/README.md; perf/queue_api_latency.py also needs PostgreSQL and runs on its own)
bench: install
	$(PY) perf/llm_throughput.py
	$(PY) perf/queue_idle_gap.py
	$(PY) perf/notify_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
