"""The cluster CA, node certificates and member records (revocation is a log event: test_membership.py)."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.trust.ca import (
    CA_KEY_FILE,
    CertificateAuthority,
    create_ca,
    issue_node_certificate,
    load_ca,
    load_ca_certificate,
    save_ca,
)
from node.trust.certs import (
    CLUSTER_URN,
    NODE_URN,
    TrustError,
    cert_pem,
    cluster_id_of,
    make_member_record,
    verify_member_record,
    verify_node_certificate,
)
from node.trust.identity import node_id_for

UTC = dt.UTC


def new_node(ca: CertificateAuthority, desk: str = "Front desk", role: str = "desk", **validity):
    key = Ed25519PrivateKey.generate()
    node_id = node_id_for(key.public_key())
    return key, node_id, issue_node_certificate(ca, key.public_key(), node_id, desk, role, **validity)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("Riverside Public Library")


def test_ca_certificate_is_a_cluster_ca(ca: CertificateAuthority) -> None:
    cert = ca.cert
    assert len(ca.cluster_id) == 32 and int(ca.cluster_id, 16) >= 0
    assert cluster_id_of(cert) == ca.cluster_id
    assert ca.cluster_id in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cert.subject == cert.issuer
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=19 * 365) < lifetime < dt.timedelta(days=21 * 365)
    cert.verify_directly_issued_by(cert)  # self-signed with its own key


def test_two_clusters_get_different_ids() -> None:
    assert create_ca("A").cluster_id != create_ca("A").cluster_id


def test_ca_save_and_load_round_trip(ca: CertificateAuthority, tmp_path) -> None:
    save_ca(ca, tmp_path / "ca")
    key_mode = stat.S_IMODE(os.stat(tmp_path / "ca" / CA_KEY_FILE).st_mode)
    assert key_mode == 0o600
    loaded = load_ca(tmp_path / "ca")
    assert loaded.cert == ca.cert
    assert loaded.cluster_id == ca.cluster_id
    assert loaded.cluster_name == "Riverside Public Library"
    assert load_ca_certificate(tmp_path / "ca") == ca.cert
    # The loaded key really is the CA key: what it issues verifies against the original certificate.
    _, node_id, cert = new_node(loaded)
    assert verify_node_certificate(cert, ca.cert, set()).node_id == node_id
    assert not list((tmp_path / "ca").glob(".*tmp")), "no temporary files left behind"


def test_ca_key_with_passphrase(ca: CertificateAuthority, tmp_path) -> None:
    save_ca(ca, tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / CA_KEY_FILE).read_bytes()
    assert load_ca(tmp_path, passphrase=b"correct horse").cluster_id == ca.cluster_id
    with pytest.raises(TrustError, match="cannot read"):
        load_ca(tmp_path, passphrase=b"wrong")


def test_ca_refuses_a_key_readable_by_others(ca: CertificateAuthority, tmp_path) -> None:
    save_ca(ca, tmp_path)
    os.chmod(tmp_path / CA_KEY_FILE, 0o644)
    with pytest.raises(TrustError, match="0600"):
        load_ca(tmp_path)


def test_ca_refuses_a_key_of_another_ca(ca: CertificateAuthority, tmp_path) -> None:
    save_ca(ca, tmp_path)
    other = tmp_path / "other"
    save_ca(create_ca("Other"), other)
    os.replace(other / CA_KEY_FILE, tmp_path / CA_KEY_FILE)
    with pytest.raises(TrustError, match="does not belong"):
        load_ca(tmp_path)


def test_node_certificate_contents(ca: CertificateAuthority) -> None:
    key, node_id, cert = new_node(ca, desk="Prêt – Étage 2 / Kinder & Jugend", role="admin")
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node_id
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "admin"
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert NODE_URN + node_id in uris and CLUSTER_URN + ca.cluster_id in uris
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=4 * 365) < lifetime < dt.timedelta(days=6 * 365)

    info = verify_node_certificate(cert, ca.cert, set())
    assert (info.node_id, info.cluster_id, info.desk_name, info.role) == (
        node_id, ca.cluster_id, "Prêt – Étage 2 / Kinder & Jugend", "admin"
    )
    assert info.public_key == key.public_key()


def test_issuing_refuses_bad_requests(ca: CertificateAuthority) -> None:
    key = Ed25519PrivateKey.generate()
    other_id = node_id_for(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(TrustError, match="does not match"):
        issue_node_certificate(ca, key.public_key(), other_id, "Desk", "desk")
    good_id = node_id_for(key.public_key())
    with pytest.raises(TrustError, match="role"):
        issue_node_certificate(ca, key.public_key(), good_id, "Desk", "superuser")  # type: ignore[arg-type]
    for bad_name in ("", "   ", "tab\there", "x" * 101):
        with pytest.raises(TrustError):
            issue_node_certificate(ca, key.public_key(), good_id, bad_name, "desk")


def test_verification_refuses_another_cas_certificate(ca: CertificateAuthority) -> None:
    _, _, foreign = new_node(create_ca("Elsewhere"))
    with pytest.raises(TrustError, match="not issued by this cluster's CA"):
        verify_node_certificate(foreign, ca.cert, set())


def test_verification_refuses_a_forged_ca_with_the_same_name(ca: CertificateAuthority) -> None:
    # Same subject and cluster id, different key: the name alone must never be trusted.
    impostor = create_ca(ca.cluster_name, cluster_id=ca.cluster_id)
    assert impostor.cert.subject == ca.cert.subject
    _, _, cert = new_node(impostor)
    with pytest.raises(TrustError, match="not issued by"):
        verify_node_certificate(cert, ca.cert, set())


def test_verification_refuses_expired_and_not_yet_valid(ca: CertificateAuthority) -> None:
    now = dt.datetime.now(UTC)
    _, _, expired = new_node(ca, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    with pytest.raises(TrustError, match="expired"):
        verify_node_certificate(expired, ca.cert, set())
    _, _, future = new_node(ca, not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30))
    with pytest.raises(TrustError, match="not valid before"):
        verify_node_certificate(future, ca.cert, set())
    # Both are fine at a moment inside their window.
    assert verify_node_certificate(expired, ca.cert, set(), at=now - dt.timedelta(days=2))
    assert verify_node_certificate(future, ca.cert, set(), at=now + dt.timedelta(days=2))


def _forge(ca: CertificateAuthority, public_key, node_id: str, cluster_id: str) -> x509.Certificate:
    """A certificate signed by the real CA key, but saying what issue_node_certificate would refuse."""
    now = dt.datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "desk"),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(NODE_URN + node_id),
            x509.UniformResourceIdentifier(CLUSTER_URN + cluster_id),
            x509.UniformResourceIdentifier("urn:circmesh:desk:Desk"),
        ]), critical=False)
        .sign(ca.key, None)
    )


def test_verification_refuses_a_node_id_not_matching_the_key(ca: CertificateAuthority) -> None:
    key = Ed25519PrivateKey.generate()
    someone_else = node_id_for(Ed25519PrivateKey.generate().public_key())
    forged = _forge(ca, key.public_key(), someone_else, ca.cluster_id)
    with pytest.raises(TrustError, match="does not match its key"):
        verify_node_certificate(forged, ca.cert, set())
    # The forging helper itself is sound: with the right id the same certificate shape verifies.
    honest = _forge(ca, key.public_key(), node_id_for(key.public_key()), ca.cluster_id)
    assert verify_node_certificate(honest, ca.cert, set()).node_id == node_id_for(key.public_key())


def test_verification_refuses_a_wrong_cluster(ca: CertificateAuthority) -> None:
    key = Ed25519PrivateKey.generate()
    forged = _forge(ca, key.public_key(), node_id_for(key.public_key()), "0" * 32)
    with pytest.raises(TrustError, match="belongs to cluster"):
        verify_node_certificate(forged, ca.cert, set())


def test_verification_refuses_a_revoked_node(ca: CertificateAuthority) -> None:
    _, node_id, cert = new_node(ca)
    assert verify_node_certificate(cert, ca.cert, {"f" * 32}).node_id == node_id
    with pytest.raises(TrustError, match="revoked"):
        verify_node_certificate(cert, ca.cert, {node_id})


def test_verification_refuses_a_node_certificate_as_ca(ca: CertificateAuthority) -> None:
    _, _, cert = new_node(ca)
    with pytest.raises(TrustError, match="not a CA"):
        verify_node_certificate(cert, cert, set())


def test_member_record_round_trip_and_tampering(ca: CertificateAuthority) -> None:
    _, node_id, cert = new_node(ca, desk="Branch 2")
    record = make_member_record(cert)
    assert record == {"node": node_id, "cert": cert_pem(cert)}
    info = verify_member_record(record, ca.cert, set(), expected_node_id=node_id)
    assert info.desk_name == "Branch 2"

    _, other_id, _ = new_node(ca)
    with pytest.raises(TrustError, match="differs"):
        verify_member_record({**record, "node": other_id}, ca.cert, set())
    with pytest.raises(TrustError, match="not"):
        verify_member_record(record, ca.cert, set(), expected_node_id=other_id)
    with pytest.raises(TrustError, match="revoked"):
        verify_member_record(record, ca.cert, {node_id})
    for bad in ({}, {"node": node_id}, {"node": node_id, "cert": "garbage"}, {"node": 1, "cert": 2}, []):
        with pytest.raises(TrustError):
            verify_member_record(bad, ca.cert, set())  # type: ignore[arg-type]
    # A record whose certificate came from another CA is refused even though it is well formed.
    _, _, foreign = new_node(create_ca("Elsewhere"))
    with pytest.raises(TrustError, match="not issued"):
        verify_member_record(make_member_record(foreign), ca.cert, set())
