#!/usr/bin/env bash
# The main job: rotate both root CAs (Talos API and Kubernetes API) of a simulated 3 control plane +
# 2 worker Talos cluster with a Kubernetes API (`trustplan sim up --k8s`). Plans and applies both
# rotations, shows status, and proves with plain clients (grpclib + ssl for Talos; curl, or Python
# ssl + http.client, for Kubernetes) that the old talosconfig and kubeconfig are refused and the new
# ones work: every node Ready on every control plane's Kubernetes API. Then stops the simulator.
# The simulated nodes listen on 127.20.0.0/24; when that subnet is taken (another simulator), choose
# another: `TRUSTPLAN_DEMO_SUBNET=127.21.0.0/24 make demo`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tp="$root/.venv/bin/trustplan"
py="$root/.venv/bin/python"
dir="$(mktemp -d -t trustplan-demo.XXXXXX)"
subnet="${TRUSTPLAN_DEMO_SUBNET:-127.20.0.0/24}"
cleanup() { "$tp" sim down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
# bold step lines in a terminal only: a CI log gets no escape codes (NO_COLOR is honoured too)
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }

k8s=(--k8s --apiserver-restart-ms 1000 --kubelet-rejoin-ms 500)
step trustplan sim up --controlplanes 3 --workers 2 "${k8s[@]}" --dir "$dir" --subnet "$subnet" '&'
"$tp" sim up --controlplanes 3 --workers 2 "${k8s[@]}" --dir "$dir" --subnet "$subnet" >"$dir/sim.log" 2>&1 &
for _ in $(seq 1 100); do [ -f "$dir/sim.json" ] && break; sleep 0.1; done
[ -f "$dir/sim.json" ] || { cat "$dir/sim.log"; echo "the simulator did not start on $subnet; if the subnet is" \
  "taken, choose another: TRUSTPLAN_DEMO_SUBNET=127.21.0.0/24 make demo" >&2; exit 1; }
cp "$dir/talosconfig" "$dir/talosconfig.old"
cp "$dir/kubeconfig" "$dir/kubeconfig.old"
cd "$dir"

step cat trustplan.yaml;              cat trustplan.yaml
step trustplan plan -o plan.bin;      "$tp" plan -o plan.bin
step trustplan apply plan.bin;        "$tp" apply plan.bin
step trustplan status;                "$tp" status

step "Version on every node, with the old and the new talosconfig (a plain grpclib + ssl client)"
"$py" "$root/scripts/version_check.py" talosconfig.old talosconfig

step "GET /api/v1/nodes on every control plane, with the old and the new kubeconfig (curl, else Python ssl)"
"$py" "$root/scripts/kube_check.py" kubeconfig.old kubeconfig sim.json

step trustplan plan --detailed-exitcode; "$tp" plan --detailed-exitcode >/dev/null && echo "exit 0: nothing left to do"
step trustplan sim down --dir "$dir";    "$tp" sim down --dir "$dir"
