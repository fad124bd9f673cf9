"""`trustplan validate`: check the desired state offline (schema, references, imported CAs, files)."""

from __future__ import annotations

from pathlib import Path

from trustplan.cli.common import ConfigOption, err, load_desired, print_data


def validate(config: ConfigOption = Path("trustplan.yaml")) -> None:
    """Check the desired state offline: schema, names, imported CAs, machine-config and secrets files."""
    from trustplan.engine import authorities
    from trustplan.system.safeio import read_regular
    from trustplan.talos import machineconfig, pki

    desired = load_desired(config)
    resolved = authorities.resolve(desired, desired.open_keystore(), None, pki.utcnow(), generate=False)
    for address, path in desired.machine_configs.items():
        if not path.is_file():
            raise desired.error(f"machine config file not found: {path}", f"cluster.machineConfigs.{address}")
        machineconfig.parse(read_regular(path, what="machine config"), str(path))
    if desired.secrets is not None:  # read as apply will (safe loader: duplicate keys, bad UTF-8, depth)
        from trustplan.formats.outputs import read_secrets

        read_secrets(desired.secrets)
    if desired.talosconfig is not None and not desired.talosconfig.is_file():
        raise desired.error(f"talosconfig not found: {desired.talosconfig}", "cluster.talosconfig")
    for w in resolved.warnings:
        err.print(f"warning: {w}", markup=False)
    pkis = ", ".join(desired.trust)
    print_data(f"{desired.path}: valid ({desired.provider} provider, {len(desired.nodes)} nodes, managing {pkis})\n")
