"""Enrolment messages: a joining desk and an admin desk prove to each other that they saw the same code.

There is no prior shared secret, only a short code that one side shows on its screen and staff type on
the other. Both sides derive a key from the code with scrypt and authenticate their message with HMAC:

- the join request (the joiner's Ed25519 public key, desk name, a fresh nonce) is MACed, so the admin
  knows the request comes from whoever holds the code, and is signed with the joiner's key, so nobody
  can have a certificate issued for a key they do not hold;
- the answer (node certificate, CA certificate, cluster id) is MACed together with the request's nonce
  and key, so the joiner knows it comes from the admin that holds the code, for this request and no
  other: a machine in the middle cannot slip in its own CA. The CA fingerprint is authenticated that way.

Nothing secret travels: certificates are public and the code never leaves the keyboard. This is why
the enrolment endpoint may be plain HTTP on the LAN (there is no certificate yet to run TLS with).
The code is 40 bits and scrypt makes each guess cost tens of milliseconds, so deriving the code
offline from a captured MAC takes far longer than the 15 minutes a code lives, while guessing online
is capped at 5 attempts per code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.trust.certs import (
    Role,
    TrustError,
    check_desk_name,
    cluster_id_of,
    fingerprint,
    is_cluster_id,
    load_cert_pem,
    verify_node_certificate,
)
from node.trust.identity import node_id_for, raw_public_key

# Crockford's base32: no I, L, O or U, so nothing is read or typed ambiguously.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
NONCE_BYTES = 16
MAC_BYTES = 32
# scrypt cost: about 16 MiB and a few tens of milliseconds per derivation.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KDF_SALT = b"circmesh enrolment code v1"
REQUEST_DOMAIN = b"circmesh enrolment request v1\n"
ANSWER_DOMAIN = b"circmesh enrolment answer v1\n"
MAX_PEM = 8192


class EnrolmentError(Exception):
    """Enrolment refused. `reason` is a stable word for programs, the message is for staff."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_code() -> str:
    """A fresh one-time code, formatted for the screen as `ABCD-EFGH`."""
    return format_code("".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH)))


def format_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalise_code(text: str) -> str:
    """What staff typed → the code's 8 canonical characters; forgives case, spaces, dashes and the
    look-alikes O/0 and I/L/1, which is why the alphabet leaves those letters out."""
    if not isinstance(text, str):
        raise EnrolmentError("malformed", "the code must be text")
    cleaned = text.upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.translate(str.maketrans("OIL", "011"))
    if len(cleaned) != CODE_LENGTH or any(c not in ALPHABET for c in cleaned):
        raise EnrolmentError("malformed", f"a code is {CODE_LENGTH} letters and digits, like ABCD-EFGH")
    return cleaned


def derive_code_key(code: str) -> bytes:
    """The MAC key both sides derive from the code; deliberately slow (see the module docstring)."""
    return hashlib.scrypt(
        normalise_code(code).encode("ascii"), salt=KDF_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )


def _fields(*parts: bytes) -> bytes:
    """Length-prefixed concatenation, so no two different field lists give the same bytes."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * MAX_PEM:
        raise EnrolmentError("malformed", f"{what} must be base64 text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnrolmentError("malformed", f"{what} is not valid base64") from None
    if length is not None and len(data) != length:
        raise EnrolmentError("malformed", f"{what} must be {length} bytes")
    return data


@dataclass(frozen=True)
class JoinRequest:
    public_key: bytes  # raw Ed25519 public key, 32 bytes
    desk_name: str
    nonce: bytes
    signature: bytes  # by the joiner's key over the request: proof it holds the key
    mac: bytes  # keyed from the code: proof it knows the code

    @property
    def node_id(self) -> str:
        return node_id_for(self.public_key)

    def signed_bytes(self) -> bytes:
        return REQUEST_DOMAIN + _fields(self.public_key, self.desk_name.encode("utf-8"), self.nonce)

    def maced_bytes(self) -> bytes:
        return self.signed_bytes() + _fields(self.signature)

    def to_json(self) -> dict[str, object]:
        return {
            "v": 1,
            "public_key": _b64(self.public_key),
            "desk_name": self.desk_name,
            "nonce": _b64(self.nonce),
            "sig": _b64(self.signature),
            "mac": _b64(self.mac),
        }

    @classmethod
    def from_json(cls, data: object) -> JoinRequest:
        if not isinstance(data, Mapping) or data.get("v") != 1:
            raise EnrolmentError("malformed", "not a version 1 join request")
        try:
            desk_name = check_desk_name(data.get("desk_name"))
        except TrustError as exc:
            raise EnrolmentError("malformed", str(exc)) from None
        return cls(
            public_key=_unb64(data.get("public_key"), "public_key", 32),
            desk_name=desk_name,
            nonce=_unb64(data.get("nonce"), "nonce", NONCE_BYTES),
            signature=_unb64(data.get("sig"), "sig", 64),
            mac=_unb64(data.get("mac"), "mac", MAC_BYTES),
        )


def make_join_request(
    code_key: bytes, node_key: Ed25519PrivateKey, desk_name: str, *, nonce: bytes | None = None
) -> JoinRequest:
    try:
        check_desk_name(desk_name)
    except TrustError as exc:
        raise EnrolmentError("malformed", str(exc)) from None
    unsigned = JoinRequest(
        public_key=raw_public_key(node_key.public_key()),
        desk_name=desk_name,
        nonce=nonce or secrets.token_bytes(NONCE_BYTES),
        signature=b"",
        mac=b"",
    )
    signature = node_key.sign(unsigned.signed_bytes())
    signed = JoinRequest(unsigned.public_key, desk_name, unsigned.nonce, signature, b"")
    mac = hmac.new(code_key, signed.maced_bytes(), hashlib.sha256).digest()
    return JoinRequest(signed.public_key, desk_name, signed.nonce, signature, mac)


def holds_key(request: JoinRequest) -> bool:
    """The request was signed by the key it asks a certificate for."""
    try:
        public = Ed25519PublicKey.from_public_bytes(request.public_key)
        public.verify(request.signature, request.signed_bytes())
    except (ValueError, InvalidSignature):
        return False
    return True


def knows_code(request: JoinRequest, code_key: bytes) -> bool:
    expected = hmac.new(code_key, request.maced_bytes(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, request.mac)


@dataclass(frozen=True)
class EnrolmentAnswer:
    node_cert: str  # PEM
    ca_cert: str  # PEM
    cluster_id: str
    mac: bytes

    def maced_bytes(self, request: JoinRequest) -> bytes:
        return ANSWER_DOMAIN + _fields(
            request.nonce,
            request.public_key,
            self.node_cert.encode("utf-8"),
            self.ca_cert.encode("utf-8"),
            self.cluster_id.encode("utf-8"),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "v": 1,
            "node_cert": self.node_cert,
            "ca_cert": self.ca_cert,
            "cluster_id": self.cluster_id,
            "mac": _b64(self.mac),
        }

    @classmethod
    def from_json(cls, data: object) -> EnrolmentAnswer:
        if not isinstance(data, Mapping) or data.get("v") != 1:
            raise EnrolmentError("malformed", "not a version 1 enrolment answer")
        texts: list[str] = []
        for name in ("node_cert", "ca_cert", "cluster_id"):
            value = data.get(name)
            if not isinstance(value, str) or len(value) > MAX_PEM:
                raise EnrolmentError("malformed", f"the answer's {name} must be text")
            texts.append(value)
        return cls(texts[0], texts[1], texts[2], _unb64(data.get("mac"), "mac", MAC_BYTES))


@dataclass(frozen=True)
class EnrolmentResult:
    node_cert: x509.Certificate
    ca_cert: x509.Certificate
    cluster_id: str
    node_id: str
    desk_name: str
    role: Role
    ca_fingerprint: str


def make_answer(
    code_key: bytes, request: JoinRequest, node_cert_pem: str, ca_cert_pem: str, cluster_id: str
) -> EnrolmentAnswer:
    unsigned = EnrolmentAnswer(node_cert_pem, ca_cert_pem, cluster_id, b"")
    mac = hmac.new(code_key, unsigned.maced_bytes(request), hashlib.sha256).digest()
    return EnrolmentAnswer(node_cert_pem, ca_cert_pem, cluster_id, mac)


def open_answer(code_key: bytes, request: JoinRequest, answer: EnrolmentAnswer) -> EnrolmentResult:
    """The joiner's check of the admin's answer: authentic, for this request, and a working certificate."""
    expected = hmac.new(code_key, answer.maced_bytes(request), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, answer.mac):
        raise EnrolmentError(
            "forged_answer",
            "the answer is not authenticated by the code: not from the admin desk, or altered on the way",
        )
    try:
        ca_cert = load_cert_pem(answer.ca_cert)
        node_cert = load_cert_pem(answer.node_cert)
        if not is_cluster_id(answer.cluster_id) or cluster_id_of(ca_cert) != answer.cluster_id:
            raise TrustError("the answer's cluster id is not the CA's")
        info = verify_node_certificate(node_cert, ca_cert, frozenset())
    except TrustError as exc:
        raise EnrolmentError("bad_certificate", f"the admin sent an unusable certificate: {exc}") from None
    if raw_public_key(info.public_key) != request.public_key or info.desk_name != request.desk_name:
        raise EnrolmentError("bad_certificate", "the certificate is not for this desk's key and name")
    return EnrolmentResult(
        node_cert=node_cert,
        ca_cert=ca_cert,
        cluster_id=info.cluster_id,
        node_id=info.node_id,
        desk_name=info.desk_name,
        role=info.role,
        ca_fingerprint=fingerprint(ca_cert),
    )
