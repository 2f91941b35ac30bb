# The two commands of the README's promise: `make demo` and `make test`.
SHELL := /bin/bash
ENV := source scripts/env.sh && source .venv/bin/activate

.PHONY: setup demo test test-fast lint clean

setup:  ## create .venv and install the project (idempotent)
	@scripts/setup.sh

demo: setup  ## train on the sample tasks in tasks_data/ with the packaged MiniLM
	@$(ENV) && multitask-bert train --config configs/quickstart.yaml

test: setup  ## the whole suite, integration tests on ../shared/datasets included
	@$(ENV) && python -m pytest -q

test-fast: setup  ## unit tests only (tiny random BERTs, under a few minutes)
	@$(ENV) && python -m pytest -q -m "not integration"

lint: setup
	@$(ENV) && ruff check multitask_bert flows tests benchmarks

clean:  ## remove runs, caches and the local stores (keeps .venv)
	rm -rf runs .work
