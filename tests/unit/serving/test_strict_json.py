"""The strict JSON reader: its quick scan for overflowing floats, and what it refuses."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import InputError
from bastion.serving._strict_json import load_strict_json, may_overflow

OVERFLOWS = "malformed JSON: a number overflows to infinity; send finite numbers only"


def reference(text: str) -> object:
    """What the reader returned before the scan: every float checked in Python."""

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise InputError(OVERFLOWS)
        return value

    return json.loads(text, parse_float=finite)


def outcome(parse: Callable[[], object]) -> tuple[str, object]:
    """What was read, or the message of the refusal (int() refusing a long number: "long")."""
    try:
        return ("read", parse())
    except InputError as exc:
        return ("refused", "long" if "cannot be read" in exc.message else exc.message)
    except ValueError:
        return ("refused", "long")


@pytest.mark.parametrize(
    "literal",
    ["1e309", "-1E+400", "1e+0309", "2e308", "1.8e308", "9" * 250 + "e99", "1" * 400 + ".5",
     "0.5e99999", "2" * 309 + "e0"],
)  # fmt: skip
def test_floats_that_overflow_are_found_by_the_scan_and_refused(literal: str) -> None:
    assert may_overflow(literal.encode())
    with pytest.raises(InputError) as caught:
        load_strict_json(f"[{literal}]".encode(), max_depth=8)
    assert caught.value.message == OVERFLOWS


@pytest.mark.parametrize(
    "literal",
    ["1.7976931348623157e308", "1e-999", "-0.0", "1e99", "9" * 199 + ".9", "3.14", "1E+99"],
)
def test_finite_floats_parse_on_either_path(literal: str) -> None:
    document = f"[{literal}]".encode()
    assert load_strict_json(document, max_depth=8) == [float(literal)]


def test_a_false_alarm_only_takes_the_checked_path() -> None:
    document = b'{"id": "e1234", "x": [0.5, 1e-300]}'  # "e1234" looks like an exponent
    assert may_overflow(document)
    assert load_strict_json(document, max_depth=8) == {"id": "e1234", "x": [0.5, 1e-300]}
    assert not may_overflow(b'{"id": "e12", "x": [0.5, 1e-300, 1e99]}')


@settings(max_examples=300, deadline=None)
@given(
    sign=st.sampled_from(["", "-"]),
    whole=st.integers(0, 399).flatmap(
        lambda n: st.from_regex(f"[1-9][0-9]{{{n}}}", fullmatch=True)
    ),
    fraction=st.from_regex(r"(\.[0-9]{1,30})?", fullmatch=True),
    exponent=st.one_of(
        st.just(""),
        st.builds("e{}{}{}".format, st.sampled_from(["", "+", "-"]),
                  st.sampled_from(["", "0", "00"]), st.integers(0, 400)),
    ),
)  # fmt: skip
def test_the_scan_never_misses_a_float_that_overflows(
    sign: str, whole: str, fraction: str, exponent: str
) -> None:
    literal = sign + whole + fraction + exponent
    if fraction or exponent:  # a float literal, not an integer
        assert math.isfinite(float(literal)) or may_overflow(literal.encode())
    document = f'{{"v": [{literal}, 1.5]}}'
    assert outcome(lambda: load_strict_json(document.encode(), max_depth=8)) == outcome(
        lambda: reference(document)
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"b": 1, "a": 2, "a": 3, "b": 4}', "key 'a' appears twice in one object"),
        (b'[{"k": 2, "k": 3}, 1e400]', "key 'k' appears twice"),  # the first fault found
        (b'[{"k": 2, "j": 1e400, "k": 3}]', "overflows to infinity"),
        (b'[1.5, NaN]', "NaN is not a JSON number"),
        (b'[1e400, NaN]', "overflows to infinity"),
        ("\ufeff[1]".encode(), "Unexpected UTF-8 BOM (decode using utf-8-sig) at line 1 column 1"),
        (b"[1] 2", "Extra data at line 1 column 5"),
    ],
)  # fmt: skip
def test_what_the_reader_refuses_and_why(document: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_strict_json(document, max_depth=8)
    assert message in caught.value.message


def test_objects_without_repeated_keys_keep_their_order() -> None:
    document = load_strict_json(b'{"z": 1, "a": {"y": 2, "b": 3}}', max_depth=8)
    assert isinstance(document, dict)
    assert list(document) == ["z", "a"]
    assert list(document["a"]) == ["y", "b"]
