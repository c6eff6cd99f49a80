"""Model signing and verification in the OpenSSF Model Signing (OMS) format.

A core library: no server, no database. See ``docs/signing.md``.
"""

from bastion.signing._cache import DigestCache
from bastion.signing._digest import digest
from bastion.signing._keys import KEY_TYPES, KeyType, PrivateKey, PublicKey, generate_key
from bastion.signing._result import Signer, SignResult, VerificationResult
from bastion.signing._sign import sign
from bastion.signing._streaming import StreamDigester
from bastion.signing._trust import TrustedAuthority, TrustedKey, TrustPolicy
from bastion.signing._verify import read_signature, signed_files, verify, verify_digests

__all__ = [
    "KEY_TYPES",
    "DigestCache",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "SignResult",
    "Signer",
    "StreamDigester",
    "TrustPolicy",
    "TrustedAuthority",
    "TrustedKey",
    "VerificationResult",
    "digest",
    "generate_key",
    "read_signature",
    "sign",
    "signed_files",
    "verify",
    "verify_digests",
]
