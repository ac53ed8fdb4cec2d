# pacsdeck: `make run` (venv, install, a node on this box) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NODE_DIR ?= demo
# Tests run in parallel: one node process per test module, each on its own free port.
PYTEST_ARGS ?= -n auto

.PHONY: venv run test lint bench soak clean

$(BIN)/pacsdeck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,codecs]'
	touch $@

venv: $(BIN)/pacsdeck

# The node in $(NODE_DIR) (initialised if new) under the console; quitting the console stops it.
run: venv
	$(BIN)/pacsdeck up --dir $(NODE_DIR)

lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/ingest.py --repeat 3 --json bench/out/ingest.json
	$(BIN)/python bench/query.py --json bench/out/query.json
	$(BIN)/python bench/migrate.py --gb 2 --repeat 3
	$(BIN)/python bench/forward.py --repeat 3 --json bench/out/forward.json
	$(BIN)/python bench/agent_latency.py
	$(BIN)/python bench/health.py
	$(BIN)/python bench/preview.py
	$(BIN)/python bench/fleet.py --json bench/out/fleet.json
	$(BIN)/python bench/console_ui.py --json bench/out/console_ui.json

# The C-STORE mutation corpus at soak size (over 2,000 damaged instances; tests/test_store_mutations.py).
soak: venv
	PACSDECK_SOAK=1 $(BIN)/python -m pytest tests/test_store_mutations.py -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
