"""One small BSE1 stream of six 16-byte segments, for the tests that damage it."""

from __future__ import annotations

import os

from bastion.crypto import SegmentEncryptor
from bastion.crypto._segments import MIN_SEGMENT_SIZE, TAG_SIZE

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AD = b"artifact-0001"
SEG = MIN_SEGMENT_SIZE
STEP = SEG + TAG_SIZE
PLAIN = os.urandom(5 * SEG + 7)  # six segments, the last one short
COUNT = 6


def encrypt(data: bytes = PLAIN, *, key: bytes = KEY, ad: bytes = AD) -> bytes:
    encryptor = SegmentEncryptor(key, associated_data=ad, segment_size=SEG)
    return encryptor.header() + encryptor.update(data) + encryptor.finalize()
