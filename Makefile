# The few commands people type; `make run` and `make test` are the README's two commands.
.PHONY: run test lint bench soak
run:
	./run
test:
	./test
lint:
	.venv/bin/ruff check . && .venv/bin/mypy
bench:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -q wrk >/dev/null; } || echo "no wrk: the HTTP lines use the Python load generator"
	.venv/bin/pip install -c constraints.txt -e '.[bench,hiredis]' && .venv/bin/python -m benchmarks.run
soak:
	.venv/bin/python -m benchmarks.soak
