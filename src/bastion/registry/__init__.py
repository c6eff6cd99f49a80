"""The model hub's service layer: catalogue, publishing with admission, encrypted storage.

Faces (the HTTP API, the CLI through the SDK) call these; they never touch
the database or the blob store themselves. See ``docs/hub.md``.
"""

from bastion.registry._blobs import BlobStore, LocalBlobStore
from bastion.registry._catalog import Catalog, ServedFile
from bastion.registry._hub import Hub, HubLimits
from bastion.registry._names import ModelRef, check_file_path, check_name, parse_ref
from bastion.registry._publish import FileTarget, Publisher
from bastion.registry._rotation import rotate_kek
from bastion.registry._uploads import UploadSink

__all__ = [
    "BlobStore",
    "Catalog",
    "FileTarget",
    "Hub",
    "HubLimits",
    "LocalBlobStore",
    "ModelRef",
    "Publisher",
    "ServedFile",
    "UploadSink",
    "check_file_path",
    "check_name",
    "parse_ref",
    "rotate_kek",
]
