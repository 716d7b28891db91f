# Entry points. `make test` is what CI runs (.ci/run); every target that needs the toolchain runs setup
# first, which is quick when nothing changed.
SHELL := /bin/bash
VENV := .venv/bin
STATE_DIR ?= .stack
STACK_CONFIG ?= default
# The worker's cached path is known before it is built (setup builds it); tests and the gateway read it.
MEDIASOUP_WORKER_BIN ?= $(shell scripts/mediasoup_worker_path.sh)
export MEDIASOUP_WORKER_BIN

.PHONY: setup test unit integration lint demo stack-up stack-down stack-status clean

setup:
	scripts/setup.sh

# After setup every prerequisite is installed, so a test that would skip for lack of one (the worker,
# pocketsphinx-testdata, redis-server, ...) fails instead (tests/prereq.py, sut/gateway/test/prereq.js).
test unit integration: export SPEECHLOAD_REQUIRE_ALL := 1

test: setup
	$(VENV)/ruff check .
	cd sut/gateway && npm test
	$(VENV)/pytest -q

unit: setup
	$(VENV)/pytest -q -m unit

integration: setup
	$(VENV)/pytest -q -m integration

lint:
	$(VENV)/ruff check .

# A short swarm against the embedded reference stack. Exit 1 (a budget threshold failed) is a
# measured verdict, not a broken demo; 3 (the run itself failed) is.
demo: setup
	@rc=0; $(VENV)/loadtest run --callers 3 --duration 45 --out reports/demo || rc=$$?; \
	if [[ $$rc -gt 1 ]]; then exit $$rc; fi; echo "open reports/demo/report.html"

stack-up: setup
	$(VENV)/python -m sut.stack_cli up --config $(STACK_CONFIG) --state-dir $(STATE_DIR)

stack-down:
	$(VENV)/python -m sut.stack_cli down --state-dir $(STATE_DIR)

stack-status:
	$(VENV)/python -m sut.stack_cli status --state-dir $(STATE_DIR)

# Stops a running stack first so no process keeps files of the state dir open.
clean:
	-[[ -x $(VENV)/python ]] && $(VENV)/python -m sut.stack_cli down --state-dir $(STATE_DIR)
	rm -rf $(STATE_DIR) .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -not -path './sut/gateway/node_modules/*' -prune -exec rm -rf {} +
