# The two commands a fresh machine needs (see README): `make demo` and `make test`.
# Both run the bootstrap first; it installs only what is missing, into the project's virtual environment
# ($(VENV)); every target runs that environment's python, never the system's.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: bootstrap demo test stack-up stack-down

bootstrap:
	@LEDGERWIRE_VENV=$(VENV) bash scripts/bootstrap.sh

demo: bootstrap
	$(PYTHON) -m daemon.cli demo $(DEMO_ARGS)

test: bootstrap
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

stack-up: bootstrap
	$(PYTHON) -m daemon.cli stack up

stack-down: bootstrap
	$(PYTHON) -m daemon.cli stack down
