# Developer entry points. `make bench ARGS="--quick"` passes options to the benchmark.
PYTHON ?= .venv/bin/python
ARGS ?=

.PHONY: bench test run check

bench:
	$(PYTHON) -m bench.run $(ARGS)

test:
	bash scripts/test.sh

run:
	bash scripts/run.sh

check:
	$(PYTHON) -m gateway check policies
