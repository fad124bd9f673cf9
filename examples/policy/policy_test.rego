# `opa test examples/policy` runs these (conftest: `conftest verify -p examples/policy`). Each test
# feeds policy.rego a small plan document shaped like `trustplan show plan.bin --format json`: one
# control plane rotated from CA `old` to CA `new` in four phases (accept, swap, outputs, remove).
package main

import rego.v1

gate(pki, issuer) := {"kind": "gate", "pki": pki, "nodes": ["10.5.0.2"], "credential": {"issuer": issuer}}

edit(kind, ca) := {"kind": kind, "node": "10.5.0.2", "pki": "talos", "ca": ca}

new_ca := {
	"name": "talos-new", "pki": "talos", "fingerprint": "sha256:new", "new": true,
	"not_before": "2026-12-06T00:00:00Z", "not_after": "2036-12-03T00:00:00Z",
}

plan := {
	"format_version": 1,
	"authorities": [new_ca],
	"nodes": [{
		"address": "10.5.0.2",
		"live": {"talos": {"issuer": "sha256:old", "accepted": []}},
		"targets": {"talos": {
			"before": {"issuer": "sha256:old", "accepted": []},
			"after": {"issuer": "sha256:new", "accepted": []},
		}},
	}],
	"phases": [
		{"name": "accept", "edits": [edit("accept", "sha256:new")], "gates": [gate("talos", "sha256:new")]},
		{"name": "swap", "edits": [edit("swap", "sha256:new")], "gates": [gate("talos", "sha256:new")]},
		{"name": "outputs", "edits": [], "gates": []},
		{"name": "remove", "edits": [edit("remove", "sha256:old")], "gates": [gate("talos", "sha256:new")]},
	],
}

test_a_safe_rotation_passes if {
	count(deny) == 0 with input as plan
}

test_remove_without_an_earlier_gate_is_denied if {
	bad := json.patch(plan, [
		{"op": "replace", "path": "/phases/0/gates", "value": []},
		{"op": "replace", "path": "/phases/1/gates", "value": []},
	])
	some msg in deny with input as bad
	startswith(msg, "remove-before-verified: phase 4 (remove) removes sha256:old from 10.5.0.2")
}

test_a_gate_of_the_removing_phase_itself_does_not_count if {
	bad := json.patch(plan, [
		{"op": "replace", "path": "/phases/0/gates", "value": []},
		{"op": "replace", "path": "/phases/1/gates", "value": [gate("talos", "sha256:old")]},
	])
	count(deny) == 1 with input as bad
}

test_a_short_lived_new_ca_is_denied if {
	bad := json.patch(plan, [{"op": "replace", "path": "/authorities/0/not_after", "value": "2027-03-01T00:00:00Z"}])
	deny["short-lived-ca: new talos CA sha256:new is valid for 85 days, less than 365"] with input as bad
}

test_a_short_lived_ca_the_nodes_already_trust_is_not_new if {
	old := json.patch(plan, [
		{"op": "replace", "path": "/authorities/0/not_after", "value": "2027-03-01T00:00:00Z"},
		{"op": "replace", "path": "/authorities/0/new", "value": false},
	])
	count(deny) == 0 with input as old
}

test_an_unknown_major_format_is_denied if {
	deny["format-version: plan document format_version 2 is not supported by this policy (it reads 1.x)"] with input as object.union(plan, {"format_version": 2})
}

rolling(up) := [{"member": "10.5.0.2", "restart": true, "members": 3, "up_during": up, "quorum": 2,
	"issuer": "sha256:new", "accepted": ["sha256:old"]}]

test_an_etcd_restart_that_keeps_quorum_passes if {
	ok := object.union(plan, {"phases": [object.union(plan.phases[0], {"etcd_rolling": rolling(2)})]})
	count(deny) == 0 with input as ok
}

test_an_etcd_restart_below_quorum_is_denied if {
	bad := object.union(plan, {"phases": [object.union(plan.phases[0], {"etcd_rolling": rolling(1)})]})
	deny["etcd-quorum: phase accept restarts etcd on 10.5.0.2 with 1 of 3 members up, fewer than the quorum of 2"] with input as bad
}
