# trustplan: `make demo` runs the main job, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-faults demo demo-files lint typecheck unit proto bench interop race clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	cd $(VENV) && ../$(BIN)/mypy --config-file ../pyproject.toml -p trustplan.planner
	cd $(VENV) && ../$(BIN)/mypy --config-file ../pyproject.toml -p trustplan

unit: $(STAMP)
	$(BIN)/pytest

test: $(STAMP)
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict
	$(MAKE) lint typecheck unit

# The fault matrix and the kill test (issue 8): slow, so not part of `make test`.
# TRUSTPLAN_KILLS=20 and TRUSTPLAN_KILL_SEED=7 make a shorter or a repeatable run.
test-faults: $(STAMP)
	$(BIN)/pytest -m faults -s -p no:cacheprovider tests/faults

# The main job on the bundled example, in a scratch copy: validate, plan (printed), apply, status.
demo: $(STAMP)
	@bash scripts/demo.sh

demo-files: $(STAMP)
	@bash scripts/demo-files.sh

proto: $(STAMP)
	$(BIN)/python providers/talos/proto/generate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/rotation.py

# The real talosctl as judge: build it once per machine (cached in ~/.cache/trustplan/peers), then
# run every test marked `interop` against it. Fails (never skips) when talosctl cannot be built.
interop: $(STAMP)
	TALOSCTL=$$(bash scripts/peers/talosctl.sh) && export TALOSCTL && $(BIN)/pytest -m interop tests/interop

# talosctl rotate-ca vs trustplan plan+apply on the same simulated clusters (README figures).
race: $(STAMP)
	TALOSCTL=$$(bash scripts/peers/talosctl.sh) && export TALOSCTL && $(BIN)/python benchmarks/race_talosctl.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
