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
    │   └── ModelTreeError            exit 2  model_tree_invalid symlink, special file, bad name
    ├── VerificationError             exit 1  verification_failed
    └── InternalError                 exit 3  internal

The exit codes are those of the command line (``docs/cli.md``): 0 success,
1 verification failed or unsafe, 2 usage or bad input, 3 internal error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from bastion.signing import VerificationResult

__all__ = [
    "BastionError",
    "BundleFormatError",
    "CertificateFormatError",
    "InputError",
    "InternalError",
    "KeyFormatError",
    "ModelTreeError",
    "PassphraseError",
    "PathNotFoundError",
    "TrustPolicyError",
    "UsageError",
    "VerificationError",
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


class InternalError(BastionError):
    """A defect in Bastion itself; please report it."""

    code = "internal"
    exit_code = 3
