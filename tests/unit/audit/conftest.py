"""Fixtures for the audit log tests: a signer, and a signed log of a few hundred entries."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit import CheckpointSigner
from tests.unit.audit._log import SignedLog, build_log


@pytest.fixture(scope="session")
def signer() -> CheckpointSigner:
    return CheckpointSigner(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def other_signer() -> CheckpointSigner:
    return CheckpointSigner(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def log(signer: CheckpointSigner) -> SignedLog:
    """300 entries, a checkpoint after every 25th: never mutate it, copy its lists."""
    return build_log(300, 25, signer)
