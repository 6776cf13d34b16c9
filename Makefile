# The few commands people type. Each is also written out in the README.
.PHONY: run test lint
run:
	pip install -e . && asyncq -A examples.tutorial.server dev
test:
	pip install -e '.[dev]' && ruff check . && python -m pytest
lint:
	ruff check .
