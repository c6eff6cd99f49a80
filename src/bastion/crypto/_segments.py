"""Streaming authenticated encryption of model files: the segmented format ``BSE1``.

A stream is a 64-byte header followed by segments. Every segment but the last
holds exactly ``segment_size`` bytes of plaintext; the last holds 0 to
``segment_size`` bytes (0 only when the whole stream is empty). Each segment is
AES-256-GCM with a 16-byte tag, so a ciphertext segment is ``segment_size + 16``
bytes. The design follows Tink's AES-GCM-HKDF streaming AEAD; unlike it, every
segment (the first included) has the same size, and the header commits to the key.

Header, version 1 (all integers big-endian)::

    offset size  field
    0      4     magic b"BSE1"
    4      1     version, 1
    5      4     segment_size, plaintext bytes per segment (16 B to 16 MiB)
    9      16    salt, random
    25     7     nonce prefix, random
    32     32    commitment

``HKDF-SHA256(ikm=data key, salt=salt, info=INFO || header[0:32] || associated_data)``
gives 64 bytes: the stream's AES-256 subkey, then the commitment. The decryptor
recomputes the commitment and compares it in constant time before it opens any
segment, so a wrong data key, wrong associated data (the hub passes the artifact
id) or any change to the header is caught at the header. Segment ``i`` is sealed
with nonce ``prefix || i (4 bytes) || last (1 byte: 1 for the last segment, else 0)``
and the whole 64-byte header as GCM associated data; the associated data reaches
every segment through the subkey. Reordered, duplicated or dropped segments fail
(wrong counter in the nonce), truncation at a segment boundary fails (the last
flag), a cut inside a segment or bytes after the end fail (a short or misplaced
last segment), and a flipped bit anywhere fails its tag or the commitment.

Plaintext is released one segment at a time, and only after its tag verified.
A stream that failed once stays failed: later calls raise again.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Iterator
from functools import partial
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.crypto._segmenter import Bytes, Segmenter
from bastion.errors import IntegrityError, UsageError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "TAG_SIZE",
    "SegmentDecryptor",
    "SegmentEncryptor",
    "ciphertext_size",
    "encrypt_stream",
    "iter_decrypt",
    "new_data_key",
    "plaintext_size",
]

MAGIC: Final = b"BSE1"
VERSION: Final = 1
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
DEFAULT_SEGMENT_SIZE: Final = 1 << 20
MIN_SEGMENT_SIZE: Final = 16
MAX_SEGMENT_SIZE: Final = 16 << 20
MAX_SEGMENTS: Final = 1 << 32
_PREFIX: Final = struct.Struct(">4sBI16s7s")
_NONCE: Final = struct.Struct(">7sIB")
_COMMITMENT_SIZE: Final = 32
HEADER_SIZE: Final = _PREFIX.size + _COMMITMENT_SIZE
_INFO: Final = b"bastion BSE1 v1 segment subkey and commitment\x00"


def new_data_key() -> bytes:
    """A fresh random 32-byte data key, for one artifact."""
    return os.urandom(KEY_SIZE)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise UsageError(f"a data key must be {KEY_SIZE} bytes; make one with new_data_key()")


def _check_associated_data(associated_data: bytes) -> bytes:
    if not isinstance(associated_data, bytes):
        raise UsageError("associated_data must be bytes (the hub passes the artifact id)")
    return associated_data


def _check_segment_size(segment_size: int) -> None:
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise UsageError(
            f"segment_size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes, "
            f"not {segment_size}"
        )


def _derive(key: bytes, prefix: bytes, salt: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE + _COMMITMENT_SIZE,
        salt=salt,
        info=_INFO + prefix + associated_data,
    ).derive(key)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


class _Segments:
    """The keyed state of one stream: seals or opens its segments, strictly in order."""

    __slots__ = ("_aead", "_counter", "_prefix", "header", "segment_size")

    def __init__(self, subkey: bytes, header: bytes, prefix: bytes, segment_size: int) -> None:
        self._aead = AESGCM(subkey)
        self._prefix = prefix
        self._counter = 0
        self.header = header
        self.segment_size = segment_size

    def _next_nonce(self, last: bool) -> bytes | None:
        counter = self._counter
        if counter >= MAX_SEGMENTS:
            return None
        self._counter = counter + 1
        return _NONCE.pack(self._prefix, counter, last)

    def _sealing_nonce(self, last: bool) -> bytes:
        nonce = self._next_nonce(last)
        if nonce is None:
            raise UsageError(
                f"a stream holds at most {MAX_SEGMENTS} segments; use a larger segment_size"
            )
        return nonce

    def seal(self, data: Bytes, *, last: bool) -> bytes:
        return self._aead.encrypt(self._sealing_nonce(last), data, self.header)

    def seal_into(self, data: Bytes, out: memoryview, *, last: bool) -> None:
        """Seal into ``out``, which is exactly ``len(data) + TAG_SIZE`` bytes."""
        self._aead.encrypt_into(self._sealing_nonce(last), data, self.header, out)

    def _opening_nonce(self, data: Bytes, last: bool) -> bytes:
        if len(data) < TAG_SIZE:
            raise IntegrityError(f"segment {self._counter} is truncated: the stream was cut short")
        nonce = self._next_nonce(last)
        if nonce is None:
            raise IntegrityError("the stream has more segments than the format allows")
        return nonce

    def open(self, data: Bytes, *, last: bool) -> bytes:
        index = self._counter
        nonce = self._opening_nonce(data, last)
        try:
            return self._aead.decrypt(nonce, data, self.header)
        except InvalidTag:
            raise _tampered(index, last) from None

    def open_into(self, data: Bytes, out: memoryview, *, last: bool) -> None:
        """Open into ``out``, exactly ``len(data) - TAG_SIZE`` bytes; on failure the caller
        must not release ``out``, which may then hold unauthenticated plaintext."""
        index = self._counter
        nonce = self._opening_nonce(data, last)
        try:
            self._aead.decrypt_into(nonce, data, self.header, out)
        except InvalidTag:
            raise _tampered(index, last) from None

    def open_at(self, index: int, data: Bytes, *, last: bool) -> bytes:
        """Open segment ``index`` out of order, for random access; the counter is untouched.

        The caller must know which segment is the last: the flag is part of the nonce.
        """
        if not 0 <= index < MAX_SEGMENTS:
            raise IntegrityError("the stream has more segments than the format allows")
        try:
            return self._aead.decrypt(_NONCE.pack(self._prefix, index, last), data, self.header)
        except InvalidTag:
            raise _tampered(index, last) from None


def _tampered(index: int, last: bool) -> IntegrityError:
    where = "the last segment" if last else f"segment {index}"
    return IntegrityError(
        f"{where} failed authentication: the stored data was modified, reordered, "
        "truncated or extended; restore the artifact from a good copy"
    )


def _new_stream(key: bytes, associated_data: bytes, segment_size: int) -> _Segments:
    _check_key(key)
    _check_segment_size(segment_size)
    salt, nonce_prefix = os.urandom(16), os.urandom(_NONCE.size - 5)
    prefix = _PREFIX.pack(MAGIC, VERSION, segment_size, salt, nonce_prefix)
    subkey, commitment = _derive(key, prefix, salt, _check_associated_data(associated_data))
    return _Segments(subkey, prefix + commitment, nonce_prefix, segment_size)


def _open_stream(key: bytes, associated_data: bytes, header: bytes) -> _Segments:
    magic, version, segment_size, salt, nonce_prefix = _PREFIX.unpack_from(header)
    if magic != MAGIC:
        raise IntegrityError("not a Bastion encrypted stream: the header's magic is wrong")
    if version != VERSION:
        raise IntegrityError(
            f"encrypted stream format version {version} is not supported (only {VERSION}); "
            "upgrade Bastion or restore the artifact"
        )
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise IntegrityError(f"the encrypted stream's segment size {segment_size} is invalid")
    prefix = header[: _PREFIX.size]
    subkey, commitment = _derive(key, prefix, salt, associated_data)
    if not hmac.compare_digest(commitment, header[_PREFIX.size :]):
        raise IntegrityError(
            "the encrypted stream's header does not authenticate: wrong data key, wrong "
            "associated data (a blob of another artifact), or a tampered header"
        )
    return _Segments(subkey, header, nonce_prefix, segment_size)


class SegmentEncryptor:
    """Encrypts one stream: write :meth:`header`, then every :meth:`update`, then :meth:`finalize`.

    ``update`` returns the ciphertext of the segments completed so far. It holds
    back up to one segment of plaintext, because only ``finalize`` knows which
    segment is the last.
    """

    __slots__ = ("_done", "_segmenter", "_stream")

    def __init__(
        self,
        key: bytes,
        *,
        associated_data: bytes = b"",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self._stream = _new_stream(key, associated_data, segment_size)
        self._segmenter = Segmenter(segment_size)
        self._done = False

    def __repr__(self) -> str:
        return f"SegmentEncryptor(segment_size={self._stream.segment_size})"

    def header(self) -> bytes:
        """The stream's header, to be written before any ciphertext."""
        return self._stream.header

    def update(self, data: Bytes) -> bytes:
        """Ciphertext of every segment that ``data`` completes (maybe none)."""
        if self._done:
            raise UsageError("this encryptor was finalized; start a new one for a new stream")
        try:
            stream = self._stream
            return self._segmenter.feed(
                memoryview(data).cast("B"),
                partial(stream.seal, last=False),
                partial(stream.seal_into, last=False),
                TAG_SIZE,
            )
        except UsageError:
            self._done = True
            raise

    def finalize(self) -> bytes:
        """Ciphertext of the last segment; the encryptor cannot be used after this."""
        if self._done:
            raise UsageError("this encryptor was finalized already")
        self._done = True
        return self._stream.seal(self._segmenter.rest(), last=True)


class SegmentDecryptor:
    """Decrypts and authenticates one stream fed in pieces of any size.

    ``update`` returns the plaintext of segments that have authenticated; it holds
    back the newest segment until more data shows that it is not the last.
    ``finalize`` returns the last segment's plaintext (so, unlike the outline it
    was built from, it returns bytes: nothing else can release that segment) and
    raises :class:`IntegrityError` on a truncated stream or trailing bytes.
    """

    __slots__ = ("_ad", "_failed", "_finished", "_header", "_key", "_segmenter", "_stream")

    def __init__(self, key: bytes, *, associated_data: bytes = b"") -> None:
        _check_key(key)
        self._key = key
        self._ad = _check_associated_data(associated_data)
        self._header = bytearray()
        self._stream: _Segments | None = None
        self._segmenter: Segmenter | None = None
        self._failed = False
        self._finished = False

    def __repr__(self) -> str:
        return f"SegmentDecryptor(header_read={self._stream is not None})"

    def _check_usable(self) -> None:
        if self._failed:
            segmenter = self._segmenter
            if segmenter is not None and segmenter.deferred is not None:
                error, segmenter.deferred = segmenter.deferred, None
                raise error
            raise IntegrityError("this stream already failed authentication; discard it")
        if self._finished:
            raise UsageError("this decryptor was finalized; start a new one for a new stream")

    def update(self, data: Bytes) -> bytes:
        """Plaintext of the segments ``data`` completes that authenticated (maybe none).

        When a segment fails after others in the same call authenticated, those are
        returned and the error is raised by the next call (``update`` or ``finalize``).
        """
        self._check_usable()
        try:
            released = self._update(memoryview(data).cast("B"))
        except IntegrityError:
            self._failed = True
            raise
        if self._segmenter is not None and self._segmenter.deferred is not None:
            self._failed = True
        return released

    def _update(self, view: memoryview) -> bytes:
        if self._stream is None or self._segmenter is None:
            take = HEADER_SIZE - len(self._header)
            self._header += view[:take]
            view = view[take:]
            if len(self._header) < HEADER_SIZE:
                return b""
            self._stream = _open_stream(self._key, self._ad, bytes(self._header))
            self._segmenter = Segmenter(self._stream.segment_size + TAG_SIZE)
        stream = self._stream
        return self._segmenter.feed(
            view, partial(stream.open, last=False), partial(stream.open_into, last=False), -TAG_SIZE
        )

    def finalize(self) -> bytes:
        """The last segment's plaintext, once it authenticated as the stream's end."""
        self._check_usable()
        try:
            if self._stream is None or self._segmenter is None:
                raise IntegrityError("the encrypted stream is truncated inside its header")
            last = self._stream.open(self._segmenter.rest(), last=True)
        except IntegrityError:
            self._failed = True
            raise
        self._finished = True
        return last


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The exact size of the stream that encrypts ``plaintext_size`` bytes."""
    _check_segment_size(segment_size)
    if plaintext_size < 0:
        raise UsageError("a plaintext size cannot be negative")
    segments = max(1, -(-plaintext_size // segment_size))
    return HEADER_SIZE + plaintext_size + segments * TAG_SIZE


def plaintext_size(ciphertext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The plaintext size of a ``ciphertext_size``-byte stream; an impossible size is an error."""
    _check_segment_size(segment_size)
    body = ciphertext_size - HEADER_SIZE
    full, rest = divmod(body, segment_size + TAG_SIZE)
    if body < TAG_SIZE or 0 < rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise IntegrityError(
            f"{ciphertext_size} bytes cannot be an encrypted stream with {segment_size}-byte "
            "segments: it was truncated or extended"
        )
    return full * segment_size + max(0, rest - TAG_SIZE)


def _read_exact(src: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of ``src``."""
    data = src.read(size)
    if len(data) == size or not data:
        return data
    chunks = [data]
    got = len(data)
    while got < size and (chunk := src.read(size - got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    associated_data: bytes = b"",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> int:
    """Encrypt everything ``src`` holds into ``dst``; returns the bytes written.

    Reads one segment ahead, so it knows which segment is the last, and seals
    each segment into one reused buffer.
    """
    stream = _new_stream(key, associated_data, segment_size)
    dst.write(stream.header)
    written = HEADER_SIZE
    out = memoryview(bytearray(segment_size + TAG_SIZE))
    current = _read_exact(src, segment_size)
    while True:
        following = _read_exact(src, segment_size) if len(current) == segment_size else b""
        sealed = out[: len(current) + TAG_SIZE]
        stream.seal_into(current, sealed, last=not following)
        dst.write(sealed)
        written += len(sealed)
        if not following:
            return written
        current = following


def iter_decrypt(
    src: BinaryIO,
    key: bytes,
    *,
    associated_data: bytes = b"",
    read_size: int = DEFAULT_SEGMENT_SIZE + TAG_SIZE,
) -> Iterator[bytes]:
    """Yield the plaintext of ``src`` one authenticated segment at a time.

    ``read_size`` is rounded to whole ciphertext segments (at least one, at most
    256 MiB); the generator holds two reads in memory. A damaged stream raises
    :class:`IntegrityError` after yielding only the segments before the damage.
    Arguments are checked at the call; ``src`` is read as the iterator is consumed.
    """
    _check_key(key)
    _check_associated_data(associated_data)
    if read_size < 1:
        raise UsageError("read_size must be a positive number of bytes")
    return _decrypt_segments(src, key, associated_data, read_size)


def _decrypt_segments(
    src: BinaryIO, key: bytes, associated_data: bytes, read_size: int
) -> Iterator[bytes]:
    header = _read_exact(src, HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise IntegrityError("the encrypted stream is truncated inside its header")
    stream = _open_stream(key, associated_data, header)
    size = stream.segment_size + TAG_SIZE
    per_read = max(1, min(read_size, 256 << 20) // size) * size
    current = _read_exact(src, per_read)
    while True:
        following = _read_exact(src, per_read) if len(current) == per_read else b""
        view = memoryview(current)
        # Without a following read, the last piece of this one (maybe a full one) is the last.
        end = len(view) if following else size * (max(0, len(view) - 1) // size)
        for offset in range(0, end, size):
            yield stream.open(view[offset : offset + size], last=False)
        if not following:
            yield stream.open(view[end:], last=True)
            return
        current = following
