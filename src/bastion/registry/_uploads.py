"""One uploaded file on its way to the blob store: hashed, encrypted and written as it arrives.

Nothing is buffered beyond the chunk in hand and one encryption segment, so
memory stays flat in the file's size. The file gets its own data key, wrapped
by the key-encryption key at once. The same bytes also go to the upload's
staging folder (``_staging.py``), the one place plaintext is written, for the
admission scan; it is removed on every path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bastion.crypto import KeyManager, SegmentEncryptor, WrappedKey, new_data_key
from bastion.errors import InputError, PayloadTooLargeError
from bastion.registry._blobs import BlobStore
from bastion.registry._staging import create_staged_file
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
        staging: Path | None = None,
    ) -> None:
        self._blob_id = blob_id
        self._staged: int | None = None
        self._staged_path = None if staging is None else staging / name
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
            if staging is not None:
                self._staged = create_staged_file(staging, name)
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
            if self._staged is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._staged, view) :]
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
            if self._staged is not None:
                os.close(self._staged)
                self._staged = None
        except BaseException:
            self.abort()
            raise
        return StoredFile(self._blob_id, self._wrapped, self._digester.resources(), self._received)

    def abort(self) -> None:
        self._writer.abort()
        if self._staged is not None:
            os.close(self._staged)
            self._staged = None
        if self._staged_path is not None:
            self._staged_path.unlink(missing_ok=True)
