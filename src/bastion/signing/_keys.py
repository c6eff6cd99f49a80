"""Signing keys: generation, PEM files, and the signature algorithms they use.

Key types: ECDSA on P-256/P-384/P-521 (SHA-256/384/512, as the reference
tool uses them), Ed25519, ML-DSA-65 (FIPS 204), and a hybrid pair, ECDSA P-384
plus ML-DSA-65, that signs the same statement twice so the signature holds
while either algorithm stands.

A key file is PEM. A hybrid key file holds two PEM blocks, classical first.
Private keys are PKCS#8 and encrypted with a passphrase unless the caller
explicitly asks otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast, get_args

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from bastion.errors import KeyFormatError, PassphraseError, UsageError

__all__ = [
    "HYBRID",
    "KEY_TYPES",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "generate_key",
    "load_private_key",
    "load_public_key",
]

KeyType = Literal["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "ml-dsa-65", "hybrid"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)
HYBRID = "hybrid-ecdsa-p384-ml-dsa-65"

MAX_KEY_FILE = 64 * 1024
MAX_PASSPHRASE = 1023  # the most PKCS#8 encryption in cryptography accepts
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)

_Private = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey
_Public = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey

_CURVES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "secp256r1": ("ecdsa-p256", hashes.SHA256()),
    "secp384r1": ("ecdsa-p384", hashes.SHA384()),
    "secp521r1": ("ecdsa-p521", hashes.SHA512()),
}


def _algorithm_of(key: _Public) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise KeyFormatError(
                f"elliptic curve {key.curve.name} is not supported; use P-256, P-384 or P-521"
            )
        return _CURVES[key.curve.name][0]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return "ml-dsa-65"


def _as_public(key: object) -> _Public:
    if isinstance(
        key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey
    ):
        return key
    raise KeyFormatError(
        f"{type(key).__name__.removeprefix('_')} keys are not supported; "
        "use ECDSA (P-256/P-384/P-521), Ed25519, ML-DSA-65 or a hybrid key"
    )


@dataclass(frozen=True, slots=True)
class _PublicPart:
    key: _Public
    algorithm: str
    pem: bytes

    @classmethod
    def of(cls, key: object) -> _PublicPart:
        public = _as_public(key)
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(public, _algorithm_of(public), pem)

    @property
    def hint(self) -> str:
        """SHA-256 of the PEM public key, hex: the reference's ``publicKey.hint``."""
        return hashlib.sha256(self.pem).hexdigest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, data, ec.ECDSA(_CURVES[self.key.curve.name][1]))
            else:
                self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key: one algorithm, or a hybrid pair (classical first)."""

    parts: tuple[_PublicPart, ...]

    @property
    def algorithm(self) -> str:
        return HYBRID if len(self.parts) == 2 else self.parts[0].algorithm

    @property
    def hint(self) -> str:
        """The bundle hint: that of the classical part, so the reference can check it."""
        return self.parts[0].hint

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` over every part's PEM: names this key in policies and output."""
        return "sha256:" + hashlib.sha256(b"".join(p.pem for p in self.parts)).hexdigest()

    @property
    def pem(self) -> bytes:
        return b"".join(p.pem for p in self.parts)

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "public key") -> PublicKey:
        blocks = _pem_blocks(data, source)
        parts = []
        for label, block in blocks:
            if label != b"PUBLIC KEY":
                raise KeyFormatError(
                    f"{source} holds a {label.decode().lower()}, not a public key"
                    + ("; pass the .pub file" if b"PRIVATE" in label else "")
                )
            try:
                loaded = serialization.load_pem_public_key(block)
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise KeyFormatError(f"{source} is not a readable PEM public key") from exc
            parts.append(_PublicPart.of(loaded))
        return cls(_check_parts(tuple(parts), source))


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A signing key: one algorithm, or a hybrid pair (classical first)."""

    keys: tuple[_Private, ...]

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(tuple(_PublicPart.of(k.public_key()) for k in self.keys))

    def sign(self, data: bytes) -> list[tuple[str, bytes]]:
        """One (key hint, signature) pair per part, classical first."""
        out = []
        for key, part in zip(self.keys, self.public_key.parts, strict=True):
            if isinstance(key, ec.EllipticCurvePrivateKey):
                sig = key.sign(data, ec.ECDSA(_CURVES[key.curve.name][1]))
            else:
                sig = key.sign(data)
            out.append((part.hint, sig))
        return out

    def to_pem(self, passphrase: bytes | None) -> bytes:
        if passphrase is not None and len(passphrase) > MAX_PASSPHRASE:
            raise UsageError(f"the passphrase is too long; use at most {MAX_PASSPHRASE} bytes")
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return b"".join(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            for k in self.keys
        )

    @classmethod
    def from_pem(
        cls, data: bytes, passphrase: bytes | None = None, *, source: str = "private key"
    ) -> PrivateKey:
        blocks = _pem_blocks(data, source)
        keys = []
        for label, block in blocks:
            if label not in (b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"EC PRIVATE KEY"):
                raise KeyFormatError(
                    f"{source} holds a {label.decode().lower()}, not a private key"
                    + ("; pass the .key file" if label == b"PUBLIC KEY" else "")
                )
            encrypted = label == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in block[:200]
            if encrypted and not passphrase:
                raise PassphraseError(
                    f"{source} is encrypted; give its passphrase "
                    "(--passphrase-file, BASTION_KEY_PASSPHRASE, or the prompt)"
                )
            try:
                loaded = serialization.load_pem_private_key(
                    block, passphrase if encrypted else None
                )
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                if encrypted:
                    raise PassphraseError(
                        f"cannot decrypt {source}: wrong passphrase, or the file is damaged"
                    ) from exc
                raise KeyFormatError(f"{source} is not a readable PEM private key") from exc
            if not isinstance(
                loaded,
                ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey,
            ):
                _as_public(loaded.public_key())  # raises with the type's name
            keys.append(cast(_Private, loaded))
        private = cls(tuple(keys))
        _check_parts(private.public_key.parts, source)
        return private


def _pem_blocks(data: bytes, source: str) -> list[tuple[bytes, bytes]]:
    if len(data) > MAX_KEY_FILE:
        raise KeyFormatError(f"{source} is too large to be a key file")
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFormatError(f"{source} is not a PEM key file")
    return blocks


def _check_parts(parts: tuple[_PublicPart, ...], source: str) -> tuple[_PublicPart, ...]:
    if len(parts) == 1:
        return parts
    if len(parts) == 2 and parts[0].algorithm != "ml-dsa-65" and parts[1].algorithm == "ml-dsa-65":
        return parts
    raise KeyFormatError(
        f"{source} holds {len(parts)} keys; "
        "a hybrid key is one classical key followed by one ML-DSA-65 key"
    )


_GENERATORS: dict[str, Callable[[], tuple[_Private, ...]]] = {
    "ecdsa-p256": lambda: (ec.generate_private_key(ec.SECP256R1()),),
    "ecdsa-p384": lambda: (ec.generate_private_key(ec.SECP384R1()),),
    "ecdsa-p521": lambda: (ec.generate_private_key(ec.SECP521R1()),),
    "ed25519": lambda: (ed25519.Ed25519PrivateKey.generate(),),
    "ml-dsa-65": lambda: (mldsa.MLDSA65PrivateKey.generate(),),
    "hybrid": lambda: (
        ec.generate_private_key(ec.SECP384R1()),
        mldsa.MLDSA65PrivateKey.generate(),
    ),
}


def generate_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of ``key_type``."""
    if key_type not in _GENERATORS:
        raise KeyFormatError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")
    return PrivateKey(_GENERATORS[key_type]())


def load_private_key(
    data: bytes, passphrase: bytes | None = None, *, source: str = "private key"
) -> PrivateKey:
    return PrivateKey.from_pem(data, passphrase, source=source)


def load_public_key(data: bytes, *, source: str = "public key") -> PublicKey:
    return PublicKey.from_pem(data, source=source)
