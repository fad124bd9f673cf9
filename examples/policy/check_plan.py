#!/usr/bin/env python3
"""Fail a trustplan plan that is unsafe to apply, by reading its JSON document.

    trustplan show plan.bin --format json > plan.json
    python3 check_plan.py plan.json          # or: trustplan show plan.bin --format json | python3 check_plan.py

Rules (the same as policy.rego, for conftest users):
  remove-before-verified  a node whose issuer the plan changes loses a CA (a `remove` edit)
                          before a verification gate in an earlier phase has reached that node,
                          for that PKI, with a client certificate from the node's new issuer
                          (revoke-only removes, where the issuer stays, are not concerned)
  sa-no-drain             the plan removes a service-account key in the plan that swaps it away (no
                          token drain: tokens it signed stop working before they expire)
  short-lived-ca          the plan introduces a CA (one no node trusted before) valid for less than
                          365 days
  format-version          the document's major format_version is not 1 (this script reads 1.x:
                          later minor versions only add fields, which it ignores)

Exit status: 0 the plan passes, 1 it violates a rule (one line per violation on stdout), 2 the
input is not a plan document. Standard library only, so it runs anywhere Python 3.9+ does.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

MIN_VALIDITY = dt.timedelta(days=365)
SUPPORTED_MAJOR = 1


def _time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


def _verified_before(phases: list[dict[str, Any]], index: int, node: str, pki: str, issuer: str | None) -> bool:
    """A gate of an earlier phase reached `node` over `pki` with a credential from `issuer`."""
    return any(
        gate["pki"] == pki and gate["credential"]["issuer"] == issuer and node in gate["nodes"]
        for phase in phases[:index]
        for gate in phase["gates"]
    )


def violations(doc: dict[str, Any]) -> list[str]:
    """Every rule the plan breaks, as one message each (empty: the plan passes)."""
    version = doc["format_version"]
    if version != SUPPORTED_MAJOR or isinstance(version, bool):
        return [
            f"format-version: plan document format_version {version!r} is not supported by this policy "
            f"(it reads {SUPPORTED_MAJOR}.x)"
        ]
    out: list[str] = []
    nodes = {n["address"]: n for n in doc["nodes"]}
    names = {a["fingerprint"]: a.get("name") or a["fingerprint"][:19] for a in doc["authorities"]}
    phases = doc["phases"]
    for index, phase in enumerate(phases):
        for edit in phase["edits"]:
            if edit["kind"] != "remove":
                continue
            target = nodes.get(edit["node"], {}).get("targets", {}).get(edit["pki"])
            issuer = target["after"]["issuer"] if target else None
            if target and target["before"]["issuer"] == issuer:
                continue  # the plan does not change this node's issuer (revoke only, or resuming)
            if not _verified_before(phases, index, edit["node"], edit["pki"], issuer):
                out.append(
                    f"remove-before-verified: phase {index + 1} ({phase['name']}) removes "
                    f"{names.get(edit['ca'], edit['ca'])} from {edit['node']} ({edit['pki']}) before a gate has "
                    f"verified a credential from its new issuer {names.get(issuer or '', issuer)} there"
                )
    swapped = {e["old"] for p in phases for e in p["edits"] if e["kind"] == "swap" and e["pki"] == "serviceaccount"}
    for phase in phases:
        for edit in phase["edits"]:
            if edit["kind"] == "remove" and edit["pki"] == "serviceaccount" and edit["ca"] in swapped:
                out.append(
                    f"sa-no-drain: phase {phase['name']} removes the service-account key "
                    f"{names.get(edit['ca'], edit['ca'])} from {edit['node']} in the plan that swaps it away: "
                    "tokens it signed stop working before they expire (set trust.serviceaccount.drain)"
                )
    for phase in phases:
        for step in phase.get("etcd_rolling", []):
            if step["restart"] and step["up_during"] < step["quorum"]:
                out.append(
                    f"etcd-quorum: phase {phase['name']} restarts etcd on {step['member']} with {step['up_during']} "
                    f"of {step['members']} members up, fewer than the quorum of {step['quorum']}"
                )
    trusted_before = {
        fp for n in doc["nodes"] for trust in n["live"].values() for fp in [trust["issuer"], *trust["accepted"]] if fp
    }
    for a in doc["authorities"]:
        is_new = a["new"] if "new" in a else a["fingerprint"] not in trusted_before  # `new` since format 1.1
        if not is_new:
            continue
        validity = _time(a["not_after"]) - _time(a["not_before"])
        if validity < MIN_VALIDITY:
            out.append(
                f"short-lived-ca: new {a['pki']} CA {names[a['fingerprint']]} ({a['fingerprint']}) is valid for "
                f"{validity.days} days, less than {MIN_VALIDITY.days}"
            )
    return out


def main(argv: list[str]) -> int:
    try:
        if len(argv) > 1 and argv[1] != "-":
            with open(argv[1], encoding="utf-8") as f:
                doc = json.load(f)
        else:
            doc = json.load(sys.stdin)
        found = violations(doc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"check_plan: not a trustplan plan document: {exc!r}", file=sys.stderr)
        return 2
    for message in found:
        print(f"FAIL {message}")
    if not found:
        summary = doc["summary"]
        changes = summary.get("ca_changes", summary["node_changes"])  # ca_changes since format 1.1
        print(f"PASS plan for cluster {doc['cluster']!r}: {changes} CA changes checked")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
