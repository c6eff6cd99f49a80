"""A tiny OpenID Connect provider for tests, served over HTTP on loopback from a thread.

It serves a discovery document and a JWKS, mints JWTs with its own keys
(RS256, PS256, ES256, ES384, EdDSA), can rotate keys, and counts the requests
it answered per path, so tests can check caching and rate limits. Its JWS
signing is written here from RFC 7515; it is not the code under test. Tests can
also serve a broken discovery document or JWKS, and mint deliberately bad
tokens (``alg: none``, HMAC with the public key as the secret).

Typical use::

    with OidcProvider() as idp:
        token = idp.mint(idp.claims(now=NOW))
        OidcAuthenticator([idp.issuer_config()], transport=httpx.HTTPTransport())
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from bastion.auth import OidcIssuer

__all__ = ["AUDIENCE", "OidcProvider", "SigningKey", "b64url", "encode_jws"]

AUDIENCE = "https://hub.example.test"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_CURVES = {"ES256": (ec.SECP256R1(), "P-256", 32), "ES384": (ec.SECP384R1(), "P-384", 48)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    @classmethod
    def generate(cls, kid: str, alg: str) -> SigningKey:
        private: PrivateKey
        if alg in ("RS256", "PS256"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg in _CURVES:
            private = ec.generate_private_key(_CURVES[alg][0])
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"the test provider cannot make {alg} keys")
        return cls(kid, alg, private)

    def jwk(self, *, with_alg: bool = True) -> dict[str, str]:
        key: dict[str, str] = {"kid": self.kid, "use": "sig"}
        if with_alg:
            key["alg"] = self.alg
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.public_key().public_numbers()
            key |= {"kty": "RSA", "n": b64url(_int(numbers.n)), "e": b64url(_int(numbers.e))}
        elif isinstance(self.private, ec.EllipticCurvePrivateKey):
            _, crv, size = _CURVES[self.alg]
            point = self.private.public_key().public_numbers()
            x, y = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
            key |= {"kty": "EC", "crv": crv, "x": b64url(x), "y": b64url(y)}
        else:
            raw = self.private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            key |= {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        return key

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes, alg: str) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(padding.MGF1(hashes.SHA256()), 32)
            )
            return self.private.sign(data, pad, hashes.SHA256())
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            _, _, size = _CURVES[self.alg]
            digest = hashes.SHA256() if size == 32 else hashes.SHA384()
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(digest)))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return self.private.sign(data)


def _int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def encode_jws(header: Mapping[str, Any], claims: Mapping[str, Any], sign: Any) -> str:
    """A compact JWS: ``sign`` maps the signing input to signature bytes."""
    signing_input = f"{_json(dict(header))}.{_json(dict(claims))}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


class OidcProvider:
    """Discovery and JWKS on http://127.0.0.1:<port>; mints tokens; rotates keys."""

    def __init__(self, algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")) -> None:
        self.keys: list[SigningKey] = [
            SigningKey.generate(f"key-{i}-{alg}", alg) for i, alg in enumerate(algorithms)
        ]
        self.requests: Counter[str] = Counter()
        #: Set to serve something else at these paths (raw bytes, or an object as JSON).
        self.discovery_override: object | None = None
        self.jwks_override: object | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OidcProvider:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def issuer_config(self, **settings: Any) -> OidcIssuer:
        return OidcIssuer.from_dict({"issuer": self.issuer, "audience": AUDIENCE} | settings)

    def key(self, alg: str) -> SigningKey:
        return next(k for k in self.keys if k.alg == alg)

    def rotate(self, alg: str = "RS256", *, drop_old: bool = True) -> SigningKey:
        """Publish a fresh key for ``alg`` (dropping the old ones for it unless told not to)."""
        new = SigningKey.generate(f"key-{len(self.keys)}-{alg}-rotated", alg)
        if drop_old:
            self.keys = [k for k in self.keys if k.alg != alg]
        self.keys.append(new)
        return new

    def claims(
        self, *, now: datetime, lifetime: timedelta = timedelta(minutes=5)
    ) -> dict[str, Any]:
        at = int(now.timestamp())
        return {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-123",
            "iat": at,
            "nbf": at,
            "exp": at + int(lifetime.total_seconds()),
        }

    def mint(
        self,
        claims: Mapping[str, Any],
        *,
        alg: str = "RS256",
        key: SigningKey | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A token signed with ``key`` (default: the current key for ``alg``)."""
        signer = key or self.key(alg)
        full = {"alg": alg, "typ": "JWT", "kid": signer.kid} | dict(header or {})
        return encode_jws(full, claims, lambda data: signer.sign(data, alg))

    def mint_hmac(self, claims: Mapping[str, Any], secret: bytes, *, kid: str) -> str:
        """HS256 with ``secret``: the key-confusion attack when the secret is a public key."""
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        return encode_jws(header, claims, lambda d: hmac.new(secret, d, hashlib.sha256).digest())

    def _discovery(self) -> object:
        if self.discovery_override is not None:
            return self.discovery_override
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys}),
        }

    def _jwks(self) -> object:
        if self.jwks_override is not None:
            return self.jwks_override
        return {"keys": [k.jwk() for k in self.keys]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests[self.path] += 1
                routes = {
                    "/.well-known/openid-configuration": provider._discovery,
                    "/jwks": provider._jwks,
                }
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                value = route()
                body = value if isinstance(value, bytes) else json.dumps(value).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
