# trustplan: `make demo` runs the main job, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-faults test-realk8s demo demo-files lint typecheck unit proto bench interop race clean install bytecode

# The strict editable install (the one mypy can follow) links each file of the package: it is redone
# when pyproject.toml or the list of package files changes, not on every run. Its output goes to a
# log shown only on failure (setuptools prints a long warning about strict editable installs).
PKG_FILES := $(shell find trustplan planner providers state schemas sim -type f \( -name '*.py' -o -name '*.json' -o -name py.typed \) -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort)
FILELIST := $(VENV)/.package-files
# rewritten (new mtime) only when the list changes, so `make -q install` says whether anything is to do
_ := $(shell mkdir -p $(VENV) && (echo '$(PKG_FILES)' | cmp -s - $(FILELIST) || echo '$(PKG_FILES)' > $(FILELIST)))

$(BIN)/python:
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(STAMP): $(BIN)/python pyproject.toml $(FILELIST)
	@echo "installing trustplan into $(VENV) (editable)"
	@$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict >$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@rm -rf $(VENV)/.mypy_cache  # its cache goes stale when the set of linked files changes
	@touch $(STAMP)

# Byte-compile the package as pip does for a wheel: with PYTHONDONTWRITEBYTECODE set (as on this
# project's machines) every trustplan process would otherwise compile its ~100 modules at start
# (~0.1 s of CPU per command, tests' subprocesses included). Cheap when up to date (mtimes compared);
# a module edited since is compiled again in memory until the next `make`.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import os, trustplan; print(os.path.dirname(trustplan.__file__))')" >/dev/null

install: $(STAMP)

lint: $(STAMP)
	@$(BIN)/ruff check --quiet .

# mypy --strict on the whole package (pyproject.toml [tool.mypy]; only the generated protobuf code is exempt)
typecheck: $(STAMP)
	@cd $(VENV) && ../$(BIN)/mypy --config-file ../pyproject.toml -p trustplan -p trustplan_sim

unit: bytecode
	@$(BIN)/pytest

test: $(STAMP)
	@$(MAKE) --no-print-directory lint typecheck unit

# The fault matrix and the kill test (issue 8): slow, so not part of `make test`.
# TRUSTPLAN_KILLS=20 and TRUSTPLAN_KILL_SEED=7 make a shorter or a repeatable run.
test-faults: bytecode
	$(BIN)/pytest -m faults -s -p no:cacheprovider tests/faults

# `trustplan sim --k8s real` (docs/real-kubernetes.md): rotations against a real etcd and kube-apiserver
# v1.34.4 on each simulated control plane. Fails (never skips) in CI when a binary is missing.
test-realk8s: bytecode
	$(BIN)/pytest -m realk8s -p no:cacheprovider tests/realk8s

# The main job on the bundled example, in a scratch copy: validate, plan (printed), apply, status.
# Its simulated nodes use 127.20.0.0/24; another subnet: TRUSTPLAN_DEMO_SUBNET=127.21.0.0/24 make demo
demo: bytecode
	@bash scripts/demo.sh

demo-files: bytecode
	@bash scripts/demo-files.sh

proto: $(STAMP)
	$(BIN)/python providers/talos/proto/generate.py

# Real peers the tests run against, built once per machine into ~/.cache/trustplan/peers (~12 min).
.PHONY: peers
peers:
	bash scripts/peers/talosctl.sh
	TALOSCTL_VERSION=v1.14.1 bash scripts/peers/talosctl.sh
	bash scripts/peers/kube-apiserver.sh
	bash scripts/peers/etcd.sh
	bash scripts/peers/go-install.sh opa github.com/open-policy-agent/opa v1.22.4
	bash scripts/peers/go-install.sh conftest github.com/open-policy-agent/conftest v0.56.0

# One rotation, 3 control planes + 50 workers at 20 ms per RPC: one JSON line (benchmarks/rotate.py).
bench: bytecode
	$(BIN)/python benchmarks/rotate.py --controlplanes 3 --workers 50 --latency-ms 20

# The real talosctl as judge: build v1.12.1 and v1.14.1 once per machine (cached in
# ~/.cache/trustplan/peers), then run every test marked `interop` against each of them. Fails (never
# skips) when talosctl cannot be built. TALOSCTL=/path/to/talosctl runs the cases against that one.
TALOSCTL_VERSIONS := v1.12.1 v1.14.1
interop: bytecode
	@if [ -z "$$TALOSCTL" ]; then for v in $(TALOSCTL_VERSIONS); do \
		TALOSCTL_VERSION=$$v bash scripts/peers/talosctl.sh >/dev/null || exit 1; done; fi
	$(BIN)/pytest -m interop tests/interop

# talosctl rotate-ca vs trustplan plan+apply on the same simulated clusters (docs/interop.md figures).
race: bytecode
	TALOSCTL=$$(bash scripts/peers/talosctl.sh) && export TALOSCTL && $(BIN)/python benchmarks/race_talosctl.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
