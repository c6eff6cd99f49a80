"""The OMS signature format: a Sigstore bundle holding a DSSE envelope over an
in-toto statement whose predicate lists every resource's digest.

Reading is split in two so that nothing signed is interpreted before its
signature is checked: :meth:`Bundle.from_json` reads only the envelope and the
verification material; :meth:`Statement.from_payload` reads the signed payload
and is called only after a signature over it has been verified.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.errors import BundleFormatError
from bastion.signing._manifest import Resource, Serialization, parse_resources, root_digest

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "Bundle",
    "DsseSignature",
    "Statement",
    "format_timestamp",
    "pae",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_PREDICATE_TYPE_V02 = "https://model_signing/Digests/v0.1"
EXTENSION_KEY = "bastion"
EXTENSION_VERSION = 1
MAX_BUNDLE_BYTES = 256 << 20
_MAX_SIGNATURES = 16
_MAX_CERTIFICATES = 10


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC to the second; the year always has four digits (unlike strftime's %Y)."""
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    header = f"DSSEv1 {len(payload_type.encode())} {payload_type} {len(payload)} "
    return header.encode() + payload


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleFormatError(f"the bundle's {what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleFormatError(f"the bundle's {what} is not valid base64") from None


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BundleFormatError(f"the bundle's {what} is missing or not an object")
    return value


def _load_json(data: bytes, what: str) -> Any:
    try:
        # UTF-8, as JSON between systems must be (RFC 8259): json.loads would also take
        # UTF-16 or UTF-32, which the hub stores and hands on as the signature's text.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BundleFormatError(f"the {what} is not UTF-8 JSON (truncated or corrupt?)") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BundleFormatError(f"the {what} is not valid JSON (truncated or corrupt?)") from exc


@dataclass(frozen=True, slots=True)
class DsseSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    """A Sigstore bundle, read only as far as is safe before checking signatures."""

    payload: bytes
    signatures: tuple[DsseSignature, ...]
    key_hint: str | None = None
    certificates: tuple[bytes, ...] = ()
    payload_type: str = PAYLOAD_TYPE

    @classmethod
    def from_json(cls, data: bytes) -> Bundle:
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleFormatError("the signature file is too large to be a bundle")
        doc = _object(_load_json(data, "signature file"), "top level")
        media_type = doc.get("mediaType")
        if media_type != BUNDLE_MEDIA_TYPE:
            raise BundleFormatError(
                f"not a Sigstore v0.3 bundle (media type {media_type!r}); "
                "is this a model signature file?"
            )
        material = _object(doc.get("verificationMaterial"), "verificationMaterial")
        envelope = _object(doc.get("dsseEnvelope"), "dsseEnvelope")
        payload_type = envelope.get("payloadType")
        if payload_type != PAYLOAD_TYPE:
            raise BundleFormatError(f"the envelope's payload type {payload_type!r} is not in-toto")
        payload = _b64(envelope.get("payload"), "payload")
        raw_sigs = envelope.get("signatures")
        if not isinstance(raw_sigs, list) or not 1 <= len(raw_sigs) <= _MAX_SIGNATURES:
            raise BundleFormatError("the envelope must hold between 1 and 16 signatures")
        signatures = []
        for raw in raw_sigs:
            entry = _object(raw, "signature entry")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str):
                raise BundleFormatError("a signature's keyid is not a string")
            signatures.append(DsseSignature(keyid, _b64(entry.get("sig"), "signature")))
        key_hint: str | None = None
        certificates: tuple[bytes, ...] = ()
        if "x509CertificateChain" in material:
            chain = _object(material["x509CertificateChain"], "certificate chain")
            certs = chain.get("certificates")
            if not isinstance(certs, list) or not 1 <= len(certs) <= _MAX_CERTIFICATES:
                raise BundleFormatError("the bundle's certificate chain is empty or too long")
            certificates = tuple(
                _b64(_object(c, "certificate").get("rawBytes"), "certificate") for c in certs
            )
        elif "publicKey" in material:
            hint = _object(material["publicKey"], "publicKey").get("hint")
            if hint is not None and not isinstance(hint, str):
                raise BundleFormatError("the bundle's public key hint is not a string")
            key_hint = hint or None
        elif "certificate" in material:
            raise BundleFormatError(
                "this is a Sigstore keyless bundle (Fulcio certificate and transparency log); "
                "Bastion verifies key and X.509 certificate signatures"
            )
        else:
            raise BundleFormatError("the bundle names neither a public key nor a certificate")
        return cls(payload, tuple(signatures), key_hint, certificates, payload_type)

    def to_json(self) -> bytes:
        material: dict[str, Any]
        if self.certificates:
            material = {
                "x509CertificateChain": {
                    "certificates": [
                        {"rawBytes": base64.b64encode(c).decode()} for c in self.certificates
                    ]
                }
            }
        else:
            material = {"publicKey": {"hint": self.key_hint or ""}}
        material["tlogEntries"] = []
        doc = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": base64.b64encode(self.payload).decode(),
                "payloadType": self.payload_type,
                "signatures": [
                    {"sig": base64.b64encode(s.sig).decode(), "keyid": s.keyid}
                    for s in self.signatures
                ],
            },
        }
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Statement:
    """The signed in-toto statement with its OMS predicate."""

    subject_name: str
    serialization: Serialization
    resources: tuple[Resource, ...]
    signed_at: datetime | None = None
    extension_version: int | None = None
    digest: bytes = field(default=b"")

    @classmethod
    def build(
        cls,
        subject_name: str,
        serialization: Serialization,
        resources: tuple[Resource, ...],
        signed_at: datetime,
    ) -> Statement:
        return cls(
            subject_name,
            serialization,
            resources,
            signed_at,
            EXTENSION_VERSION,
            root_digest(resources),
        )

    @property
    def root_digest(self) -> str:
        return "sha256:" + self.digest.hex()

    def to_payload(self) -> bytes:
        predicate: dict[str, Any] = {
            "serialization": self.serialization.to_dict(),
            "resources": [r.to_dict() for r in self.resources],
        }
        if self.signed_at is not None:
            predicate[EXTENSION_KEY] = {
                "version": EXTENSION_VERSION,
                "signed_at": format_timestamp(self.signed_at),
            }
        doc = {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.subject_name, "digest": {"sha256": self.digest.hex()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
        # Compact: the exact bytes are signed, so layout is free, and the C encoder
        # is four times faster than the indenting one on 10,000 resources.
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Statement:
        """Read a payload whose signature has been verified."""
        doc = _object(_load_json(payload, "signed statement"), "statement")
        if doc.get("_type") != STATEMENT_TYPE:
            raise BundleFormatError("the signed payload is not an in-toto v1 statement")
        predicate_type = doc.get("predicateType")
        if predicate_type == _PREDICATE_TYPE_V02:
            raise BundleFormatError(
                "this signature uses the pre-1.0 model-signing layout, which records no "
                "serialization or ignore list; re-sign the model with a current signer"
            )
        if predicate_type != PREDICATE_TYPE:
            raise BundleFormatError(f"unknown predicate type {predicate_type!r}")
        subjects = doc.get("subject")
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise BundleFormatError("the statement must have exactly one subject")
        subject = _object(subjects[0], "subject")
        name = subject.get("name", "")
        digest_hex = _object(subject.get("digest"), "subject digest").get("sha256")
        if not isinstance(name, str) or not isinstance(digest_hex, str):
            raise BundleFormatError("the statement's subject lacks a name or sha256 digest")
        predicate = _object(doc.get("predicate"), "predicate")
        serialization = Serialization.from_dict(predicate.get("serialization"))
        resources = parse_resources(predicate.get("resources"), serialization)
        computed = root_digest(resources)
        if computed.hex() != digest_hex:
            raise BundleFormatError(
                "the statement is inconsistent: its resources do not hash to its subject digest"
            )
        signed_at, version = _read_extension(predicate.get(EXTENSION_KEY))
        return cls(name, serialization, resources, signed_at, version, computed)


def _read_extension(body: object) -> tuple[datetime | None, int | None]:
    if body is None:
        return None, None
    ext = _object(body, "bastion extension")
    version = ext.get("version")
    if type(version) is not int or version != EXTENSION_VERSION:
        raise BundleFormatError(
            f"the signature uses Bastion extension version {version!r}; upgrade Bastion"
        )
    raw = ext.get("signed_at")
    if not isinstance(raw, str):
        raise BundleFormatError("the signature's signing time is missing")
    try:
        signed_at = datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BundleFormatError(f"the signature's signing time {raw!r} is malformed") from None
    return signed_at, version
