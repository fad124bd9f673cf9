"""Regenerate examples/files/: a 3 control plane + 2 worker cluster as machine-config files.

Run from the repository root: `.venv/bin/python examples/make_files_example.py`. The configs are shaped
like `talosctl gen config` output and made with trustplan's own generator (trustplan.talos.machineconfig).
"""

from __future__ import annotations

from pathlib import Path

from trustplan_sim.configgen import ClusterSecrets, generate_config

from trustplan.talos import pki

HERE = Path(__file__).parent / "files"
NODES = [
    ("cp-1", "controlplane", "10.5.0.2"),
    ("cp-2", "controlplane", "10.5.0.3"),
    ("cp-3", "controlplane", "10.5.0.4"),
    ("worker-1", "worker", "10.5.0.5"),
    ("worker-2", "worker", "10.5.0.6"),
]

DESIRED = """\
# yaml-language-server: $schema=../../schemas/desired.schema.json
# Rotate both root CAs of the "demo" cluster to CAs that trustplan generates (once: a re-plan
# reuses them from the keystore).
version: v1alpha1
cluster:
  name: demo
  machineConfigs:                   # node address -> its machine config, relative to this file
{configs}
  nodes:                            # the topology, checked against each config's machine.type
    controlplane: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    worker: [10.5.0.5, 10.5.0.6]
authorities:
  talos-2026: {{generate: {{algorithm: ed25519}}}}
  k8s-2026: {{generate: {{algorithm: ecdsa-p256}}}}
trust:
  talos: {{issuer: talos-2026, accepted: []}}
  kubernetes: {{issuer: k8s-2026, accepted: []}}
keystore: .trustplan/keys
secrets: secrets.yaml
state: trustplan.state.json
outputs: {{talosconfig: talosconfig, kubeconfig: kubeconfig}}
"""


def main() -> None:
    now = pki.utcnow()
    secrets = ClusterSecrets.generate(now)
    (HERE / "nodes").mkdir(parents=True, exist_ok=True)
    configs = []
    for name, role, address in NODES:
        data = generate_config(
            secrets,
            cluster_name="demo",
            endpoint="https://10.5.0.2:6443",
            role=role,  # type: ignore[arg-type]
            hostname=name,
            address=address,
        )
        (HERE / "nodes" / f"{name}.yaml").write_bytes(data)
        configs.append(f"    {address}: nodes/{name}.yaml")
    (HERE / "secrets.yaml").write_bytes(secrets.to_yaml())
    (HERE / "trustplan.yaml").write_text(DESIRED.format(configs="\n".join(configs)))


if __name__ == "__main__":
    main()
