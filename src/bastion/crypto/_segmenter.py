"""Cutting a stream fed in pieces of any size into fixed-size segments, for ``BSE1``.

Both directions of :mod:`bastion.crypto._segments` use it: the encryptor cuts
plaintext into segments to seal, the decryptor cuts ciphertext into segments to open.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.errors import IntegrityError

__all__ = ["Segmenter"]

Bytes = bytes | bytearray | memoryview


class Segmenter:
    """Cuts a stream fed in pieces into segments of ``size`` bytes, in one reused buffer.

    The newest segment is held back until more data shows that it is not the last;
    the caller handles what :meth:`rest` leaves at the end. When one piece completes
    several segments, their results are written into a reused scratch buffer and
    copied out once, rather than joined from one new object per segment: repeated
    large allocations and frees would make the allocator return memory to the
    system and fault it back in on every call, which costs more than the cipher.
    If a segment after the first of such a batch fails, the batch's good segments
    are returned and the error is kept in :attr:`deferred` for the caller to raise.
    """

    __slots__ = ("_buffer", "_filled", "_scratch", "deferred")

    def __init__(self, size: int) -> None:
        self._buffer = bytearray(size)
        self._filled = 0
        self._scratch = bytearray()
        self.deferred: IntegrityError | None = None

    def feed(
        self,
        view: memoryview,
        one: Callable[[Bytes], bytes],
        into: Callable[[Bytes, memoryview], None],
        growth: int,
    ) -> bytes:
        """The results of ``one`` (or ``into``) on each segment known not to be the last.

        A segment of ``size`` bytes gives ``size + growth`` bytes of output.
        """
        buffer, filled, size = self._buffer, self._filled, len(self._buffer)
        total = filled + len(view)
        count = (total - 1) // size if total > size else 0
        if not count:
            buffer[filled:total] = view
            self._filled = total
            return b""
        segments: list[Bytes] = []
        if filled:
            buffer[filled:size] = view[: size - filled]
            view = view[size - filled :]
            segments.append(buffer)
        direct = count - len(segments)
        segments.extend(view[index * size : (index + 1) * size] for index in range(direct))
        rest = view[direct * size :]
        self._filled = 0
        if count == 1:
            result = one(segments[0])
        else:
            result = self._through_scratch(segments, into, size + growth)
        buffer[: len(rest)] = rest
        self._filled = len(rest)
        return result

    def _through_scratch(
        self, segments: list[Bytes], into: Callable[[Bytes, memoryview], None], step: int
    ) -> bytes:
        needed = len(segments) * step
        if len(self._scratch) < needed:
            self._scratch = bytearray(needed)
        with memoryview(self._scratch) as scratch:
            for index, segment in enumerate(segments):
                try:
                    into(segment, scratch[index * step : (index + 1) * step])
                except IntegrityError as exc:
                    if not index:
                        raise
                    # Release the segments that did authenticate; the error comes next call.
                    self.deferred = exc
                    return bytes(scratch[: index * step])
            return bytes(scratch[:needed])

    def rest(self) -> memoryview:
        """What is held back: the last segment, once the stream has ended."""
        return memoryview(self._buffer)[: self._filled]
