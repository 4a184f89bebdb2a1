# The two commands of the README: `make demo` and `make test`.
# Both build the virtual environment on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test test-sqlite test-postgres bench system-deps venv clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

system-deps:
	scripts/system-deps.sh

demo: venv
	scripts/system-deps.sh bubblewrap
	$(VENV)/bin/jupyter-warden demo

test: test-sqlite test-postgres

test-sqlite: venv system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-postgres: venv system-deps
	WARDEN_TEST_POSTGRES=$$(scripts/test-postgres.sh) $(PY) -m pytest $(PYTEST_ARGS)

# Measures, never fails on a missed target; see docs/benchmarks.md.
# WARDEN_BENCH_SCALE=0.1 makes the policy store ten times smaller.
bench: venv
	$(PY) bench/policy_check.py
	$(PY) bench/listing.py
	$(PY) bench/kernel_channels.py

clean:
	rm -rf $(VENV) .pytest_cache
