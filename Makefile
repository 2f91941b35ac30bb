# The two commands of the README's promise: `make demo` and `make test`.
SHELL := /bin/bash
ENV := source scripts/env.sh && source .venv/bin/activate

.PHONY: setup demo services stop test test-fast lint clean

setup:  ## create .venv and install the project (idempotent)
	@scripts/setup.sh

demo:  ## Prefect server + worker, deploy prefect.yaml, run train-multitask/local (MiniLM, sample tasks)
	@scripts/demo.sh $(ARGS)

services: setup  ## start (or reuse) the Prefect server on 127.0.0.1:4200 and a worker; deploy prefect.yaml
	@scripts/services.sh up

stop:  ## stop the worker and the server that `make demo`/`make services` started
	@scripts/stop.sh

test: setup  ## the whole suite, integration tests on ../shared/datasets included
	@$(ENV) && python -m pytest -q

test-fast: setup  ## unit tests only (tiny random BERTs, under a few minutes)
	@$(ENV) && python -m pytest -q -m "not integration"

lint: setup
	@$(ENV) && ruff check multitask_bert flows tests benchmarks

clean: stop  ## stop services, remove runs, caches and the local stores (keeps .venv)
	rm -rf runs .work
