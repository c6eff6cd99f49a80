"""Encryption at rest and TLS material for the model hub.

A core library: no server, no database. Artifacts are encrypted with the
segmented streaming format ``BSE1`` under a per-artifact data key; data keys are
wrapped by key-encryption keys from a :class:`KeyManager` (a local keyring file,
or an external KMS). See ``docs/encryption.md``.
"""

from bastion.crypto._keyring import KeyManager, LocalKeyring, WrappedKey, rewrap
from bastion.crypto._segment_reader import SegmentReader
from bastion.crypto._segments import (
    DEFAULT_SEGMENT_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    ciphertext_size,
    encrypt_stream,
    iter_decrypt,
    new_data_key,
    plaintext_size,
)
from bastion.crypto._tls import TlsMaterial, ensure_tls_material

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "KeyManager",
    "LocalKeyring",
    "SegmentDecryptor",
    "SegmentEncryptor",
    "SegmentReader",
    "TlsMaterial",
    "WrappedKey",
    "ciphertext_size",
    "encrypt_stream",
    "ensure_tls_material",
    "iter_decrypt",
    "new_data_key",
    "plaintext_size",
    "rewrap",
]
