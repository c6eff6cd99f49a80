"""Bastion: share and deploy machine-learning models securely.

The names users call are listed in ``__all__``; everything else is private.
Signing names are imported on first use, so that ``bastion --help`` and other
light commands start without loading the cryptography stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bastion.errors import (
    AuthenticationError,
    BastionError,
    BundleFormatError,
    CertificateFormatError,
    ConflictError,
    HubUnavailableError,
    InputError,
    IntegrityError,
    InternalError,
    InterruptError,
    KeyFormatError,
    KeyringError,
    ModelTreeError,
    ModelUnavailableError,
    NotFoundError,
    PassphraseError,
    PathNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PolicyError,
    QuarantinedError,
    RateLimitedError,
    StepUpRequiredError,
    StorageFullError,
    TrustPolicyError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UsageError,
    VerificationError,
    VersionYankedError,
)

if TYPE_CHECKING:
    from bastion.client import Client
    from bastion.scanning import Finding, ScanReport, Severity, scan
    from bastion.signing import (
        DigestCache,
        PrivateKey,
        PublicKey,
        SignResult,
        TrustPolicy,
        VerificationResult,
        digest,
        generate_key,
        sign,
        verify,
    )

__version__ = "0.1.0"

_LAZY = {
    "Client": "bastion.client",
    "Finding": "bastion.scanning",
    "ScanReport": "bastion.scanning",
    "Severity": "bastion.scanning",
    "scan": "bastion.scanning",
    "DigestCache": "bastion.signing",
    "PrivateKey": "bastion.signing",
    "PublicKey": "bastion.signing",
    "SignResult": "bastion.signing",
    "TrustPolicy": "bastion.signing",
    "VerificationResult": "bastion.signing",
    "digest": "bastion.signing",
    "generate_key": "bastion.signing",
    "sign": "bastion.signing",
    "verify": "bastion.signing",
}

__all__ = [
    "AuthenticationError",
    "BastionError",
    "BundleFormatError",
    "CertificateFormatError",
    "Client",
    "ConflictError",
    "DigestCache",
    "Finding",
    "HubUnavailableError",
    "InputError",
    "IntegrityError",
    "InternalError",
    "InterruptError",
    "KeyFormatError",
    "KeyringError",
    "ModelTreeError",
    "ModelUnavailableError",
    "NotFoundError",
    "PassphraseError",
    "PathNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PolicyError",
    "PrivateKey",
    "PublicKey",
    "QuarantinedError",
    "RateLimitedError",
    "ScanReport",
    "Severity",
    "SignResult",
    "StepUpRequiredError",
    "StorageFullError",
    "TrustPolicy",
    "TrustPolicyError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UsageError",
    "VerificationError",
    "VerificationResult",
    "VersionYankedError",
    "__version__",
    "digest",
    "generate_key",
    "scan",
    "sign",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
