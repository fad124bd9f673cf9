#!/usr/bin/env bash
# Build the real etcd server, pinned at the version Talos 1.14 ships (v3.7.1), from the Go module
# proxy, into a cache outside the checkout. Prints the binary's path. Built once per machine: a second
# run finds it and returns at once.
#
# go.etcd.io/etcd/server/v3's go.mod replaces its sibling modules with ../api, ../client/..., which a
# module download does not have, so `go install` refuses; a wrapper module requires the server and
# pins each sibling (api, client/pkg, client/v3, pkg) at the same published version instead.
set -euo pipefail
VERSION=${ETCD_VERSION:-v3.7.1}
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/etcd-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "etcd.sh: go is not installed" >&2; exit 1; }

WORK="$CACHE/src/etcd-$VERSION"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
server_dir=$(go mod download -json "go.etcd.io/etcd/server/v3@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')

go mod init trustplan.local/peers/etcd >/dev/null 2>&1
go_line=$(grep -m1 '^go ' "$server_dir/go.mod")
sed -i "s/^go .*/$go_line/" go.mod
cat >> go.mod <<MOD

require go.etcd.io/etcd/server/v3 $VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $VERSION
)
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
cp "$server_dir/go.sum" go.sum
go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -o "$BIN.partial" go.etcd.io/etcd/server/v3 >&2
mv "$BIN.partial" "$BIN"
echo "$BIN"
