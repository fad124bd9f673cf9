#!/usr/bin/env bash
# Build the real kube-apiserver, pinned, from the Go module proxy, into a cache outside the checkout.
# Prints the binary's path. Built once per machine: a second run finds it and returns at once.
#
# k8s.io/kubernetes's go.mod replaces each k8s.io/<m> with ./staging/src/k8s.io/<m>, which a module
# download does not have, so a wrapper module requires k8s.io/kubernetes and turns each of those
# replaces into the published k8s.io/<m> v0.<minor>.<patch>; go.sum is seeded from kubernetes's own.
# Without the version ldflags the binary reports v0.0.0-master.
set -euo pipefail
VERSION=${KUBE_APISERVER_VERSION:-v1.34.4}
CACHE=${TRUSTPLAN_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/trustplan/peers}
BIN="$CACHE/kube-apiserver-$VERSION"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "kube-apiserver.sh: go is not installed" >&2; exit 1; }

WORK="$CACHE/src/kube-apiserver-$VERSION"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
kube_dir=$(go mod download -json "k8s.io/kubernetes@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
staging="v0.${VERSION#v1.}"  # v1.34.4 -> v0.34.4: the staging modules' published versions

go mod init trustplan.local/peers/kube-apiserver >/dev/null 2>&1
go_line=$(grep -m1 '^go ' "$kube_dir/go.mod")
sed -i "s/^go .*/$go_line/" go.mod
printf '\nrequire k8s.io/kubernetes %s\n' "$VERSION" >> go.mod
# Every `k8s.io/<m> => ./staging/src/k8s.io/<m>` replace, pointed at the published module instead.
python3 - "$kube_dir/go.mod" "$staging" >> go.mod <<'PY'
import re, sys
text, staging = open(sys.argv[1]).read(), sys.argv[2]
for module in sorted(set(re.findall(r"^\s*(?:replace\s+)?(k8s\.io/\S+)\s+=>\s+\./staging/", text, re.M))):
    print(f"replace {module} => {module} {staging}")
PY
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
cp "$kube_dir/go.sum" go.sum
go mod tidy >&2
pkg=k8s.io/component-base/version
ldflags="-X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(cut -d. -f2 <<<"$VERSION") -X $pkg.gitTreeState=clean"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN.partial" k8s.io/kubernetes/cmd/kube-apiserver >&2
mv "$BIN.partial" "$BIN"
echo "$BIN"
