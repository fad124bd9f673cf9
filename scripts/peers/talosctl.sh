#!/usr/bin/env bash
# Build the real talosctl, pinned, from the Go module proxy, into a cache outside the checkout.
# Prints the binary's path. Built once per machine: a second run finds it and returns at once.
#
# `go install .../cmd/talosctl@v1.12.1` refuses because talos's go.mod has replace directives, so a
# wrapper module requires talos and its machinery module, copies talos's versioned replaces (the
# local ./pkg/machinery one is dropped), and seeds go.sum from talos's and machinery's own go.sum
# (the checksum database does not know two of the forks).
set -euo pipefail
VERSION=${TALOSCTL_VERSION:-v1.12.1}
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/talosctl-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "talosctl.sh: go is not installed" >&2; exit 1; }

WORK="$CACHE/src/talosctl-$VERSION"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
talos_dir=$(go mod download -json "github.com/siderolabs/talos@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
mach_dir=$(go mod download -json "github.com/siderolabs/talos/pkg/machinery@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')

go mod init trustplan.local/peers/talosctl >/dev/null 2>&1
go_line=$(grep -m1 '^go ' "$talos_dir/go.mod")
sed -i "s/^go .*/$go_line/" go.mod
cat >> go.mod <<MOD

require (
	github.com/siderolabs/talos $VERSION
	github.com/siderolabs/talos/pkg/machinery $VERSION
)
MOD
# talos's replace directives that name a version (one-line and block forms), minus the local one.
python3 - "$talos_dir/go.mod" >> go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
lines = []
for block in re.findall(r"^replace \((.*?)^\)", text, re.S | re.M):
    lines += block.splitlines()
lines += [m for m in re.findall(r"^replace (\S.*=>.*)$", text, re.M)]
for line in lines:
    line = line.split("//")[0].strip()
    if "=>" in line and not line.split("=>")[1].strip().startswith("."):
        print("replace " + line)
PY
# Talos 1.14 pins modules the Go module proxy does not serve: drop the ethtool fork (the upstream
# release builds), and pin the nearest served versions of rtnetlink/v2 (v2.3.0 has RouteVia, which
# cmd/mgmt/bgp_launch_linux.go uses) and of the COSI runtime.
case "$VERSION" in
v1.14.*)
	sed -i '/mdlayher\/ethtool/d' go.mod
	cat >> go.mod <<'MOD'
replace github.com/jsimonetti/rtnetlink/v2 => github.com/jsimonetti/rtnetlink/v2 v2.3.0
replace github.com/cosi-project/runtime => github.com/cosi-project/runtime v1.16.2
MOD
	;;
esac
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/siderolabs/talos/cmd/talosctl"
GO
cat "$talos_dir/go.sum" "$mach_dir/go.sum" | sort -u > go.sum
go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -o "$BIN.partial" github.com/siderolabs/talos/cmd/talosctl >&2
mv "$BIN.partial" "$BIN"
echo "$BIN"
