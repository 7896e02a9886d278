# Developer entry points. `make bench ARGS="--quick"` passes options to the benchmark.
PYTHON ?= .venv/bin/python
ARGS ?=

.PHONY: bench test run check openapi docs deploy-test

bench:
	$(PYTHON) -m bench.run $(ARGS)

test:
	bash scripts/test.sh

run:
	bash scripts/run.sh

check:
	$(PYTHON) -m gateway check policies

# Regenerate policies/openapi.yaml from the upstream's models and the route table.
openapi:
	$(PYTHON) -m upstream_stub openapi | $(PYTHON) -m gateway openapi generate --upstream -

# Regenerate docs/policy-reference.md and docs/reasons.md.
docs:
	$(PYTHON) -m gateway.docsgen

# Build the image and prove deploy/compose.yaml in real containers (Docker; see deploy/README.md).
deploy-test:
	bash scripts/deploy-test.sh $(ARGS)
