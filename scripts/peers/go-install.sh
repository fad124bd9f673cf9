#!/usr/bin/env bash
# Usage: go-install.sh NAME MODULE VERSION
# Build the Go command MODULE (its main package at the module root, e.g. github.com/open-policy-agent/opa),
# pinned at VERSION, from the Go module proxy into a cache outside the checkout, as NAME-VERSION.
# Prints the binary's path. Built once per machine: a later run finds it and returns at once.
# For modules whose go.mod has no replace directives (opa, conftest): `go install module@version`
# works as is. The others (talosctl, kube-apiserver, etcd) need a wrapper module: their own scripts.
set -euo pipefail
if [[ $# -ne 3 ]]; then echo "usage: go-install.sh NAME MODULE VERSION" >&2; exit 2; fi
NAME=$1 MODULE=$2 VERSION=$3
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/$NAME-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "go-install.sh: go is not installed (needed to build $NAME)" >&2; exit 1; }
mkdir -p "$CACHE"
GOBIN_DIR=$(mktemp -d "$CACHE/.$NAME-build.XXXXXX")
trap 'rm -rf "$GOBIN_DIR"' EXIT
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$GOBIN_DIR" go install -trimpath "$MODULE@$VERSION" >&2
mv "$GOBIN_DIR/${MODULE##*/}" "$BIN"
echo "$BIN"
