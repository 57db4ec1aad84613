# Two commands set everything up on a fresh machine:
#   make demo   - run the monitor on an embedded local demo swarm (no network needed)
#   make test   - install test deps (incl. real hivemind 1.1.12 and, in a venv of its own, real Petals 2.2.0.post1)
#                 and run lint + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo demo-petals test lint format proto bench bench-quick clean browser postgres petals-venv promtool

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# torch==2.13.0 first: a CPU wheel lies on this machine's disk; anything else pulls a multi-GB CUDA build.
$(VENV)/.test: $(VENV)/.base
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test,postgres]'
	touch $@

# Debian's chromium for the browser tests (no browser downloads). Installed when missing and we are root
# (CI is); elsewhere the browser tests say they were skipped and why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "WARNING: could not install chromium; browser tests will be skipped"; \
	else echo "chromium not found and not root: browser tests will be skipped"; fi

# Debian's promtool for the deploy/ tests: unpacked from the `prometheus` package into the cache (never installed,
# so no Prometheus server starts). Where apt-get is missing, the promtool tests say they were skipped and why.
PROMTOOL_DIR := $(HOME)/.cache/petals-monitor/promtool
promtool:
	@if command -v promtool >/dev/null 2>&1 || [ -x $(PROMTOOL_DIR)/usr/bin/promtool ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then \
	  echo "unpacking Debian's promtool for the deploy tests"; mkdir -p $(PROMTOOL_DIR); \
	  (cd $(PROMTOOL_DIR) && (apt-get download -qq prometheus 2>/dev/null \
	    || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq prometheus; }) \
	    && dpkg-deb -x prometheus_*.deb . && rm -rf prometheus_*.deb usr/bin/prometheus usr/share) \
	    || echo "WARNING: could not unpack promtool; its deploy tests will be skipped"; \
	else echo "apt-get not found: promtool deploy tests will be skipped"; fi

# Debian's PostgreSQL for the `postgres` tests (each session starts a throwaway cluster of its own on 127.0.0.1,
# tests/pg_cluster.py). Installed when missing and we are root (CI is); elsewhere those tests say they were skipped.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql for the postgres tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	    || echo "WARNING: could not install postgresql; postgres tests will be skipped"; \
	else echo "PostgreSQL not found and not root: postgres tests will be skipped"; fi

demo: $(VENV)/.base
	$(PY) -m monitor demo $(ARGS)

# Real Petals 2.2.0.post1 in a venv of its own (never beside py-libp2p), cached under ~/.cache/petals-monitor/ and
# keyed by its pins: built once (a few minutes), then a no-op. The `petals` tests and demo-petals run on it.
petals-venv:
	$(PYTHON) tests/realpetals/petals_venv.py

# A swarm of real Petals servers on 127.0.0.1 with the monitor on it; prints the dashboard URL, Ctrl-C stops all.
demo-petals: $(VENV)/.base petals-venv
	$(PY) tests/realpetals/demo.py $(ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint browser promtool postgres petals-venv
	$(PY) -m pytest $(ARGS)

format: $(VENV)/.test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate dht/_pb from proto/ with a generator that emits protobuf 6.x code (py-libp2p needs protobuf<7).
proto: $(VENV)/.base
	$(PIP) install 'grpcio-tools>=1.70,<1.80'
	$(PY) -m grpc_tools.protoc -Iproto --python_out=dht/_pb --pyi_out=dht/_pb proto/dht.proto proto/p2pd.proto proto/runtime.proto

bench: $(VENV)/.test
	$(PY) -m bench --summary bench/LAST_RUN.md $(ARGS)

bench-quick: $(VENV)/.test
	$(PY) -m bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
