"""`trustplan init`: write a commented trustplan.yaml that rotates both PKIs of an existing cluster.

    trustplan init --machine-configs nodes/
    trustplan init --talosconfig talosconfig [--context C] [--secrets secrets.yaml]
                   --controlplane 10.5.0.2,10.5.0.3 --worker 10.5.0.5

From machine-config files, each node's role is its `machine.type` (init counts as controlplane) and
its address is, in this order: the first address of `machine.network.interfaces[].addresses`
(without the prefix length), the first IP address in `machine.certSANs`, the file name without
`.yaml`. From a talosconfig, the nodes are listed explicitly, or taken from the cluster's member list with
`--nodes-from members` (discovery can be wrong, e.g. a VIP as a node's first address, talos#10357:
the nodes found are printed for checking); the live CAs come from `--secrets` when given, otherwise
from the first control plane's live config.

The live CAs are named in comments (`talos-current` / `k8s-current`, with their `sha256:`
fingerprints); the file rotates both PKIs to new CAs that trustplan generates. The aggregator CA,
service-account key and encryption key are kept as they are (named by fingerprint; init_kinds.py),
their keys copied to the keystore (age-encrypted with `--age-recipient`). It never overwrites a
file without `--force`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trustplan.cli.common import err
from trustplan.cli.schema import schema_text
from trustplan.errors import TrustplanError
from trustplan.system.atomic import write_atomic


class NodesFrom(str, Enum):
    explicit = "explicit"
    members = "members"


def init(
    machine_configs: Annotated[
        Path | None, typer.Option("--machine-configs", help="A directory of machine-config YAML files.")
    ] = None,
    talosconfig: Annotated[
        Path | None, typer.Option("--talosconfig", help="Reach the cluster over the Talos API.")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="talosconfig context (default: current).")] = None,
    secrets: Annotated[
        Path | None, typer.Option("--secrets", help="Talos secrets.yaml: names the live CAs; apply updates it.")
    ] = None,
    nodes_from: Annotated[
        NodesFrom, typer.Option("--nodes-from", help="Where the node list comes from (talosconfig).")
    ] = NodesFrom.explicit,
    controlplane: Annotated[
        list[str] | None, typer.Option("--controlplane", help="Control-plane addresses (repeat or comma-separate).")
    ] = None,
    worker: Annotated[
        list[str] | None, typer.Option("--worker", help="Worker addresses (repeat or comma-separate).")
    ] = None,
    address: Annotated[
        list[str] | None,
        typer.Option("--address", metavar="FILE=ADDR",
                     help="The node address of a machine config that names none (talosctl gen config's output); "
                     "repeatable. Without it init asks on a terminal."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Cluster name (default: from the configs).")] = None,
    age_recipient: Annotated[
        list[str] | None,
        typer.Option("--age-recipient", metavar="RECIPIENT",
                     help="Encrypt the keystore's keys with age to this recipient (age1... or an SSH public key); "
                     "repeatable."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.")] = Path("trustplan.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a trustplan.yaml that rotates both CAs of an existing cluster (from machine configs or a talosconfig)."""
    from trustplan.cli import init_kinds
    from trustplan.cli.init_repo import ensure_gitignore, refuse_tracked_keys
    from trustplan.cli.init_scan import (
        KEYSTORE,
        SCHEMA_FILE,
        cluster_name_of,
        discover_members,
        flow,
        live_cas,
        live_cas_from_secrets,
        node_config,
        parse_addresses,
        read_machine_configs,
        relative,
        render_yaml,
        split_list,
        talosconfig_context,
    )
    from trustplan.formats.keystore import Keystore
    from trustplan.talos import pki

    if (machine_configs is None) == (talosconfig is None):
        raise typer.BadParameter("give exactly one of --machine-configs DIR or --talosconfig FILE")
    if out.exists() and not force:
        raise TrustplanError(f"{out}: already exists; not overwriting it", hint="pass --force to replace it")
    if address and machine_configs is None:
        raise typer.BadParameter("--address names machine-config files: it goes with --machine-configs",
                                 param_hint="--address")
    base = out.parent
    refuse_tracked_keys(base / KEYSTORE, str(out))
    now = pki.utcnow()
    outputs = {"talosconfig": base / "talosconfig", "kubeconfig": base / "kubeconfig"}
    if machine_configs is not None:
        scan = read_machine_configs(machine_configs, parse_addresses(address))
        nodes, configs = scan.nodes, scan.configs
        if secrets is None and scan.secrets is not None:
            secrets = scan.secrets
            err.print(f"found {secrets}: proposing `secrets: {relative(secrets, base)}` (apply keeps it on the new "
                      "CAs, so a later `talosctl gen config --with-secrets` mints configs the cluster trusts)",
                      markup=False)
        if scan.talosconfig is not None:
            outputs["talosconfig"] = scan.talosconfig
        pairs = [(n.address, c) for n, c in zip(nodes, configs, strict=True)]
        cas = live_cas(pairs)
        kinds = init_kinds.from_configs(pairs)
        read = sum(1 for c in configs if c.role == "controlplane")
        cluster = name or cluster_name_of(configs) or machine_configs.resolve().name
        width = max(len(n.address) for n in nodes) + len(": ")
        width += max(len(relative(n.path, base)) for n in nodes if n.path)
        cluster_lines = [
            "  # Node address -> its machine config, relative to this file. Addresses come from the",
            "  # config's interface addresses, certSANs or hostname, else from `init --address FILE=ADDR`.",
            "  machineConfigs:",
        ]
        for n in nodes:
            assert n.path is not None
            entry = f"{n.address}: {relative(n.path, base)}"
            cluster_lines.append(f"    {entry:<{width}}  # {n.role}; address from {n.why}")
        cluster_lines += [
            "  nodes:                          # the topology, checked against each config's machine.type",
            f"    controlplane: {flow([n.address for n in nodes if n.role == 'controlplane'])}",
            f"    worker: {flow([n.address for n in nodes if n.role == 'worker'])}",
        ]
        source = f"{len(nodes)} machine configs in {machine_configs}"
    else:
        assert talosconfig is not None
        cps, workers = split_list(controlplane), split_list(worker)
        if nodes_from is NodesFrom.members:
            if cps or workers:
                raise typer.BadParameter("--nodes-from members takes no --controlplane/--worker lists")
            cps, workers = discover_members(talosconfig, context)
        if not cps:
            raise typer.BadParameter("list the control planes with --controlplane (and workers with --worker)")
        if secrets is not None:
            cas = live_cas_from_secrets(secrets)
            kinds, read = init_kinds.from_secrets(secrets), 0
        else:
            err.print(f"reading the live CAs and keys from {cps[0]} ...", markup=False)
            cfg = node_config(talosconfig, context, cps[0])
            cas = live_cas([(cps[0], cfg)])
            kinds, read = init_kinds.from_configs([(cps[0], cfg)]), 1
        cluster = name or context or talosconfig_context(talosconfig) or "cluster"
        cluster_lines = [
            f"  talosconfig: {relative(talosconfig, base)}   # how trustplan reaches the nodes (a client cert)",
        ]
        if context:
            cluster_lines.append(f"  context: {context}")
        cluster_lines += [
            "  nodes:                          # the topology, explicit; checked against machine.type at plan time",
            f"    controlplane: {flow(cps)}",
            f"    worker: {flow(workers)}",
        ]
        source = f"{talosconfig} ({len(cps)} control planes, {len(workers)} workers)"
    recipients = split_list(age_recipient)
    sealer = None
    keystore_line = KEYSTORE
    if recipients:
        import json

        from trustplan.formats.keystore_age import AgeSealer

        sealer = AgeSealer(recipients, None, "--age-recipient")
        keystore_line = f"{{path: {KEYSTORE}, age: {{recipients: [{', '.join(json.dumps(r) for r in recipients)}]}}}}"
    if recipients and secrets is not None:
        err.print(f"not proposing `secrets: {relative(secrets, base)}`: with an age-encrypted keystore trustplan keeps "
                  "no plaintext keys (validate refuses both)", markup=False)
    proposed = relative(secrets, base) if secrets is not None and not recipients else None
    text = render_yaml(cluster, source, cluster_lines, cas, now.year, proposed,
                       {k: relative(v, base) for k, v in outputs.items()},
                       init_kinds.lines(kinds, read, KEYSTORE), keystore_line)
    saved = init_kinds.save_keys(kinds, Keystore(base / KEYSTORE, sealer))
    write_atomic(out, text.encode(), mode=0o644)
    if saved:
        err.print(f"Copied {saved} current keys (aggregator CA, service-account, encryption) to {base / KEYSTORE}"
                  + (" (age-encrypted)" if sealer else ""), markup=False)
    secret_files = [*outputs.values(), *([secrets] if secrets is not None else [])]  # each holds a private key
    added = ensure_gitignore(base, base / KEYSTORE, True, secret_files)
    if added:
        err.print(f"Added {len(added)} lines to {base / '.gitignore'} (CA keys, lock files, credentials, plan "
                  "files stay out of git)", markup=False)
    schema_path = out.parent / SCHEMA_FILE
    schema_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(schema_path, schema_text("desired").encode(), mode=0o644)
    err.print(f"Wrote {out} (and {schema_path} for editors). Check it with: trustplan validate -c {out}", markup=False)

