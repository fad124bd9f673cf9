# conftest / OPA policy for trustplan plan documents (`trustplan show plan.bin --format json`).
#
#   trustplan show plan.bin --format json > plan.json
#   opa eval --fail-defined -d examples/policy/policy.rego -i plan.json 'data.main.deny[msg]'   # exit 1: denied
#   conftest test plan.json -p examples/policy                                                 # exit 1: denied
#   opa test examples/policy                             # the policy's own tests (policy_test.rego)
# (`opa eval ... 'data.main.deny'` without --fail-defined and `[msg]` exits 0 whatever it finds.)
#
# The same rules as check_plan.py:
#   remove-before-verified  a `remove` edit on a node for a PKI with no verification gate in an
#                           earlier phase that reached that node with a credential from the node's
#                           new issuer
#   sa-no-drain             a `remove` of a service-account key in the plan that swaps it away
#                           (no token drain: tokens it signed stop working before they expire)
#   short-lived-ca          a CA the plan introduces (no node trusted it before) valid < 365 days
#   format-version          a document of a major format version this policy does not know (it reads
#                           1.x: later minor versions only add fields, which it ignores)
package main

import rego.v1

min_validity_ns := ((365 * 24) * 3600) * 1000000000

ns_per_day := (24 * 3600) * 1000000000

supported_major := 1

deny contains msg if {
	not input.format_version == supported_major
	msg := sprintf(
		"format-version: plan document format_version %v is not supported by this policy (it reads %d.x)",
		[object.get(input, "format_version", "missing"), supported_major],
	)
}

# The node's issuer for `pki` once the plan has run.
new_issuer(address, pki) := issuer if {
	some node in input.nodes
	node.address == address
	issuer := node.targets[pki].after.issuer
}

# The node's issuer for `pki` before the plan.
old_issuer(address, pki) := issuer if {
	some node in input.nodes
	node.address == address
	issuer := node.targets[pki].before.issuer
}

verified_before(index, address, pki, issuer) if {
	some k, phase in input.phases
	k < index
	some gate in phase.gates
	gate.pki == pki
	gate.credential.issuer == issuer
	address in gate.nodes
}

deny contains msg if {
	some i, phase in input.phases
	some edit in phase.edits
	edit.kind == "remove"
	old_issuer(edit.node, edit.pki) != new_issuer(edit.node, edit.pki)
	not verified_before(i, edit.node, edit.pki, new_issuer(edit.node, edit.pki))
	msg := sprintf(
		"remove-before-verified: phase %d (%s) removes %s from %s (%s) before a gate has verified a credential from its new issuer there",
		[i + 1, phase.name, edit.ca, edit.node, edit.pki],
	)
}

trusted_before contains fp if {
	some node in input.nodes
	some trust in node.live
	fp := trust.issuer
	fp != null
}

trusted_before contains fp if {
	some node in input.nodes
	some trust in node.live
	some fp in trust.accepted
}

# New in this plan: format 1.1 says so (`new`); for 1.0 documents, no node trusted it before.
is_new(a) if a.new == true

is_new(a) if {
	not "new" in object.keys(a)
	not a.fingerprint in trusted_before
}

deny contains msg if {
	some a in input.authorities
	is_new(a)
	validity := time.parse_rfc3339_ns(a.not_after) - time.parse_rfc3339_ns(a.not_before)
	validity < min_validity_ns
	msg := sprintf(
		"short-lived-ca: new %s CA %s is valid for %d days, less than 365",
		[a.pki, a.fingerprint, floor(validity / ns_per_day)],
	)
}

deny contains msg if {
	some swap_phase in input.phases
	some swap in swap_phase.edits
	swap.kind == "swap"
	swap.pki == "serviceaccount"
	some phase in input.phases
	some edit in phase.edits
	edit.kind == "remove"
	edit.pki == "serviceaccount"
	edit.ca == swap.old
	msg := sprintf(
		"sa-no-drain: phase %s removes the service-account key %s from %s in the plan that swaps it away",
		[phase.name, edit.ca, edit.node],
	)
}

deny contains msg if {
	some phase in input.phases
	some step in phase.etcd_rolling
	step.restart
	step.up_during < step.quorum
	msg := sprintf(
		"etcd-quorum: phase %s restarts etcd on %s with %d of %d members up, fewer than the quorum of %d",
		[phase.name, step.member, step.up_during, step.members, step.quorum],
	)
}
