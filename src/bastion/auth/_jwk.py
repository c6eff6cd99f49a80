"""JSON Web Keys (RFC 7517/7518/8037) of an identity provider, and JWS signature checks.

A JWK becomes a :class:`VerifyingKey` only if it is a public signing key of a
supported type and size: RSA (2048 to 8192 bits), EC on P-256/P-384/P-521, or
OKP Ed25519/Ed448. Which JWS algorithm may use which key is fixed here, so a
token's ``alg`` can never make an RSA key verify an HMAC, or an EC key an
RSA signature. HMAC (``HS*``) and ``none`` are not algorithms of this module.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bastion.errors import InputError

__all__ = ["ALGORITHMS", "VerifyingKey", "b64url_decode", "parse_jwk"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
#: JWS algorithm -> (JWK kty, curve or None).
_KEY_FOR_ALG: Final[dict[str, tuple[str, frozenset[str] | None]]] = {
    **{f"RS{bits}": ("RSA", None) for bits in _HASHES},
    **{f"PS{bits}": ("RSA", None) for bits in _HASHES},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
#: Every JWS algorithm a token may name; ``none`` and ``HS*`` are deliberately absent.
ALGORITHMS: Final[frozenset[str]] = frozenset(_KEY_FOR_ALG)
_CURVES: Final[dict[str, tuple[ec.EllipticCurve, int]]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192
_MAX_FIELD = 2048  # base64url characters of one key parameter (an 8192-bit modulus is 1366)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: ValueError unless ``text`` is its canonical encoding."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError("not the canonical base64url encoding")
    return raw


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """One public key from a JWKS, with what its JWK said about its use."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey

    def accepts(self, alg: str) -> bool:
        """Whether a JWS with header ``alg`` may be checked with this key."""
        wanted = _KEY_FOR_ALG.get(alg)
        if wanted is None or wanted[0] != self.kty:
            return False
        if wanted[1] is not None and self.crv not in wanted[1]:
            return False
        return self.alg is None or self.alg == alg

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True only if ``signature`` is a valid ``alg`` signature by this key."""
        if not self.accepts(alg):
            return False
        try:
            if isinstance(self.key, rsa.RSAPublicKey):
                algorithm = _HASHES[alg[2:]]()
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg.startswith("RS")
                    else padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)
                )
                if len(signature) != (self.key.key_size + 7) // 8:
                    return False
                self.key.verify(signature, signing_input, pad, algorithm)
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                size = _CURVES[self.crv or ""][1]
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                algorithm = _HASHES[alg[2:]]()
                self.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(algorithm))
            else:
                self.key.verify(signature, signing_input)
        except (InvalidSignature, ValueError):
            return False
        return True


def _field(jwk: Mapping[str, object], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise InputError(f"the JWK has no usable {name!r}")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise InputError(f"the JWK's {name!r} is not base64url") from exc


def _optional_str(jwk: Mapping[str, object], name: str) -> str | None:
    value = jwk.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise InputError(f"the JWK's {name!r} is not a short string")
    return value


def _public_key(kty: str, crv: str | None, jwk: Mapping[str, object]) -> PublicKey:
    if kty == "RSA":
        n = int.from_bytes(_field(jwk, "n"), "big")
        e = int.from_bytes(_field(jwk, "e"), "big")
        if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS:
            raise InputError(f"RSA keys must have {_MIN_RSA_BITS} to {_MAX_RSA_BITS} bits")
        if e < 3 or e % 2 == 0 or e.bit_length() > 64:
            raise InputError("the RSA public exponent is not usable")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC":
        if crv not in _CURVES:
            raise InputError(f"EC curve {crv!r} is not supported; use P-256, P-384 or P-521")
        curve, size = _CURVES[crv]
        x, y = _field(jwk, "x"), _field(jwk, "y")
        if len(x) != size or len(y) != size:
            raise InputError(f"the coordinates of a {crv} key must be {size} bytes")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    if kty == "OKP":
        x = _field(jwk, "x")
        if crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
        if crv == "Ed448":
            return ed448.Ed448PublicKey.from_public_bytes(x)
        raise InputError(f"OKP curve {crv!r} is not supported; use Ed25519 or Ed448")
    raise InputError(f"key type {kty!r} is not supported for signatures")


def parse_jwk(jwk: object) -> VerifyingKey:
    """A public signing key from one JWKS entry.

    InputError (naming what is wrong, never holding key material) if the entry
    is not a public signing key that Bastion accepts.
    """
    if not isinstance(jwk, Mapping):
        raise InputError("a JWKS entry is not a JSON object")
    kty = _optional_str(jwk, "kty")
    crv = _optional_str(jwk, "crv")
    alg = _optional_str(jwk, "alg")
    kid = _optional_str(jwk, "kid")
    if kty is None:
        raise InputError("the JWK has no 'kty'")
    if alg is not None and alg not in ALGORITHMS:
        raise InputError(f"the JWK is for algorithm {alg!r}, which is not accepted")
    if _optional_str(jwk, "use") not in (None, "sig"):
        raise InputError("the JWK is not a signature key ('use' is not 'sig')")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise InputError("the JWK's 'key_ops' does not include 'verify'")
    try:
        key = _public_key(kty, crv, jwk)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"the {kty} JWK is not a valid public key") from exc
    return VerifyingKey(kid=kid, kty=kty, crv=crv, alg=alg, key=key)
