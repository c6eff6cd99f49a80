"""Telling formats apart by their bytes, never by their names.

Loaders sniff content (``torch.load`` checks for a zip signature, joblib for
compression magic), so a scanner that trusts file extensions reads a different
file than the loader does. :func:`detect` looks at the first bytes of a stream
and names the format it will be scanned as; :func:`classify_zip` names the kind
of zip from its member names.
"""

from __future__ import annotations

import io
import pickletools
import struct
from collections.abc import Iterable

from bastion.scanning._lenient import as_loaders_read

__all__ = ["HEAD_SIZE", "TORCH_MAGIC", "classify_zip", "detect", "is_legacy_torch"]

#: Bytes read to detect a format (and to decide whether a file is text).
HEAD_SIZE = 64 << 10

#: The first object of a legacy (pre-1.6, non-zip) ``torch.save`` file.
TORCH_MAGIC = 0x1950A86A20F9469CFC6C

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive
    (b"\x93NUMPY", "npy"),
    (b"GGUF", "gguf"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)

#: Formats Bastion recognises but does not scan yet.
UNSUPPORTED: frozenset[str] = frozenset()

_SAFETENSORS_MAX_HEADER = 100 << 20


def detect(head: bytes, size: int) -> str:
    """The format of a stream of ``size`` bytes that starts with ``head``.

    One of ``zip npy gguf hdf5 7z gzip xz lz4 bzip2 zlib tar pickle
    pytorch-legacy safetensors savedmodel savedmodel-text tf-fingerprint keras-metadata onnx
    sentencepiece text empty unknown``.
    """
    if not head:
        return "empty"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and len(head) > 3:
        return "bzip2"
    if _is_zlib(head):
        return "zlib"
    if head[257:262] == b"ustar":
        return "tar"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pytorch-legacy" if is_legacy_torch(head) else "pickle"
    if _is_safetensors(head, size):
        return "safetensors"
    if _looks_like_pickle(head):
        return "pickle"
    tensorflow = _tensorflow(head, size)  # before text: a small SavedModel can be all ASCII
    if tensorflow is not None:
        return tensorflow
    if _is_onnx(head):  # before text too: a small ONNX model can be all ASCII
        return "onnx"
    if _is_text(head, truncated=len(head) < size):
        return "text"
    if _is_sentencepiece(head):
        return "sentencepiece"
    return "unknown"


def is_legacy_torch(head: bytes) -> bool:
    """Whether the first pickle in ``head`` is just the legacy torch magic number."""
    values: list[object] = []
    try:
        with as_loaders_read():
            for op, arg, _ in pickletools.genops(io.BytesIO(head)):
                if op.name in ("PROTO", "FRAME", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    continue
                if op.name == "STOP":
                    break
                values.append(arg if op.name in ("LONG1", "LONG4", "LONG", "INT") else op.name)
                if len(values) > 1:
                    return False
    except (ValueError, EOFError, struct.error):
        return False
    return values == [TORCH_MAGIC]


def classify_zip(names: Iterable[str]) -> str:
    """``pytorch-zip``, ``npz``, ``keras`` or plain ``zip``, from the member names."""
    listed = [n for n in names if not n.endswith("/")]
    if any(_is_torch_member(n) for n in listed):
        return "pytorch-zip"
    if {"config.json", "metadata.json"} <= set(listed):
        return "keras"
    if listed and all(n.endswith(".npy") for n in listed):
        return "npz"
    return "zip"


def _is_torch_member(name: str) -> bool:
    # torch.save writes <folder>/data.pkl; TorchScript adds <folder>/constants.pkl.
    return name.rsplit("/", 1)[-1] in ("data.pkl", "constants.pkl")


def _is_zlib(head: bytes) -> bool:
    if len(head) < 2 or head[0] != 0x78 or head[1] not in (0x01, 0x5E, 0x9C, 0xDA):
        return False
    import zlib

    try:
        zlib.decompressobj().decompress(head[:4096], 64)
    except zlib.error:
        return False
    return True


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(size - 8, _SAFETENSORS_MAX_HEADER) and head[8:9] == b"{"


class _LineCounter(io.StringIO):
    """A sink for ``pickletools.dis`` that only counts the opcodes it prints."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        return len(s)


def _looks_like_pickle(head: bytes) -> bool:
    """Protocol 0/1 pickles have no magic: accept a head the unpickler would run.

    ``pickletools.dis`` checks the stack as well as the opcodes, so text rarely
    passes. Two valid opcodes are enough: ``pickle.load`` runs what it has read
    before it meets an error, so a payload followed by garbage is still a pickle.
    """
    if chr(head[0]) not in _OPCODES:
        return False
    sink = _LineCounter()
    try:
        with as_loaders_read():
            pickletools.dis(io.BytesIO(head), out=sink)
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, KeyError, IndexError):
        return sink.lines >= 3  # the line of the failing opcode is printed too
    return True


_OPCODES = frozenset(op.code for op in pickletools.opcodes)


def _is_text(head: bytes, *, truncated: bool) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        return truncated and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _is_onnx(head: bytes) -> bool:
    # A ModelProto starts with field 1 (ir_version, a small varint), then another
    # length-delimited field such as producer_name (2) or graph (7).
    return (
        len(head) > 3
        and head[0] == 0x08
        and 1 <= head[1] <= 20
        and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52, 0x72)
    )


def _varint(data: bytes, at: int) -> tuple[int, int] | None:
    value = shift = 0
    while at < len(data) and shift < 35:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def _is_sentencepiece(head: bytes) -> bool:
    """A sentencepiece ``ModelProto``: pieces (field 1), each a piece string then a score."""
    outer = _varint(head, 1) if head[:1] == b"\x0a" else None
    if outer is None or head[outer[1] : outer[1] + 1] != b"\x0a":
        return False
    inner = _varint(head, outer[1] + 1)
    if inner is None:
        return False
    length, at = inner
    piece = head[at : at + length]
    if len(piece) != length or head[at + length : at + length + 1] != b"\x15":
        return False
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _tensorflow(head: bytes, size: int) -> str | None:
    """A TensorFlow SavedModel, its text form, or the ``fingerprint.pb`` and tf_keras
    ``keras_metadata.pb`` files that sit beside it."""
    if _is_saved_model(head, size):
        return "savedmodel"
    if _is_tf_fingerprint(head, size):
        return "tf-fingerprint"
    if _is_keras_metadata(head):
        return "keras-metadata"
    text = head.lstrip()
    while text.startswith(b"#"):
        text = text.partition(b"\n")[2].lstrip()
    for name in (b"saved_model_schema_version", b"meta_graphs"):
        if text.startswith(name) and text[len(name) :].lstrip()[:1] in (b":", b"{", b"<"):
            return "savedmodel-text"
    return None


def _is_saved_model(head: bytes, size: int) -> bool:
    """A ``SavedModel``: an optional schema version (field 1) and unknown fields (3 and
    up, which TensorFlow skips), then a ``MetaGraphDef`` (field 2) that fits in the file.

    ONNX's ``ModelProto`` can start ``08 xx 12`` too, but its field 2 is a short producer
    name followed by other fields: a meta graph opens with one of its own fields (1-7,
    all messages), or is well-formed as far as the head shows and is followed by the end
    of the file, another meta graph or the schema version.
    """
    at = 0
    while (tag := _field(head, at)) is not None:
        number, wire, start, end = tag
        if number == 2 and wire == 2:
            break
        if number in (1, 2) and wire != (0 if number == 1 else 2):
            return False
        at = end
    else:
        return False
    if end > size or start == end:
        return False
    if head[start : start + 1] in _META_GRAPH_FIELDS:
        return True
    inner = start
    while inner < min(end, len(head)):
        field = _field(head, inner)
        if field is None:
            return inner >= len(head)  # cut by the end of the head, not malformed
        inner = field[3]
    return end >= min(size, len(head)) or head[end : end + 1] in (b"\x08", b"\x12")


_META_GRAPH_FIELDS = frozenset(bytes([number << 3 | 2]) for number in range(1, 8))


def _field(data: bytes, at: int) -> tuple[int, int, int, int] | None:
    """The protobuf field at ``at``: (number, wire type, payload start, end), or None if
    the bytes there are no field. A length may run past ``data`` (a cut head)."""
    tag = _varint(data, at)
    if tag is None or tag[0] >> 3 == 0:
        return None
    wire, at = tag[0] & 7, tag[1]
    if wire in (1, 5):
        return tag[0] >> 3, wire, at, at + (8 if wire == 1 else 4)
    value = _varint(data, at)
    if wire not in (0, 2) or value is None:
        return None
    start = value[1]
    return tag[0] >> 3, wire, (start if wire == 2 else at), start + (value[0] if wire == 2 else 0)


def _is_tf_fingerprint(head: bytes, size: int) -> bool:
    """A whole ``FingerprintDef``: hashes 1-5 (uint64), version 6 and uuid 7 (messages)."""
    if size != len(head) or size > 4096 or head[:1] != b"\x08":
        return False
    at = 0
    while at < size:
        number, wire, value, end = head[at] >> 3, head[at] & 7, 0, at + 1
        if not ((1 <= number <= 5 and wire == 0) or (number in (6, 7) and wire == 2)):
            return False
        for shift in range(0, 70, 7):  # a varint of up to 10 bytes
            if end >= size:
                return False
            value |= (head[end] & 0x7F) << shift
            end += 1
            if not head[end - 1] & 0x80:
                break
        else:
            return False
        at = end + (value if wire == 2 else 0)
    return at == size


def _is_keras_metadata(head: bytes) -> bool:
    """tf_keras's ``SavedMetadata``: a node (1) of node_id 2, node_path 3, then an
    identifier (4) such as ``_tf_keras_sequential``."""
    outer = _varint(head, 1) if head[:1] == b"\x0a" else None
    at = outer[1] if outer is not None else len(head)
    while at < len(head) and head[at] in (0x10, 0x1A, 0x22):
        value = _varint(head, at + 1)
        if value is None:
            return False
        if head[at] == 0x22:
            return head[value[1] : value[1] + value[0]].startswith(b"_tf_keras_")
        at = value[1] + (value[0] if head[at] == 0x1A else 0)
    return False
