"""A bounded, strict JSON reader for request bodies from untrusted callers.

:func:`load_strict_json` measures the nesting depth of a document before parsing it, with
a few linear passes in C (regular expressions and numpy), so that a megabyte of ``[[[[``
is refused at once and never reaches a recursive parser. It then parses with the standard
library, refusing duplicate object keys, ``NaN``/``Infinity`` literals and numbers that
overflow to infinity. Checking each float in Python costs more than parsing it, so that check
runs only when a linear scan of the bytes finds a literal that could overflow.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from bastion.errors import InputError

__all__ = ["load_strict_json", "may_overflow", "nesting_depth"]

#: A backslash and the character it escapes (JSON escapes are always two characters long,
#: or six for \\uXXXX, whose four hex digits hold no quote, bracket or backslash).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
#: A string once its escapes are gone: nothing but a closing quote can end it.
_STRING = re.compile(rb'"[^"]*"')
_OPENERS = frozenset(b"[{")
#: Digits to "0", "E" and "+" to "e", so that one substring test finds each number shape.
_NUMBER_SHAPES = bytes.maketrans(b"123456789E+", b"000000000ee")
_LONG_DIGITS = b"0" * 200


def nesting_depth(document: bytes) -> int:
    """The deepest nesting of arrays and objects in ``document`` (0 for a bare scalar).

    Brackets inside strings do not count. Runs in linear time whatever the input; a
    string without its closing quote raises InputError.
    """
    stripped = _STRING.sub(b"", _ESCAPE.sub(b"", document))
    if b'"' in stripped:
        raise InputError("malformed JSON: a string is not terminated; send valid JSON")
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int64)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    if not steps.size:
        return 0
    return max(0, int(np.cumsum(steps).max()))


def _refuse_constant(name: str) -> float:
    raise InputError(f"malformed JSON: {name} is not a JSON number; send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError("malformed JSON: a number overflows to infinity; send finite numbers only")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    document = {}  # find the first repeated key for the message
    for key, value in pairs:
        if key in document:
            raise InputError(
                f"malformed JSON: key {key[:64]!r} appears twice in one object; send each key once"
            )
        document[key] = value
    return document


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
_FINITE_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_refuse_constant, parse_float=_finite_float
)


def may_overflow(document: bytes) -> bool:
    """Whether a number in ``document`` could be a float too large to represent.

    A literal with an integer part of n digits and exponent e is below 10**(n + e), finite
    unless n + e > 308: so it needs an exponent of 100 or more (three digits after ``e`` or
    ``e+``) or an integer part of 210 digits or more (the scan looks for 200 in a row). Text
    inside strings may match too: a false alarm only costs the slower, checked parse.
    """
    shapes = document.translate(_NUMBER_SHAPES)
    return b"e000" in shapes or _LONG_DIGITS in shapes


def load_strict_json(document: bytes, *, max_depth: int) -> object:
    """Parse UTF-8 JSON ``document``, refusing anything ambiguous or too deep.

    Raises InputError for invalid UTF-8, invalid JSON, nesting deeper than ``max_depth``,
    duplicate keys, ``NaN``/``Infinity`` and numbers too large to represent.
    """
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"malformed JSON: not valid UTF-8 at byte {exc.start}; send UTF-8 JSON"
        ) from exc
    # Fewer brackets than the limit cannot nest past it (most requests): skip the scan.
    brackets = document.count(b"[") + document.count(b"{")
    if brackets > max_depth and nesting_depth(document) > max_depth:
        raise InputError(
            f"JSON nests more than {max_depth} levels deep; flatten the request "
            "(send tensor data as a flat list)"
        )
    decoder = _FINITE_DECODER if may_overflow(document) else _DECODER
    try:
        if text.startswith("\ufeff"):  # as json.loads, which the shared decoders bypass
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; send valid JSON"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # int() refuses numbers of more than sys.get_int_max_str_digits() digits.
        raise InputError(
            "malformed JSON: a value cannot be read (a number too long?); send valid JSON"
        ) from exc
