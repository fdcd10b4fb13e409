# The README's two commands are `make demo` and `make test`; both set up a fresh machine first.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench kafka-up kafka-down

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m tocsin.app.demo

# Two workers, each with its own broker and embedded store; a module stays on one worker (module fixtures).
PYTEST_WORKERS ?= 2
test: setup
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --reruns 2 $(PYTEST_ARGS)

lint:
	ruff check .

bench: setup
	$(PYTHON) -m bench all --quick

kafka-up:
	tocsin kafka up

kafka-down:
	tocsin kafka down
