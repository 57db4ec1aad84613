# Two commands set everything up on a fresh machine:
#   make demo   - run the monitor on an embedded local demo swarm (no network needed)
#   make test   - install test deps (incl. real hivemind 1.1.12) and run lint + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint format proto bench bench-quick clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# torch==2.13.0 first: a CPU wheel lies on this machine's disk; anything else pulls a multi-GB CUDA build.
$(VENV)/.test: $(VENV)/.base
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m monitor demo $(ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(ARGS)

format: $(VENV)/.test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate dht/_pb from proto/ with a generator that emits protobuf 6.x code (py-libp2p needs protobuf<7).
proto: $(VENV)/.base
	$(PIP) install 'grpcio-tools>=1.70,<1.80'
	$(PY) -m grpc_tools.protoc -Iproto --python_out=dht/_pb --pyi_out=dht/_pb proto/dht.proto proto/p2pd.proto proto/runtime.proto

bench: $(VENV)/.test
	$(PY) -m bench $(ARGS)

bench-quick: $(VENV)/.test
	$(PY) -m bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
