"""One uploaded file on its way to the blob store: hashed, encrypted and written as it arrives.

Nothing is buffered beyond the chunk in hand and one encryption segment, so
memory stays flat in the file's size. The file gets its own data key, wrapped
by the key-encryption key at once; the plaintext never touches the disk (the
admission scan reads the blob in place, see ``_stored_tree.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.crypto import KeyManager, SegmentEncryptor, WrappedKey, new_data_key
from bastion.errors import InputError, PayloadTooLargeError
from bastion.registry._blobs import BlobStore
from bastion.signing import StreamDigester
from bastion.signing._manifest import Resource, Serialization

__all__ = ["UploadSink", "artifact_context"]


def artifact_context(blob_id: str) -> bytes:
    """What a blob's ciphertext and wrapped key are bound to: swapping blobs fails."""
    return f"bastion-artifact-v1:{blob_id}".encode()


@dataclass(frozen=True, slots=True)
class StoredFile:
    blob_id: str
    wrapped_key: WrappedKey
    resources: list[Resource]
    size: int


class UploadSink:
    """Feed :meth:`write` with the file's bytes in order, then :meth:`finish` (or :meth:`abort`)."""

    def __init__(
        self,
        blobs: BlobStore,
        blob_id: str,
        keys: KeyManager,
        *,
        name: str,
        serialization: Serialization,
        expected_size: int,
        segment_size: int,
    ) -> None:
        self._blob_id = blob_id
        self._expected = expected_size
        self._received = 0
        self._name = name
        key = new_data_key()
        context = artifact_context(blob_id)
        self._wrapped = keys.wrap(key, context=context)
        self._encryptor = SegmentEncryptor(key, associated_data=context, segment_size=segment_size)
        self._digester = StreamDigester(name, serialization)
        self._writer = blobs.writer(blob_id)
        try:
            self._writer.write(self._encryptor.header())
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._received += len(data)
        if self._received > self._expected:
            self.abort()
            raise PayloadTooLargeError(
                f"{self._name!r} is larger than the {self._expected} bytes declared for it"
            )
        try:
            self._digester.update(data)
            self._writer.write(self._encryptor.update(data))
        except BaseException:
            self.abort()
            raise

    def finish(self) -> StoredFile:
        if self._received != self._expected:
            self.abort()
            raise InputError(
                f"the upload of {self._name!r} ended after {self._received} of the "
                f"{self._expected} bytes declared; nothing was kept, send it again"
            )
        try:
            self._writer.write(self._encryptor.finalize())
            self._writer.commit()
        except BaseException:
            self.abort()
            raise
        return StoredFile(self._blob_id, self._wrapped, self._digester.resources(), self._received)

    def abort(self) -> None:
        self._writer.abort()
