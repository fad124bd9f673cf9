#!/usr/bin/env bash
# Build conftest, pinned, from the Go module proxy, into a cache outside the checkout (like talosctl.sh).
# Prints the binary's path. Built once per machine: a second run finds it and returns at once.
# examples/policy's tests (tests/render/test_policy_examples.py) run conftest from here.
set -euo pipefail
VERSION=${CONFTEST_VERSION:-v0.56.0}
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/conftest-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "conftest.sh: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE"
GOBIN_DIR=$(mktemp -d "$CACHE/.conftest-build.XXXXXX")
trap 'rm -rf "$GOBIN_DIR"' EXIT
# conftest's go.mod has no replace directives, so `go install module@version` works as is.
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$GOBIN_DIR" \
    go install -trimpath "github.com/open-policy-agent/conftest@$VERSION" >&2
mv "$GOBIN_DIR/conftest" "$BIN"
echo "$BIN"
