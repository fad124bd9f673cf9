#!/usr/bin/env bash
# Build opa, pinned, from the Go module proxy, into a cache outside the checkout (like talosctl.sh).
# Prints the binary's path. Built once per machine: a second run finds it and returns at once.
# examples/policy's tests (tests/render/test_policy_examples.py) run opa from here.
set -euo pipefail
VERSION=${OPA_VERSION:-v1.22.4}
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/opa-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "opa.sh: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE"
GOBIN_DIR=$(mktemp -d "$CACHE/.opa-build.XXXXXX")
trap 'rm -rf "$GOBIN_DIR"' EXIT
# opa's go.mod has no replace directives, so `go install module@version` works as is.
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$GOBIN_DIR" \
    go install -trimpath "github.com/open-policy-agent/opa@$VERSION" >&2
mv "$GOBIN_DIR/opa" "$BIN"
echo "$BIN"
