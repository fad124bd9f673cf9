"""The desired state (`trustplan.yaml`): load, check against its schema and its meaning.

Every error names the file, the YAML path, the line where the parser knows it, and the rule.
Paths inside the file are relative to the file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, assert_never

import yaml

from trustplan import schemas
from trustplan.errors import InputError, SchemaError
from trustplan.planner.model import KINDS, PKI, PKIS
from trustplan.planner.ops import OutputKind
from trustplan.providers.base import NodeRef
from trustplan.state.backend import KubernetesStateSpec, StateBackend
from trustplan.system import safeio, safeyaml
from trustplan.talos.fingerprint import sha256_fingerprint

if TYPE_CHECKING:
    import jsonschema

    from trustplan.formats.keystore import Keystore
    from trustplan.formats.planfile.savedplan import PlanRollout
    from trustplan.state.kubeapi import KubeAPI

VERIFY_TIMEOUT = {"talos": 60.0, "kubernetes": 180.0}


@dataclass(frozen=True)
class AuthoritySpec:
    name: str
    kind: Literal["generate", "import"]
    algorithm: str | None = None
    validity_days: int | None = None
    certificate: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class TrustSpec:
    pki: PKI
    issuer: str  # authority name or sha256:<hex>
    accepted: tuple[str, ...]
    drain: dt.timedelta | None = None  # serviceaccount: None means the API servers' longest token lifetime


@dataclass(frozen=True)
class Rollout:
    """How many nodes change at once in a phase (control planes first), how many workers go alone
    first as a canary (then the phase's gates on them, then the rest), and how many nodes a gate
    probes at once. A plan saves these; apply follows the plan's."""

    controlplane_parallelism: int = 1
    worker_parallelism: int = 10
    verify_timeout: float | None = None  # None: the PKI's default (talos 60 s, kubernetes 180 s)
    canary: int = 0
    gate_parallelism: int = 32
    try_timeout: float | None = None  # None: TRY_MARGIN + the phase's gate timeouts (engine.runner)

    def timeout(self, pki: str) -> float:
        return self.verify_timeout if self.verify_timeout is not None else VERIFY_TIMEOUT.get(pki, 180.0)

    def limited(self, parallelism: int) -> Rollout:
        """`plan --parallelism N`: workers and gates N at once, control planes at most N."""
        n = max(1, parallelism)
        return replace(
            self, controlplane_parallelism=min(self.controlplane_parallelism, n), worker_parallelism=n,
            gate_parallelism=n,
        )

    def saved(self) -> PlanRollout:
        """What a plan saves of it (apply runs the phases as the plan says)."""
        from trustplan.formats.planfile.savedplan import PlanRollout

        return PlanRollout(self.controlplane_parallelism, self.worker_parallelism, self.canary, self.gate_parallelism)

    def following(self, saved: PlanRollout | None) -> Rollout:
        """The rollout a plan saved (plans made before it was saved: this one)."""
        if saved is None:
            return self
        return replace(self, controlplane_parallelism=saved.controlplane, worker_parallelism=saved.worker,
                       canary=saved.canary, gate_parallelism=saved.gates)


@dataclass(frozen=True)
class DesiredState:
    path: Path
    digest: str
    cluster: str
    provider: Literal["files", "talos"]
    nodes: tuple[NodeRef, ...]
    machine_configs: dict[str, Path]
    talosconfig: Path | None
    context: str | None
    authorities: dict[str, AuthoritySpec]
    trust: dict[PKI, TrustSpec]
    keystore: Path
    secrets: Path | None
    state: Path
    plan_signing_key: Path | None
    talosconfig_output: Path | None
    kubeconfig_output: Path | None
    kubeconfig_merge: bool
    rollout: Rollout
    lines: dict[str, int]
    kube_port: int = 6443  # cluster.kubernetes.port
    kube_endpoints: tuple[str, ...] = ()  # cluster.kubernetes.endpoints (empty: one per control plane)
    node_paths: dict[str, str] = field(default_factory=dict)  # address -> its YAML path in cluster.nodes
    state_remote: KubernetesStateSpec | None = None  # state: {backend: kubernetes, ...}
    age_recipients: tuple[str, ...] = ()  # keystore.age.recipients: CA keys are encrypted when given
    age_identity: Path | None = None  # keystore.age.identity (else $TRUSTPLAN_AGE_IDENTITY)

    @property
    def base(self) -> Path:
        return self.path.parent

    def error(self, message: str, path: str, *, hint: str | None = None) -> InputError:
        return InputError(str(self.path), message, path=path, line=self.lines.get(path), hint=hint)

    def output_paths(self) -> dict[OutputKind, Path | None]:
        """Where each output is written (None: not configured), by output kind."""
        return {"talosconfig": self.talosconfig_output, "kubeconfig": self.kubeconfig_output,
                "secrets": self.secrets}

    def saved_output_paths(self) -> dict[OutputKind, str]:
        """The output paths a plan saves: relative to this file's folder, so a plan made in one
        working directory is the same plan when applied from another (CI jobs differ in theirs)."""
        return {kind: Path(os.path.relpath(path, self.base)).as_posix()
                for kind, path in self.output_paths().items() if path is not None}

    def kube_servers(self, controlplanes: list[str]) -> list[str]:
        """The Kubernetes API servers the gates check: cluster.kubernetes.endpoints, else
        https://<address>:<cluster.kubernetes.port> of each control plane."""
        from trustplan.providers.kubechecks.nodes import server_for

        return list(self.kube_endpoints) or [server_for(a, self.kube_port) for a in controlplanes]

    def state_backend(self) -> StateBackend:
        """Where the state lives: the file `state`, or the `state: {backend: kubernetes}` Secret."""
        from trustplan.state import open_backend

        def connect(spec: KubernetesStateSpec) -> KubeAPI:  # the Kubernetes client only for that backend
            from trustplan.providers.kubechecks.nodes import KubeconfigAPI

            return KubeconfigAPI.for_state(spec)

        return open_backend(self.state, self.state_remote, connect)

    def open_keystore(self) -> Keystore:
        """The keystore directory; with keystore.age, every key in it is encrypted to the recipients."""
        from trustplan.formats.keystore import Keystore

        if not self.age_recipients:
            return Keystore(self.keystore)
        from trustplan.formats.keystore_age import AgeSealer

        return Keystore(self.keystore, AgeSealer(self.age_recipients, self.age_identity, str(self.path)))

    def uses(self, name: str) -> PKI | None:
        for spec in self.trust.values():
            if name == spec.issuer or name in spec.accepted:
                return spec.pki
        return None


def _line_map(node: yaml.Node, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """YAML path -> 1-based line, for every mapping key and sequence item."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _line_map(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _line_map(item, path, out)
    return out


def _yaml_path(parts: Any) -> str:
    path = ""
    for p in parts:
        path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
    return path


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return f"{err.message.split(' (')[0].replace('Additional properties are not allowed', 'unknown key')}"
    if err.validator == "type" and list(err.absolute_path) == ["state"]:
        return "must be a file name, or {backend: kubernetes, namespace: NS, name: NAME, kubeconfig: FILE}"
    if err.validator == "type" and list(err.absolute_path) == ["keystore"]:
        return "must be a directory, or {path: DIR, age: {recipients: [age1...], identity: FILE}}"
    if err.validator == "oneOf" and list(err.absolute_path) == ["cluster"]:
        return "cluster needs exactly one of machineConfigs (files) or talosconfig + nodes (Talos API)"
    if err.validator == "oneOf":
        return "must be either {generate: {...}} or {certificate: FILE, key: FILE}"
    where = list(err.absolute_path)[:1]
    if err.validator == "pattern" and where == ["keystore"]:
        return f"{err.instance!r} is not an age public key (age1...) or an SSH public key (ssh-ed25519 ...)"
    if err.validator == "pattern" and where == ["state"]:
        return f"{err.instance!r} is not a Kubernetes object name (lower-case letters, digits, '-')"
    if err.validator in ("anyOf", "pattern"):
        return f"{err.instance!r} is not an authority name or sha256:<64 hex digits>"
    return err.message


def parse_text(text: bytes, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse YAML into a mapping and a line map; a syntax error becomes one InputError."""
    try:
        parsed = safeyaml.parse(text)  # one scan gives the data and the tree for line numbers
        doc, node = parsed.data, parsed.node
        if node is None and doc is not None:  # merge keys: PyYAML's constructor rewrote that tree
            node = safeyaml.compose(text)
    except yaml.YAMLError as exc:
        problem, line = safeyaml.problem(exc)
        raise InputError(source, problem, line=line) from None
    if not isinstance(doc, dict):
        raise InputError(source, "expected a mapping at the top level (version, cluster, authorities, trust)")
    return doc, _line_map(node) if node is not None else {}


def load(path: Path) -> DesiredState:
    """Read and check a desired-state file; no other file is touched."""
    source = str(path)
    if not path.exists() and not path.is_symlink():
        raise InputError(source, "file not found", hint="create one with `trustplan init`, or pass -c FILE")
    text = safeio.read_regular(path, source, "desired-state file", safeyaml.MAX_BYTES)
    doc, lines = parse_text(text, source)
    errors = [] if schemas.is_valid("desired", doc) else sorted(
        schemas.validator("desired").iter_errors(doc),
        key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))),
    )
    if errors:
        import jsonschema  # ~0.1 s: only to word the error of an invalid document

        err = jsonschema.exceptions.best_match(errors) or errors[0]
        ypath = _yaml_path(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            unknown = sorted(str(k) for k in err.instance if k not in allowed)
            if unknown:  # point at the unknown key itself, not at its parent
                ypath = f"{ypath}.{unknown[0]}" if ypath else unknown[0]
                allowed_text = ", ".join(sorted(allowed)) or "none"
                raise SchemaError(
                    source, f"unknown key {unknown[0]!r} (allowed here: {allowed_text})", path=ypath,
                    line=lines.get(ypath),
                )
        ypath = ypath or "(top level)"
        raise SchemaError(source, _schema_message(err), path=ypath, line=lines.get(ypath))
    return _build(path, doc, lines, sha256_fingerprint(text))


def _build(path: Path, doc: dict[str, Any], lines: dict[str, int], digest: str) -> DesiredState:
    base = path.parent
    source = str(path)
    cluster = doc["cluster"]

    def err(message: str, ypath: str, hint: str | None = None) -> InputError:
        return InputError(source, message, path=ypath, line=lines.get(ypath), hint=hint)

    declared: dict[str, str] = {}
    node_paths: dict[str, str] = {}
    for role in ("controlplane", "worker"):
        for i, address in enumerate((cluster.get("nodes") or {}).get(role, [])):
            if address in declared:
                raise err(
                    f"node {address} is listed as both {declared[address]} and {role}", f"cluster.nodes.{role}[{i}]"
                )
            declared[address] = role
            node_paths[address] = f"cluster.nodes.{role}[{i}]"
    machine_configs = {str(k): base / v for k, v in (cluster.get("machineConfigs") or {}).items()}
    by_file: dict[str, str] = {}
    for address, file in machine_configs.items():
        if "\0" in str(file):
            raise err(f"invalid file name {str(file)!r}", f"cluster.machineConfigs.{address}")
        real = os.path.realpath(file)
        if real in by_file:
            raise err(
                f"nodes {by_file[real]} and {address} map to the same machine config file {file}; "
                "each node needs its own",
                f"cluster.machineConfigs.{address}",
            )
        by_file[real] = address
    if machine_configs:
        for address in declared:
            if address not in machine_configs:
                role = declared[address]
                i = cluster["nodes"][role].index(address)
                raise err(
                    f"unknown node {address}: it has no entry in cluster.machineConfigs", f"cluster.nodes.{role}[{i}]"
                )
        unlisted = [a for a in machine_configs if a not in declared]
        if declared and unlisted:  # it would be planned with no role checked: refuse, naming the entry
            raise err(
                f"node {unlisted[0]} has a machine config but is in neither cluster.nodes.controlplane nor "
                "cluster.nodes.worker",
                f"cluster.machineConfigs.{unlisted[0]}",
                hint=f"add {unlisted[0]} to cluster.nodes under its role (its machine.type), or remove its entry",
            )
        nodes = tuple(NodeRef(a, declared.get(a)) for a in machine_configs)  # type: ignore[arg-type]
    else:
        nodes = tuple(NodeRef(a, r) for a, r in declared.items())  # type: ignore[arg-type]
        if not nodes:
            raise err("no nodes: list control planes and workers under cluster.nodes", "cluster.nodes")

    authorities: dict[str, AuthoritySpec] = {}
    for name, spec in doc["authorities"].items():
        if "generate" in spec:
            gen = spec["generate"] or {}
            authorities[name] = AuthoritySpec(name, "generate", gen.get("algorithm"), gen.get("validityDays"))
        else:
            cert = spec.get("certificate")
            authorities[name] = AuthoritySpec(
                name, "import", certificate=base / cert if cert else None, key=base / spec["key"]
            )

    trust: dict[PKI, TrustSpec] = {}
    owner: dict[str, str] = {}
    for pki in PKIS:
        if pki not in doc["trust"]:
            continue
        spec = doc["trust"][pki]
        refs = [("issuer", spec["issuer"])] + [(f"accepted[{i}]", r) for i, r in enumerate(spec.get("accepted", []))]
        for where, ref in refs:
            ypath = f"trust.{pki}.{where}"
            if not ref.startswith("sha256:"):
                if ref not in authorities:
                    known = ", ".join(sorted(authorities)) or "none"
                    raise err(
                        f"unknown authority name {ref!r} (known: {known})",
                        ypath,
                        hint="define it under 'authorities', or refer to a live CA as sha256:<fingerprint>",
                    )
                if owner.get(ref, pki) != pki:
                    raise err(f"authority {ref!r} is already used by the {owner[ref]} PKI; a CA serves one PKI", ypath)
                owner[ref] = pki
                if (why := _fits(authorities[ref], pki)) is not None:
                    raise err(f"authority {ref!r} {why}", f"authorities.{ref}", hint=f"trust.{pki} needs {_needs(pki)}")
        drain = parse_duration(spec["drain"]) if "drain" in spec else None
        trust[pki] = TrustSpec(pki, spec["issuer"], tuple(spec.get("accepted", [])), drain)

    outputs = doc.get("outputs") or {}
    rollout = doc.get("rollout") or {}
    keystore = doc.get("keystore", ".trustplan/keys")
    age = keystore.get("age") if isinstance(keystore, dict) else None
    if age and doc.get("secrets"):
        raise err(
            "secrets.yaml holds CA keys in plaintext, and keystore.age is on (keys encrypted at rest)",
            "secrets",
            hint="drop `secrets:` (the encrypted keystore has the keys), or turn keystore encryption off",
        )
    state = doc.get("state", "trustplan.state.json")
    if isinstance(state, str):
        state = {"backend": "local", "path": state}
    remote = None
    if state["backend"] == "kubernetes":
        remote = KubernetesStateSpec(
            namespace=state["namespace"],
            name=state["name"],
            kubeconfig=base / Path(state["kubeconfig"]).expanduser() if state.get("kubeconfig") else None,
            context=state.get("context"),
            lease_seconds=state.get("leaseSeconds", 30),
            max_bytes=state.get("maxBytes", 512 * 1024),
        )
    return DesiredState(
        path=path,
        digest=digest,
        cluster=cluster["name"],
        provider="files" if machine_configs else "talos",
        nodes=nodes,
        machine_configs=machine_configs,
        talosconfig=base / cluster["talosconfig"] if cluster.get("talosconfig") else None,
        context=cluster.get("context"),
        authorities=authorities,
        trust=trust,
        keystore=base / (keystore if isinstance(keystore, str) else keystore.get("path", ".trustplan/keys")),
        secrets=base / doc["secrets"] if doc.get("secrets") else None,
        state=base / state.get("path", "trustplan.state.json"),
        state_remote=remote,
        age_recipients=tuple(age["recipients"]) if age else (),
        age_identity=base / Path(age["identity"]).expanduser() if age and age.get("identity") else None,
        plan_signing_key=base / doc["planSigning"]["publicKey"] if doc.get("planSigning") else None,
        talosconfig_output=base / outputs["talosconfig"] if outputs.get("talosconfig") else None,
        kubeconfig_output=base / outputs["kubeconfig"] if outputs.get("kubeconfig") else None,
        kubeconfig_merge=bool(outputs.get("kubeconfigMerge", False)),
        rollout=Rollout(
            controlplane_parallelism=(rollout.get("controlplane") or {}).get("parallelism", 1),
            worker_parallelism=(rollout.get("worker") or {}).get("parallelism", 10),
            verify_timeout=(rollout.get("verify") or {}).get("timeout"),
            canary=(rollout.get("worker") or {}).get("canary", 0),
            gate_parallelism=(rollout.get("verify") or {}).get("parallelism", 32),
            try_timeout=(rollout.get("try") or {}).get("timeout"),
        ),
        lines=lines,
        node_paths=node_paths,
        kube_port=int((cluster.get("kubernetes") or {}).get("port", 6443)),
        kube_endpoints=tuple((cluster.get("kubernetes") or {}).get("endpoints", ())),
    )


def parse_duration(text: str) -> dt.timedelta:
    """A duration as the desired state writes it (schema-checked): 90m, 1h30m, 24h, 0s."""
    parts = dict((unit, int(n)) for n, unit in re.findall(r"([0-9]+)([hms])", text))
    return dt.timedelta(hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0))


def _needs(pki: PKI) -> str:
    match KINDS[pki].material:
        case "ca":
            return "a CA: generate, or import a certificate and its key"
        case "signing-key":
            return "a signing key: generate (rsa or ecdsa-p256), or import a PEM private key (no certificate)"
        case "secretbox":
            return "a secretbox key: generate, or import a file with the base64 of 32 bytes"
        case _:
            assert_never(KINDS[pki].material)


def _fits(spec: AuthoritySpec, pki: PKI) -> str | None:
    """Why an authority cannot serve `pki` (a CA for a key, an algorithm the credential cannot use)."""
    material = KINDS[pki].material
    if spec.kind == "import":
        if material == "ca" and spec.certificate is None:
            return "is a key without a certificate, and this is a CA"
        if material != "ca" and spec.certificate is not None:
            return f"has a certificate, and the {KINDS[pki].name} is a key without one"
        return None
    algorithm = spec.algorithm
    if algorithm is None:
        return None
    if material == "secretbox" and algorithm != "secretbox":
        return f"asks for algorithm {algorithm}; the encryption key is a secretbox key"
    if material != "secretbox" and algorithm == "secretbox":
        return "asks for algorithm secretbox, which only the encryption key uses"
    if pki == "etcd" and algorithm == "ed25519":
        return "asks for ed25519; an etcd CA is ecdsa-p256 (what Talos generates) or rsa"
    if material == "signing-key" and algorithm == "ed25519":
        return "asks for ed25519, which kube-apiserver does not take for service-account keys"
    return None
