"""The two Kubernetes API CA layouts: legacy `cluster.ca` / `cluster.acceptedCAs` and the Talos 1.14
`KubeAPIServerCAConfig` document (plain PEM strings). Reading, byte-exact writing, the refusal of a
node with both, validation and generation."""

from __future__ import annotations

import pytest
from trustplan.planner import AcceptCA, RemoveCA, SwapIssuer
from trustplan_sim import configgen
from trustplan_sim.configgen import ClusterSecrets

from trustplan.errors import InputError
from trustplan.talos import certgen, machineconfig, pki, validation
from trustplan.talos.machineconfig import CAFields, MachineConfig
from trustplan.talos.rewrite import rewrite


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate(pki.utcnow())


@pytest.fixture(scope="module")
def new_ca() -> tuple[bytes, bytes]:
    cert, key = certgen.generate_ca("kubernetes", pki.utcnow())
    return pki.cert_to_pem(cert), pki.key_to_pem(key)


def gen(secrets: ClusterSecrets, role: str, layout: str) -> MachineConfig:
    data = configgen.generate_config(
        secrets,
        cluster_name="t",
        endpoint="https://10.0.0.1:6443",
        role=role,  # type: ignore[arg-type]
        hostname=f"{role}-1",
        address="10.0.0.1",
        kube_ca_layout=layout,  # type: ignore[arg-type]
    )
    return machineconfig.parse(data, f"{role}.yaml")


def fp(pem: bytes) -> str:
    return pki.CACert.from_pem(pem).fingerprint


def kube_doc(cfg: MachineConfig) -> dict[str, object]:
    return next(d for d in cfg.documents if d.get("kind") == "KubeAPIServerCAConfig")


def rotate(cfg: MachineConfig, old: bytes, new: tuple[bytes, bytes]) -> list[MachineConfig]:
    """accept -> swap -> remove of the Kubernetes CA, as the planner's edits; each step's config."""
    certs = {fp(new[0]): new[0]}
    keys = {fp(new[0]): new[1]}
    steps = [
        AcceptCA("n", cfg.role, "kubernetes", fp(new[0])),
        SwapIssuer("n", cfg.role, "kubernetes", fp(new[0]), fp(old)),
        RemoveCA("n", cfg.role, "kubernetes", fp(old)),
    ]
    out = []
    for edit in steps:
        cfg = machineconfig.parse(rewrite(cfg, (edit,), certs.__getitem__, keys.__getitem__), cfg.source)
        assert validation.validate(cfg) == [], edit
        out.append(cfg)
    return out


@pytest.mark.parametrize("role", ["controlplane", "worker"])
def test_generated_multidoc_configs_are_valid_and_have_no_cluster_ca(secrets: ClusterSecrets, role: str) -> None:
    cfg = gen(secrets, role, "multidoc")
    assert cfg.kube_ca_layout == "multidoc"
    assert "ca" not in cfg.v1alpha1["cluster"] and "acceptedCAs" not in cfg.v1alpha1["cluster"]
    assert validation.validate(cfg) == []
    fields = cfg.ca_fields("kubernetes")
    assert fields.issuer == secrets.k8s.crt_pem
    assert (fields.issuer_key is not None) == (role == "controlplane")
    assert fields.accepted == ()
    doc = kube_doc(cfg)
    if role == "worker":
        assert "issuingCA" not in doc and doc["acceptedCAs"] == [secrets.k8s.crt_pem.decode()]
    else:
        assert doc["issuingCA"] == {"cert": secrets.k8s.crt_pem.decode(), "key": secrets.k8s.key_pem.decode()}
    assert b"|\n    -----BEGIN CERTIFICATE-----" in cfg.data or b"- |\n  -----BEGIN CERTIFICATE-----" in cfg.data
    assert gen(secrets, role, "legacy").kube_ca_layout == "legacy"


def test_both_layouts_on_one_node_are_refused(secrets: ClusterSecrets) -> None:
    legacy = gen(secrets, "controlplane", "legacy")
    multi = gen(secrets, "controlplane", "multidoc")
    both = legacy.data + b"---\n" + multi.data.split(b"---\n", 1)[1]
    cfg = machineconfig.parse(both, "nodes/cp.yaml")
    message = (
        "kube-apiserver CA is set both in the v1alpha1 config (.cluster.ca) and in a KubeAPIServerCAConfig document"
    )
    with pytest.raises(InputError, match=r"nodes/cp\.yaml: cluster\.ca: kube-apiserver CA is set both"):
        cfg.ca_fields("kubernetes")
    assert message in validation.validate(cfg)
    assert cfg.ca_fields("talos").issuer is not None  # the Talos API PKI is unaffected


def test_multidoc_rewrite_keeps_other_documents_byte_for_byte(
    secrets: ClusterSecrets, new_ca: tuple[bytes, bytes]
) -> None:
    cfg = gen(secrets, "controlplane", "multidoc")
    extra = b"---\n# comment\napiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl:   https://x:8099/   # odd\n"
    cfg = machineconfig.parse(cfg.data + extra, "cp.yaml")
    before = cfg.data.split(b"\n---\n")
    accepted, swapped, removed = rotate(cfg, secrets.k8s.crt_pem, new_ca)
    for step in (accepted, swapped, removed):
        after = step.data.split(b"\n---\n")
        assert len(after) == len(before)
        kube_index = next(i for i, t in enumerate(before) if b"kind: KubeAPIServerCAConfig" in t)
        assert [t for i, t in enumerate(after) if i != kube_index] == [
            t for i, t in enumerate(before) if i != kube_index
        ]
    assert swapped.ca_fields("kubernetes") == CAFields(new_ca[0], new_ca[1], (secrets.k8s.crt_pem,))
    assert removed.ca_fields("kubernetes") == CAFields(new_ca[0], new_ca[1], ())
    assert kube_doc(accepted)["acceptedCAs"] == [new_ca[0].decode()]
    assert kube_doc(swapped)["issuingCA"] == {"cert": new_ca[0].decode(), "key": new_ca[1].decode()}
    assert kube_doc(swapped)["acceptedCAs"] == [secrets.k8s.crt_pem.decode()]


def test_multidoc_worker_rotation_matches_talosctl_order(secrets: ClusterSecrets, new_ca: tuple[bytes, bytes]) -> None:
    """talosctl appends at accept and prepends the new CA at swap: [old] -> [old, new] -> [new, old] -> [new]."""
    w = gen(secrets, "worker", "multidoc")
    old, new = secrets.k8s.crt_pem.decode(), new_ca[0].decode()
    steps = rotate(w, secrets.k8s.crt_pem, new_ca)
    assert [kube_doc(s)["acceptedCAs"] for s in steps] == [[old, new], [new, old], [new]]
    assert all("issuingCA" not in kube_doc(s) for s in steps)
    assert steps[1].ca_fields("kubernetes") == CAFields(new_ca[0], None, (secrets.k8s.crt_pem,))


def test_multidoc_existing_pem_strings_are_kept_exactly(secrets: ClusterSecrets, new_ca: tuple[bytes, bytes]) -> None:
    cfg = gen(secrets, "controlplane", "multidoc")
    pem = secrets.k8s.crt_pem.decode()
    lines = pem.strip("\n").split("\n")
    odd = lines[0] + "\n" + "".join(lines[1:-1]) + "\n" + lines[-1] + "\n"  # one long base64 line: still valid PEM
    data = cfg.data.replace(
        ("cert: |\n    " + "\n    ".join(pem.strip("\n").split("\n")) + "\n").encode(),
        ("cert: |\n    " + "\n    ".join(odd.strip("\n").split("\n")) + "\n").encode(),
    )
    assert data != cfg.data
    cfg = machineconfig.parse(data, "cp.yaml")
    assert cfg.ca_fields("kubernetes").issuer == odd.encode()
    _, swapped, _ = rotate(cfg, odd.encode(), new_ca)
    assert swapped.ca_fields("kubernetes").accepted == (odd.encode(),)


def test_legacy_and_multidoc_full_rotation_give_the_same_trust(
    secrets: ClusterSecrets, new_ca: tuple[bytes, bytes]
) -> None:
    for role in ("controlplane", "worker"):
        legacy = rotate(gen(secrets, role, "legacy"), secrets.k8s.crt_pem, new_ca)
        multi = rotate(gen(secrets, role, "multidoc"), secrets.k8s.crt_pem, new_ca)
        assert [c.ca_fields("kubernetes") for c in legacy] == [c.ca_fields("kubernetes") for c in multi]
        # the Talos API fields are untouched by a Kubernetes rotation
        assert multi[-1].ca_fields("talos") == gen(secrets, role, "multidoc").ca_fields("talos")


def test_multidoc_validation_rules(secrets: ClusterSecrets) -> None:
    cp = gen(secrets, "controlplane", "multidoc")
    kube_doc(cp)["issuingCA"]["key"] = ""  # type: ignore[index]
    assert validation.validate(cp) == [
        "KubeAPIServerCAConfig.issuingCA: a control plane needs the issuing Kubernetes API CA with its key"
    ]
    w = gen(secrets, "worker", "multidoc")
    kube_doc(w)["issuingCA"] = {"cert": secrets.k8s.crt_pem.decode(), "key": secrets.k8s.key_pem.decode()}
    assert validation.validate(w) == [
        "KubeAPIServerCAConfig.issuingCA.key: issuing Kubernetes API CA key is not allowed on non-controlplane nodes"
    ]
    w = gen(secrets, "worker", "multidoc")
    kube_doc(w)["acceptedCAs"] = []
    assert validation.validate(w) == ["KubeAPIServerCAConfig: a worker needs issuingCA.cert or acceptedCAs"]
    w = gen(secrets, "worker", "multidoc")
    kube_doc(w)["acceptedCAs"] = ["-----BEGIN CERTIFICATE-----\nbm90\n-----END CERTIFICATE-----\n"]
    assert validation.validate(w) == ["KubeAPIServerCAConfig.acceptedCAs[0]: not a PEM certificate"]


def test_multidoc_worker_with_an_issuing_cert_keeps_that_shape(
    secrets: ClusterSecrets, new_ca: tuple[bytes, bytes]
) -> None:
    w = gen(secrets, "worker", "multidoc")
    data = w.with_ca_fields({"kubernetes": CAFields(secrets.k8s.crt_pem, None, ())})
    text = data.decode()
    doc_text = text[text.index("kind: KubeAPIServerCAConfig") :]
    w2 = machineconfig.parse(
        data.replace(
            doc_text.encode(),
            b"kind: KubeAPIServerCAConfig\nissuingCA:\n  cert: |\n    "
            + "\n    ".join(secrets.k8s.crt_pem.decode().strip().split("\n")).encode()
            + b"\n",
        ),
        "w.yaml",
    )
    assert w2.ca_fields("kubernetes") == CAFields(secrets.k8s.crt_pem, None, ())
    swapped = rotate(w2, secrets.k8s.crt_pem, new_ca)[1]
    assert kube_doc(swapped)["issuingCA"] == {"cert": new_ca[0].decode()}
    assert kube_doc(swapped)["acceptedCAs"] == [secrets.k8s.crt_pem.decode()]


@pytest.mark.parametrize("layout", ["legacy", "multidoc"])
@pytest.mark.parametrize("role", ["controlplane", "worker"])
def test_an_edited_config_equals_its_own_bytes_parsed_again(
    secrets: ClusterSecrets, new_ca: tuple[bytes, bytes], role: str, layout: str
) -> None:
    """The applier keeps `edited()` objects instead of re-parsing what it sent: they must agree."""
    from trustplan.talos.rewrite import rewrite_config

    cfg = gen(secrets, role, layout)
    new, old = fp(new_ca[0]), fp(secrets.k8s.crt_pem)
    edits = [
        AcceptCA("n", cfg.role, "kubernetes", new),
        SwapIssuer("n", cfg.role, "kubernetes", new, old),
        RemoveCA("n", cfg.role, "kubernetes", old),
        AcceptCA("n", cfg.role, "talos", new),
    ]
    step = cfg
    for edit in edits:
        step = rewrite_config(step, (edit,), {new: new_ca[0]}.__getitem__, {new: new_ca[1]}.__getitem__)
        again = machineconfig.parse(step.data, "again")
        assert step.documents == again.documents
        assert step.digest == again.digest
        assert step.ca_fields("kubernetes") == again.ca_fields("kubernetes")
        assert step.ca_fields("talos") == again.ca_fields("talos")
