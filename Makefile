# The two commands a fresh machine needs (see README): `make demo` and `make test`.
# Both run the bootstrap first; it installs only what is missing.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: bootstrap demo test stack-up stack-down

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PYTHON) -m daemon.cli demo

test: bootstrap
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

stack-up: bootstrap
	$(PYTHON) -m daemon.cli stack up

stack-down:
	$(PYTHON) -m daemon.cli stack down
