"""A version's stored files as a folder the scanner reads in place, without any plaintext on disk.

Each file is opened as a :class:`~bastion.crypto.SegmentReader` over its encrypted
blob: the scanner seeks and reads, and only the segments it touches are decrypted,
each authenticated before any of its bytes reach the scanner. A safetensors model
is judged from its header, so admitting one costs milliseconds however large it is.

A blob that is missing, holds another size than was received, or fails
authentication (its wrapped data key, or a segment the scanner read) is listed by
:meth:`StoredTree.damaged`: admission quarantines the version for it whatever the
scan threshold, since a scan of damaged bytes proves nothing. Segments the scanner
never read are not checked here; every pull checks them all.

A blob that cannot be read *now* is not damage: the key-encryption key is not in
the keyring (or an external key service fails), or the disk reports another error,
when the file is opened or while it is read. Quarantine is final, so
:meth:`StoredTree.open` and :meth:`StoredTree.check_readable` raise
``hub_unavailable`` instead, and the commit leaves the upload as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from bastion.crypto import SegmentReader, WrappedKey
from bastion.errors import BastionError, HubUnavailableError, IntegrityError, NotFoundError
from bastion.registry._hub import Hub
from bastion.registry._uploads import artifact_context

__all__ = ["StoredFileRef", "StoredTree"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredFileRef:
    path: str
    blob_id: str
    wrapped_key: str
    size: int


class StoredTree:
    """The files of one version, by path, for :func:`bastion.scanning.scan_tree`."""

    def __init__(self, hub: Hub, files: list[StoredFileRef]) -> None:
        self._hub = hub
        self._files = {f.path: f for f in files}
        self._failed: dict[str, str] = {}
        self._opened: list[tuple[str, SegmentReader]] = []

    def damaged(self) -> dict[str, str]:
        """Path -> why, for every file that failed to open or to authenticate a segment."""
        failed = dict(self._failed)
        for path, reader in self._opened:
            if reader.failed and path not in failed:
                failed[path] = "a segment failed authentication: the stored data was modified"
        return failed

    def files(self) -> Mapping[str, int]:
        return {path: f.size for path, f in self._files.items()}

    def open(self, name: str) -> BinaryIO:
        try:
            return self._open(self._files[name])
        except IntegrityError as exc:
            self._failed[name] = exc.message
            raise
        except (NotFoundError, FileNotFoundError) as exc:  # the store's word for it, or the OS's
            self._failed[name] = "the stored blob is missing"
            raise IntegrityError("the stored blob is missing") from exc
        except (BastionError, OSError) as exc:
            raise _unreadable_now(name, exc) from exc

    def check_readable(self) -> None:
        """Raise ``hub_unavailable`` if the store failed a read while the scanner read on
        (the scanner counts such a file as not scanned; the hub must not judge by that)."""
        for path, reader in self._opened:
            if reader.source_error is not None:
                raise _unreadable_now(path, reader.source_error) from reader.source_error

    def _open(self, f: StoredFileRef) -> BinaryIO:
        context = artifact_context(f.blob_id)
        key = self._hub.keys.unwrap(WrappedKey.from_text(f.wrapped_key), context=context)
        reader = SegmentReader(self._hub.blobs.open(f.blob_id), key, associated_data=context)
        if reader.size != f.size:
            reader.close()
            raise IntegrityError(
                f"the stored file holds {reader.size} bytes, not the {f.size} received"
            )
        self._opened.append((f.path, reader))
        return reader


def _unreadable_now(path: str, exc: Exception) -> HubUnavailableError:
    # The detail (a keyring path, a disk error) is for the operator, not the caller.
    log.error("cannot read stored file %r back for its scan: %s", path, exc)
    return HubUnavailableError(
        "the hub cannot read the uploaded files back for their scan right now (its "
        "key store or disk failed; its log says which); nothing was published or "
        "quarantined: push again once it is fixed"
    )
