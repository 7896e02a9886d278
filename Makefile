# Developer entry points. `make bench ARGS="--quick"` passes options to the benchmark.
PYTHON ?= .venv/bin/python
ARGS ?=

.PHONY: bench test run check deploy-test

bench:
	$(PYTHON) -m bench.run $(ARGS)

test:
	bash scripts/test.sh

run:
	bash scripts/run.sh

check:
	$(PYTHON) -m gateway check policies

# Build the image and prove deploy/compose.yaml in real containers (Docker; see deploy/README.md).
deploy-test:
	bash scripts/deploy-test.sh $(ARGS)
