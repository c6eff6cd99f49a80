"""Bastion's exception tree.

Every error Bastion raises derives from :class:`BastionError`, carries a stable
``code`` (a short snake_case string that scripts and the API can rely on) and a
message that says what was wrong and what to do about it. Third-party
exceptions never escape a public function: they are wrapped with
``raise ... from exc``.

::

    BastionError                      exit 3  internal
    ├── UsageError                    exit 2  usage              a command used wrongly
    ├── InputError                    exit 2  bad_input          input that cannot be used
    │   ├── PathNotFoundError         exit 2  path_not_found
    │   ├── KeyFormatError            exit 2  key_invalid        unreadable or unsupported key
    │   ├── PassphraseError           exit 2  passphrase_invalid wrong or missing passphrase
    │   ├── CertificateFormatError    exit 2  certificate_invalid
    │   ├── BundleFormatError         exit 2  bundle_invalid     corrupt or truncated signature
    │   ├── TrustPolicyError          exit 2  trust_policy_invalid
    │   ├── ModelTreeError            exit 2  model_tree_invalid symlink, special file, bad name
    │   ├── KeyringError              exit 2  keyring_invalid    key-encryption keyring unusable
    │   ├── PolicyError               exit 2  policy_invalid     Cedar policies that do not validate
    │   ├── NotFoundError             exit 2  not_found          no such namespace, model, version
    │   ├── ConflictError             exit 2  conflict           exists, or changed meanwhile
    │   ├── PayloadTooLargeError      exit 2  payload_too_large  over the configured size limit
    │   ├── UnsupportedMediaTypeError exit 2  unsupported_media_type  a body type not accepted
    │   └── VersionYankedError        exit 2  version_yanked     withdrawn; pull needs allow_yanked
    ├── VerificationError             exit 1  verification_failed
    │   └── QuarantinedError          exit 1  version_quarantined failed admission, never served
    ├── IntegrityError                exit 1  integrity_failed   stored data or audit log tampered
    ├── AuthenticationError           exit 4  unauthenticated    no, unknown, expired or revoked key
    ├── PermissionDeniedError         exit 4  forbidden          authenticated, but not allowed
    │   └── StepUpRequiredError       exit 4  step_up_required   needs a fresh MFA code first
    ├── RateLimitedError              exit 4  rate_limited       too many requests or logins; wait
    ├── HubUnavailableError           exit 5  hub_unavailable    hub unreachable or out of service
    │   ├── ModelUnavailableError     exit 5  model_unavailable  a deployment's worker is down
    │   └── UpstreamError             exit 5  upstream_failed    a fronted inference server failed
    ├── StorageFullError              exit 5  storage_full       the hub's disk is full
    └── InternalError                 exit 3  internal

The exit codes are those of the command line (``docs/cli.md``): 0 success,
1 verification failed, unsafe or tampered, 2 usage or bad input, 3 internal error,
4 refused by the hub (authentication or permission), 5 hub unreachable or out of service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from bastion.signing import VerificationResult

__all__ = [
    "AuthenticationError",
    "BastionError",
    "BundleFormatError",
    "CertificateFormatError",
    "ConflictError",
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
    "QuarantinedError",
    "RateLimitedError",
    "StepUpRequiredError",
    "StorageFullError",
    "TrustPolicyError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UsageError",
    "VerificationError",
    "VersionYankedError",
]


class BastionError(Exception):
    """The root of every error Bastion raises."""

    code: ClassVar[str] = "internal"
    exit_code: ClassVar[int] = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description: the stable code and the message."""
        return {"code": self.code, "message": self.message}


class UsageError(BastionError):
    """A command or function was called with arguments that do not fit together."""

    code = "usage"
    exit_code = 2


class InputError(BastionError):
    """Input that Bastion cannot use: a file, a key, a policy."""

    code = "bad_input"
    exit_code = 2


class PathNotFoundError(InputError):
    """A path named by the caller does not exist."""

    code = "path_not_found"


class KeyFormatError(InputError):
    """A key file cannot be read, or holds a key of a type that cannot be used here."""

    code = "key_invalid"


class PassphraseError(InputError):
    """An encrypted private key could not be decrypted with the passphrase given."""

    code = "passphrase_invalid"


class CertificateFormatError(InputError):
    """A certificate or chain file cannot be read."""

    code = "certificate_invalid"


class BundleFormatError(InputError):
    """A signature bundle is corrupt, truncated, or not an OMS bundle."""

    code = "bundle_invalid"


class TrustPolicyError(InputError):
    """A trust policy file is malformed, or trusts nothing."""

    code = "trust_policy_invalid"


class ModelTreeError(InputError):
    """A model holds something that cannot be signed: a symlink, a special file, a bad name."""

    code = "model_tree_invalid"


class KeyringError(InputError):
    """A key-encryption keyring is missing, unreadable, too widely readable, or lacks a key."""

    code = "keyring_invalid"


class PolicyError(InputError):
    """Authorisation policies that do not parse or do not validate against Bastion's schema."""

    code = "policy_invalid"


class NotFoundError(InputError):
    """A namespace, model, version, alias, upload or key that does not exist."""

    code = "not_found"


class ConflictError(InputError):
    """The request conflicts with what exists: a version pushed twice, a racing commit."""

    code = "conflict"


class PayloadTooLargeError(InputError):
    """An upload or request body over the configured size limit."""

    code = "payload_too_large"


class UnsupportedMediaTypeError(InputError):
    """A request body of a content type the route does not accept (e.g. not JSON)."""

    code = "unsupported_media_type"
    exit_code = 2


class VersionYankedError(InputError):
    """A yanked version was asked for without explicitly allowing yanked versions."""

    code = "version_yanked"


class VerificationError(BastionError):
    """A model or a signature did not verify.

    This is the one error type for every verification failure. ``result``, when
    set, says precisely what differed (modified, added and removed files).
    """

    code = "verification_failed"
    exit_code = 1

    def __init__(self, message: str, *, result: VerificationResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        if self.result is not None:
            body["result"] = self.result.to_dict()
        return body


class QuarantinedError(VerificationError):
    """A model version failed admission (digests, signature or scan) and is kept in quarantine."""

    code = "version_quarantined"


class IntegrityError(BastionError):
    """Stored data or the audit log failed an integrity check: something was tampered with."""

    code = "integrity_failed"
    exit_code = 1


class AuthenticationError(BastionError):
    """No credential, or one that is unknown, expired or revoked."""

    code = "unauthenticated"
    exit_code = 4


class PermissionDeniedError(BastionError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"
    exit_code = 4


class StepUpRequiredError(PermissionDeniedError):
    """A sensitive action needs a session whose MFA is recent: give a fresh code (step-up)."""

    code = "step_up_required"
    exit_code = 4


class RateLimitedError(BastionError):
    """Too many requests, or too many failed logins: wait ``retry_after`` seconds."""

    code = "rate_limited"
    exit_code = 4

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class HubUnavailableError(BastionError):
    """The hub cannot be reached, or answered that it is out of service."""

    code = "hub_unavailable"
    exit_code = 5


class ModelUnavailableError(HubUnavailableError):
    """A deployment cannot answer now: its worker crashed, hung or is restarting.

    The request was not served; retrying after a moment is safe.
    """

    code = "model_unavailable"
    exit_code = 5


class UpstreamError(HubUnavailableError):
    """The inference server a deployment fronts failed, timed out or sent an invalid answer."""

    code = "upstream_failed"
    exit_code = 5


class StorageFullError(BastionError):
    """The hub ran out of disk space; nothing partial was kept."""

    code = "storage_full"
    exit_code = 5


class InterruptError(BastionError):
    """The command was interrupted (Ctrl-C) before it finished; what it did is undone."""

    code = "interrupted"
    exit_code = 130


class InternalError(BastionError):
    """A defect in Bastion itself; please report it."""

    code = "internal"
    exit_code = 3
