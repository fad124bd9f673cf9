#!/usr/bin/env bash
# Rotate both CAs of the bundled example (examples/files: 3 control planes + 2 workers as
# machine-config files) in a scratch copy: validate, plan (printed), apply, status.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tp="$root/.venv/bin/trustplan"
work="$(mktemp -d -t trustplan-demo-files.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/examples/files/." "$work/"
cd "$work"
# bold step lines in a terminal only: a CI log gets no escape codes (NO_COLOR is honoured too)
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
step trustplan validate;                     "$tp" validate
step trustplan plan -o plan.bin;             "$tp" plan -o plan.bin || true
step trustplan apply plan.bin;               "$tp" apply plan.bin
step trustplan status;                       "$tp" status
step "openssl verify (new talosconfig cert against the new Talos CA)"
"$root/.venv/bin/python" - <<'PY'
import base64, yaml
tc = yaml.safe_load(open("talosconfig"))["contexts"]["demo"]
open("ca.pem", "wb").write(base64.b64decode(tc["ca"])); open("crt.pem", "wb").write(base64.b64decode(tc["crt"]))
PY
openssl verify -CAfile ca.pem crt.pem
step trustplan plan --detailed-exitcode;     "$tp" plan --detailed-exitcode && echo "exit 0: nothing left to do"
