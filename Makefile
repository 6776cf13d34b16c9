# The few commands people type. Each is also written out in the README.
.PHONY: run test lint bench soak
run:
	pip install -e . && asyncq -A examples.tutorial.server dev
test:
	pip install -e '.[dev]' && ruff check . && python -m pytest
lint:
	ruff check .
bench:
	pip install -e '.[bench]' && python -m benchmarks.run
soak:
	python -m benchmarks.soak
