"""The aggregator CA, service-account key and encryption key in machine configs written by the real
talosctl (fixtures/kubecreds: `talosctl gen config` v1.14.1 with the 1.14 documents, v1.12.1 with the
legacy single values): read, rotate-style writes, and the move from the legacy layout."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import pytest

from trustplan.errors import InputError
from trustplan.talos import certgen, kubecreds, machineconfig, pki
from trustplan.talos.kubecreds import KindFields, Material

FIXTURES = Path(__file__).parent / "fixtures" / "kubecreds"
KINDS = ("aggregator", "serviceaccount", "encryption")


def config(name: str) -> machineconfig.MachineConfig:
    path = FIXTURES / name
    return machineconfig.parse(path.read_bytes(), str(path))


@pytest.mark.parametrize("kind", KINDS)
def test_talosctl_1_14_configs_hold_each_kind_in_its_document(kind: str) -> None:
    fields = machineconfig.kind_fields(config("controlplane-1.14.yaml"), kind)  # type: ignore[arg-type]
    assert fields.layout == "document" and fields.accepted == ()
    assert fields.issuer is not None and fields.issuer.secret
    assert kubecreds.fingerprint(kind, fields.issuer).startswith("sha256:")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_talosctl_1_12_configs_hold_the_legacy_single_values(kind: str) -> None:
    old = config("controlplane-1.12.yaml")
    fields = machineconfig.kind_fields(old, kind)  # type: ignore[arg-type]
    assert fields.layout == "legacy" and fields.issuer is not None


def test_the_legacy_values_mean_what_the_documents_would() -> None:
    cfg = config("controlplane-1.12.yaml")
    sa = machineconfig.kind_fields(cfg, "serviceaccount")
    assert sa.issuer is not None and b"PUBLIC KEY" in sa.issuer.public  # derived from the private key
    enc = machineconfig.kind_fields(cfg, "encryption")
    assert enc.issuer is not None and enc.issuer.name == "key2" and len(enc.issuer.secret or b"") == 32


def test_a_secretbox_fingerprint_does_not_contain_the_key() -> None:
    key = os.urandom(32)
    fp = kubecreds.fingerprint("encryption", Material(b"", key, "k"))
    assert key.hex() not in fp and base64.b64encode(key).decode() not in fp


def test_accept_then_swap_in_the_documents_keeps_every_other_document() -> None:
    cfg = config("controlplane-1.14.yaml")
    now = machineconfig.kind_fields(cfg, "encryption")
    assert now.issuer is not None
    new = Material(b"", os.urandom(32), "trustplan-2026")
    accepted = machineconfig.with_kind_fields(cfg, {"encryption": KindFields("document", now.issuer, (new,))})
    got = machineconfig.kind_fields(accepted, "encryption")
    assert got.issuer == now.issuer and got.accepted == (new,)
    swapped = machineconfig.with_kind_fields(accepted, {"encryption": KindFields("document", new, (now.issuer,))})
    assert machineconfig.kind_fields(swapped, "encryption").issuer == new
    others = [d for d in cfg.documents if d.get("kind") != "KubeEtcdEncryptionConfig"]
    assert [d for d in swapped.documents if d.get("kind") != "KubeEtcdEncryptionConfig"] == others


def test_a_new_aggregator_ca_and_service_account_key_are_written_in_place() -> None:
    cfg = config("controlplane-1.14.yaml")
    cert, key = certgen.generate_ca("kubernetes", pki.utcnow())
    ca = Material(pki.cert_to_pem(cert), pki.key_to_pem(key))
    old = machineconfig.kind_fields(cfg, "aggregator").issuer
    assert old is not None
    out = machineconfig.with_kind_fields(cfg, {"aggregator": KindFields("document", ca, (Material(old.public),))})
    got = machineconfig.kind_fields(out, "aggregator")
    assert got.issuer == ca and got.accepted == (Material(old.public),)
    sa = machineconfig.kind_fields(cfg, "serviceaccount").issuer
    assert sa is not None
    out = machineconfig.with_kind_fields(cfg, {"serviceaccount": KindFields("document", sa, (Material(sa.public),))})
    assert machineconfig.kind_fields(out, "serviceaccount").accepted == (Material(sa.public),)


@pytest.mark.parametrize("kind", KINDS)
def test_a_legacy_value_moves_into_its_document_unchanged(kind: str) -> None:
    cfg = config("controlplane-1.12.yaml")
    before = machineconfig.kind_fields(cfg, kind)  # type: ignore[arg-type]
    moved = machineconfig.with_kind_fields(cfg, {kind: KindFields("document", before.issuer)})  # type: ignore[dict-item]
    after = machineconfig.kind_fields(moved, kind)  # type: ignore[arg-type]
    assert after.layout == "document" and after.issuer == before.issuer and after.accepted == ()
    path = kubecreds.LEGACY_PATHS[kind].split(".")[1]
    assert path not in moved.v1alpha1["cluster"]


def test_the_moved_service_account_keeps_the_issuer_url_talos_derived() -> None:
    cfg = config("controlplane-1.12.yaml")
    moved = machineconfig.with_kind_fields(
        cfg, {"serviceaccount": KindFields("document", machineconfig.kind_fields(cfg, "serviceaccount").issuer)}
    )
    doc = next(d for d in moved.documents if d.get("kind") == "KubeServiceAccountConfig")
    assert doc["issuer"]["issuerURL"] == cfg.v1alpha1["cluster"]["controlPlane"]["endpoint"]


def test_a_config_with_both_layouts_is_refused() -> None:
    cfg = config("controlplane-1.14.yaml")
    text = cfg.data.decode().replace(
        "cluster:\n", "cluster:\n    secretboxEncryptionSecret: " + base64.b64encode(b"x" * 32).decode() + "\n", 1
    )
    with pytest.raises(InputError, match="set both in the v1alpha1 config"):
        machineconfig.kind_fields(machineconfig.parse(text.encode(), "cp.yaml"), "encryption")


def test_a_short_secretbox_key_is_refused() -> None:
    cfg = config("controlplane-1.14.yaml")
    secret = machineconfig.kind_fields(cfg, "encryption").issuer
    assert secret is not None
    text = cfg.data.decode().replace(
        base64.b64encode(secret.secret or b"").decode(), base64.b64encode(b"short").decode()
    )
    with pytest.raises(InputError, match="a secretbox key is 32 bytes, this one 5"):
        machineconfig.kind_fields(machineconfig.parse(text.encode(), "cp.yaml"), "encryption")


@pytest.mark.parametrize("version,ok", [("v1.14.1", True), ("v1.15.0", True), ("v1.12.1", False), (None, False)])
def test_which_talos_takes_the_documents(version: str | None, ok: bool) -> None:
    assert kubecreds.documents_supported(version) is ok


@pytest.mark.parametrize("sealed", [False, True])
def test_keys_round_trip_through_the_keystore_plain_and_age(tmp_path: Path, sealed: bool) -> None:
    import pyrage

    from trustplan.formats.keystore import Keystore
    from trustplan.formats.keystore_age import AgeSealer

    ident = pyrage.x25519.Identity.generate()
    sealer = AgeSealer([str(ident.to_public())], None, "test") if sealed else None
    if sealer is not None:
        sealer._identities = [ident]
    store = Keystore(tmp_path / "keys", sealer)
    now = pki.utcnow()
    made = {k: kubecreds.generate(k, None, now, dt.timedelta(days=3650)) for k in (*KINDS, "etcd")}  # type: ignore[arg-type]
    store.save_material([(f"{k}-1", kubecreds.fingerprint(k, m), m) for k, m in made.items()])  # type: ignore[arg-type]
    for kind, m in made.items():
        fp = kubecreds.fingerprint(kind, m)  # type: ignore[arg-type]
        assert store.generated(f"{kind}-1") == fp
        assert store.load_material(fp, kind) == m  # type: ignore[arg-type]
        secret_file = store.key_path(fp)
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert (m.secret or b"") not in secret_file.read_bytes() or not sealed
    assert made["encryption"].secret not in b"".join(p.read_bytes() for p in (tmp_path / "keys").glob("*.pub"))


def test_generated_keys_are_what_talos_generates() -> None:
    now = pki.utcnow()
    sa = kubecreds.generate("serviceaccount", None, now, dt.timedelta(days=1))
    assert kubecreds.describe("serviceaccount", sa) == ("(signing key)", "rsa-4096")
    agg = kubecreds.generate("aggregator", None, now, dt.timedelta(days=1))
    assert kubecreds.describe("aggregator", agg)[1] == "ecdsa-p256"
    etcd = kubecreds.generate("etcd", None, now, dt.timedelta(days=1))  # NewEtcdCA: O=etcd, ECDSA P-256
    assert kubecreds.describe("etcd", etcd) == ("O=etcd", "ecdsa-p256")
    enc = kubecreds.generate("encryption", None, now, dt.timedelta(days=1))
    assert len(enc.secret or b"") == 32 and enc.name == kubecreds.secretbox_name(
        kubecreds.fingerprint("encryption", enc)
    )


def test_secrets_yaml_gets_the_new_kinds(tmp_path: Path) -> None:
    import yaml
    from trustplan_sim.configgen import ClusterSecrets

    from trustplan.formats.outputs import update_secrets

    path = tmp_path / "secrets.yaml"
    path.write_bytes(ClusterSecrets.generate(pki.utcnow()).to_yaml())
    path.chmod(0o600)
    now = pki.utcnow()
    new = {k: kubecreds.generate(k, None, now, dt.timedelta(days=3650)) for k in (*KINDS, "etcd")}  # type: ignore[arg-type]
    update_secrets(path, {}, new)  # type: ignore[arg-type]
    doc = yaml.safe_load(path.read_text())
    assert base64.b64decode(doc["secrets"]["secretboxencryptionsecret"]) == new["encryption"].secret
    assert pki.b64decode_pem(doc["certs"]["k8sserviceaccount"]["key"], "s", "k") == new["serviceaccount"].secret
    assert pki.b64decode_pem(doc["certs"]["k8saggregator"]["crt"], "s", "c") == new["aggregator"].public
    assert pki.b64decode_pem(doc["certs"]["etcd"]["key"], "s", "k") == new["etcd"].secret
    assert path.stat().st_mode & 0o777 == 0o600
