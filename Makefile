# The two commands of the README: `make demo` and `make test`.
# Both build the virtual environment on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

# The JupyterLab extension (src/, style/) is built into jupyter_warden/labextension.
LABEXT := jupyter_warden/labextension/package.json
LABEXT_SOURCES := package.json yarn.lock tsconfig.json .yarnrc.yml $(shell find src style -type f 2>/dev/null)
JLPM := PATH=$(abspath $(VENV))/bin:$$PATH jlpm

.PHONY: demo test test-sqlite test-postgres bench bench-load system-deps venv eg-venv labextension clean

# Jupyter Enterprise Gateway (tests/test_pool.py, bench/pool_roundtrip.py) pins
# jupyter_server 1 and jupyter_client 6: it lives in a virtual environment of
# its own, started as a separate process (docs/pool.md).
EG_VENV ?= .venv-eg
EG_STAMP := $(EG_VENV)/.installed-$(shell cat scripts/eg-requirements.txt | cksum | cut -d' ' -f1)

$(STAMP): pyproject.toml
	@# pip builds the JupyterLab extension (src/) with node, through jlpm.
	command -v node >/dev/null || scripts/system-deps.sh nodejs
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# `pip install -e` builds the extension too, but copies it into the venv;
# after it, and whenever a source changes, rebuild and link the venv's copy
# to the build (`jupyter builder develop`), so a change in src/ is served.
$(LABEXT): $(STAMP) $(LABEXT_SOURCES)
	$(JLPM) install
	$(JLPM) build:prod
	$(VENV)/bin/jupyter-builder develop --overwrite .
	touch $@

labextension: $(LABEXT)

venv: $(STAMP) $(LABEXT)

$(EG_STAMP): scripts/eg-requirements.txt
	python3 -m venv $(EG_VENV)
	$(EG_VENV)/bin/python -m pip install -q --upgrade pip
	$(EG_VENV)/bin/python -m pip install -q -r scripts/eg-requirements.txt
	rm -f $(EG_VENV)/.installed-*
	touch $@

eg-venv: $(EG_STAMP)

system-deps:
	scripts/system-deps.sh
	scripts/hub-proxy.sh

demo: venv
	scripts/system-deps.sh bubblewrap
	$(VENV)/bin/jupyter-warden demo

test: test-sqlite test-postgres

# The JupyterHub tests install JupyterHub's identity classes process-wide:
# they run in a pytest process of their own.
HUB_TESTS := tests/test_hub.py tests/test_hub_accounts.py

test-sqlite: venv system-deps eg-venv
	$(PY) -m pytest $(PYTEST_ARGS) $(addprefix --ignore=,$(HUB_TESTS))
	$(PY) -m pytest $(PYTEST_ARGS) $(HUB_TESTS)

# The browser and JupyterHub tests drive the UI and the hub's OAuth, not the
# store; the pool test (tests/test_pool.py), the kernel cgroups and the API
# fuzzing (its schemas and statuses are the same on either store) use the
# store as any server does: they run once, in the SQLite pass, to keep CI's
# time in bounds.
POSTGRES_SKIPS := tests/test_browser_labext.py tests/test_browser_rtc.py tests/test_pool.py \
	tests/test_sandbox_cgroups.py tests/test_fuzz_api.py $(HUB_TESTS)

test-postgres: venv system-deps
	WARDEN_TEST_POSTGRES=$$(scripts/test-postgres.sh) $(PY) -m pytest $(PYTEST_ARGS) \
		$(addprefix --ignore=,$(POSTGRES_SKIPS))

# Measures, never fails on a missed target; see docs/benchmarks.md.
# WARDEN_BENCH_SCALE=0.1 makes the policy store ten times smaller.
bench: venv eg-venv system-deps
	$(PY) bench/policy_check.py
	$(PY) bench/listing.py
	$(PY) bench/kernel_channels.py
	$(PY) bench/kernel_start.py
	$(PY) bench/rtc_fanout.py
	$(PY) bench/secrets_masking.py
	$(PY) bench/sealed_run.py
	$(PY) bench/pool_roundtrip.py
	$(PY) bench/load.py

# Only the load: 50 users for 10 minutes on one server (issue 10).
bench-load: venv
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) $(EG_VENV) .pytest_cache node_modules lib tsconfig.tsbuildinfo jupyter_warden/labextension
