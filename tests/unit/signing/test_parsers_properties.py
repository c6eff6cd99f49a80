"""Property-based tests for every parser and format reader of ``bastion.signing``.

The project rule: malformed input gives a clear error, a subclass of
:class:`bastion.errors.BastionError` (usually ``BundleFormatError``,
``KeyFormatError``, ``PassphraseError``, ``TrustPolicyError``,
``CertificateFormatError`` or ``InputError``), never another exception type, a
hang, or unbounded memory. Each reader is fuzzed with arbitrary input, with
arbitrary values of the right shape, and with valid documents mutated field by
field; each writer is checked to round-trip through its reader.

Defects these properties found are pinned by tests with the failing input as
an explicit ``@example`` (non-ASCII shard offsets, NUL in policy paths, early
years, astral names in policies, malformed certificate versions and serials,
foreign SQLite files), and the generic fuzzers include those inputs too.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import sqlite3
import string
import tempfile
import tomllib
import tracemalloc
import types
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from cryptography.x509.oid import NameOID
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from bastion.errors import (
    BastionError,
    BundleFormatError,
    CertificateFormatError,
    InputError,
    KeyFormatError,
    PassphraseError,
    PathNotFoundError,
    TrustPolicyError,
    VerificationError,
)
from bastion.signing import (
    KEY_TYPES,
    DigestCache,
    PrivateKey,
    PublicKey,
    TrustedAuthority,
    TrustedKey,
    TrustPolicy,
    generate_key,
)
from bastion.signing._bundle import (
    BUNDLE_MEDIA_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Bundle,
    DsseSignature,
    Statement,
)
from bastion.signing._certs import load_der_certificate, load_pem_certificates
from bastion.signing._manifest import (
    DEFAULT_SHARD_SIZE,
    Resource,
    Serialization,
    file_of,
    order_key,
    root_digest,
)
from bastion.signing._trust import ALGORITHMS

# Parsing is fast, but the first call of a crypto or SQLite path can be slow on
# a loaded machine; behaviour is asserted, never timing.
_FEW = settings(max_examples=40, deadline=None)
_SOME = settings(max_examples=100, deadline=None)
_MANY = settings(max_examples=250, deadline=None)

_T = TypeVar("_T")
_QUOTED_TAIL = re.compile(r"['\"({\[].*")
_DELETE = object()  # a mutation that removes a field instead of setting it


def _outcome(
    allowed: type[BastionError] | tuple[type[BastionError], ...],
    call: Callable[[], _T],
) -> _T | BastionError:
    """What ``call`` returns, or the error it raises if that error is ``allowed``.

    Any other exception propagates: that is the crash the property looks for.
    """
    try:
        result = call()
    except allowed as exc:
        # Group statistics by the message up to its first quoted value.
        event("refused: " + _QUOTED_TAIL.sub("...", exc.message)[:60])
        return exc
    event("accepted")
    return result


def _non_ascii_digit(text: str) -> bool:
    return any(c.isdigit() and c not in string.digits for c in text)


# Text for generic fuzzing: anything, non-ASCII digits and lone surrogates included.
_TEXT = st.text(st.characters(exclude_categories=()), max_size=24)
_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | _TEXT
)


def _json_values(keys: st.SearchStrategy[str] = _TEXT) -> st.SearchStrategy[Any]:
    return st.recursive(
        _JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


def _deep_nesting() -> list[bytes]:
    depth = 100_000
    return [
        b"[" * depth + b"]" * depth,
        b'{"a":' * depth + b"1" + b"}" * depth,
        b"[" * depth,
        b'{"mediaType":' + b"[" * depth + b"]" * depth + b"}",
    ]


# --- mutation of JSON documents -----------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``node`` (dict keys and list indices)."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    out = []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _apply(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of ``doc`` with the value at ``path`` replaced or deleted.

    ``value`` may be a callable, given the (copied) document, or ``_DELETE``.
    """
    doc = copy.deepcopy(doc)
    if callable(value):
        value = value(doc)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


_BAD_BASE64 = st.text(
    alphabet=string.ascii_letters + string.digits + "+/=-_ \n!\u00e9", max_size=24
)


@st.composite
def _mutated(draw: st.DrawFn, doc: Any, values: st.SearchStrategy[Any]) -> Any:
    """``doc`` with one to three fields deleted or replaced by ``values``."""
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        doc = _apply(doc, path, draw(st.just(_DELETE) | values))
    return doc


# ==============================================================================
# 1. Bundle.from_json
# ==============================================================================


@st.composite
def _bundles(draw: st.DrawFn) -> Bundle:
    payload = draw(st.binary(max_size=200))
    signatures = tuple(
        draw(
            st.lists(
                st.builds(DsseSignature, st.text(max_size=20), st.binary(max_size=80)),
                min_size=1,
                max_size=16,
            )
        )
    )
    if draw(st.booleans()):
        certificates = tuple(draw(st.lists(st.binary(max_size=64), min_size=1, max_size=10)))
        return Bundle(payload, signatures, None, certificates)
    # An empty hint is written as "" and read back as None: generate None instead.
    hint = draw(st.none() | st.text(min_size=1, max_size=64))
    return Bundle(payload, signatures, hint)


_KEY_BUNDLE = Bundle(b'{"_type": "x"}', (DsseSignature("hint", b"\x01" * 64),), "hint")
_CERT_BUNDLE = Bundle(b"{}", (DsseSignature("", b"\x02" * 64),), None, (b"\x30\x03", b"\x30\x04"))
_KEY_DOC = json.loads(_KEY_BUNDLE.to_json())
_CERT_DOC = json.loads(_CERT_BUNDLE.to_json())
_BUNDLE_KEYS = st.sampled_from(
    [
        "mediaType",
        "verificationMaterial",
        "publicKey",
        "hint",
        "x509CertificateChain",
        "certificates",
        "rawBytes",
        "certificate",
        "dsseEnvelope",
        "payload",
        "payloadType",
        "signatures",
        "sig",
        "keyid",
    ]
)


def _read_bundle(data: bytes) -> Bundle | None:
    """Bundle.from_json, letting only BundleFormatError (with a message) through."""
    bundle = _outcome(BundleFormatError, lambda: Bundle.from_json(data))
    if isinstance(bundle, BundleFormatError):
        assert bundle.message
        return None
    assert isinstance(bundle, Bundle)
    assert 1 <= len(bundle.signatures) <= 16
    assert len(bundle.certificates) <= 10
    assert bundle.payload_type == PAYLOAD_TYPE
    return bundle


@_MANY
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b"\x00\x00\x00{")
@example(b"1" * 5000)
@example(b"NaN")
def test_bundle_arbitrary_bytes(data: bytes) -> None:
    _read_bundle(data)


@_MANY
@given(_json_values(_TEXT | _BUNDLE_KEYS))
def test_bundle_arbitrary_json(value: Any) -> None:
    _read_bundle(json.dumps(value).encode())


@_MANY
@given(
    st.sampled_from([_KEY_DOC, _CERT_DOC]).flatmap(
        lambda doc: _mutated(
            doc,
            _json_values(_TEXT | _BUNDLE_KEYS)
            | _BAD_BASE64
            | st.sampled_from(["", BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, "QUFB", [], {}]),
        )
    )
)
def test_bundle_mutated_fields(doc: Any) -> None:
    _read_bundle(json.dumps(doc).encode())


@_MANY
@given(_bundles())
def test_bundle_round_trip(bundle: Bundle) -> None:
    assert Bundle.from_json(bundle.to_json()) == bundle


@_SOME
@given(_bundles(), st.data())
def test_bundle_truncated(bundle: Bundle, data: st.DataObject) -> None:
    encoded = bundle.to_json()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Bundle.from_json(encoded[:cut])


@_MANY
@given(_BAD_BASE64, st.sampled_from(["payload", "sig", "rawBytes"]))
@example("not base64!", "payload")
@example("QQ=", "sig")
@example("QQ==QQ==", "rawBytes")
@example("\u00e9", "payload")
@example("\ud800", "sig")
def test_bundle_bad_base64(value: str, where: str) -> None:
    path = {
        "payload": ("dsseEnvelope", "payload"),
        "sig": ("dsseEnvelope", "signatures", 0, "sig"),
        "rawBytes": ("verificationMaterial", "x509CertificateChain", "certificates", 0, "rawBytes"),
    }[where]
    doc = _apply(_CERT_DOC, path, value)
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        with pytest.raises(BundleFormatError, match="not valid base64"):
            Bundle.from_json(json.dumps(doc).encode())
    else:
        bundle = Bundle.from_json(json.dumps(doc).encode())
        assert decoded in (bundle.payload, bundle.signatures[0].sig, bundle.certificates[0])


@pytest.mark.parametrize("data", _deep_nesting(), ids=["lists", "objects", "unclosed", "field"])
def test_bundle_deep_nesting(data: bytes) -> None:
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Bundle.from_json(data)


_SIGS = ("dsseEnvelope", "signatures")
_CHAIN = ("verificationMaterial", "x509CertificateChain")


@pytest.mark.parametrize(
    ("doc", "path", "value", "message"),
    [
        (_KEY_DOC, (), [], "top level"),
        (_KEY_DOC, ("mediaType",), _DELETE, "not a Sigstore v0.3 bundle"),
        (_KEY_DOC, ("mediaType",), BUNDLE_MEDIA_TYPE.replace("0.3", "0.2"), "v0.3"),
        (_KEY_DOC, ("mediaType",), 3, "v0.3"),
        (_KEY_DOC, ("verificationMaterial",), _DELETE, "verificationMaterial"),
        (_KEY_DOC, ("verificationMaterial",), "x", "verificationMaterial"),
        (_KEY_DOC, ("verificationMaterial",), {}, "neither a public key nor a certificate"),
        (_KEY_DOC, ("verificationMaterial",), {"certificate": {}}, "keyless"),
        (_KEY_DOC, ("verificationMaterial", "publicKey"), "x", "publicKey"),
        (_KEY_DOC, ("verificationMaterial", "publicKey", "hint"), 5, "hint is not a string"),
        (_KEY_DOC, ("verificationMaterial", "publicKey", "hint"), ["h"], "hint is not a string"),
        (_CERT_DOC, _CHAIN, "x", "certificate chain"),
        (_CERT_DOC, (*_CHAIN, "certificates"), [], "empty or too long"),
        (_CERT_DOC, (*_CHAIN, "certificates"), _DELETE, "empty or too long"),
        (_CERT_DOC, (*_CHAIN, "certificates"), [{"rawBytes": "MAA="}] * 11, "too long"),
        (_CERT_DOC, (*_CHAIN, "certificates", 0), "MAA=", "certificate is missing or not"),
        (_CERT_DOC, (*_CHAIN, "certificates", 1, "rawBytes"), _DELETE, "certificate is missing"),
        (_CERT_DOC, (*_CHAIN, "certificates", 0, "rawBytes"), 5, "certificate is missing"),
        (_CERT_DOC, (*_CHAIN, "certificates", 0, "rawBytes"), "M A=", "not valid base64"),
        (_KEY_DOC, ("dsseEnvelope",), _DELETE, "dsseEnvelope"),
        (_KEY_DOC, ("dsseEnvelope",), [], "dsseEnvelope"),
        (_KEY_DOC, ("dsseEnvelope", "payload"), _DELETE, "payload is missing"),
        (_KEY_DOC, ("dsseEnvelope", "payload"), 5, "payload is missing"),
        (_KEY_DOC, ("dsseEnvelope", "payload"), "@@@@", "payload is not valid base64"),
        (_KEY_DOC, ("dsseEnvelope", "payloadType"), _DELETE, "payload type"),
        (_KEY_DOC, ("dsseEnvelope", "payloadType"), "text/plain", "not in-toto"),
        (_KEY_DOC, _SIGS, _DELETE, "between 1 and 16"),
        (_KEY_DOC, _SIGS, [], "between 1 and 16"),
        (_KEY_DOC, _SIGS, {"sig": "AA=="}, "between 1 and 16"),
        (_KEY_DOC, _SIGS, [{"sig": "AA==", "keyid": ""}] * 17, "between 1 and 16"),
        (_KEY_DOC, (*_SIGS, 0), "AA==", "signature entry"),
        (_KEY_DOC, (*_SIGS, 0, "sig"), _DELETE, "signature is missing"),
        (_KEY_DOC, (*_SIGS, 0, "sig"), None, "signature is missing"),
        (_KEY_DOC, (*_SIGS, 0, "sig"), "!!", "signature is not valid base64"),
        (_KEY_DOC, (*_SIGS, 0, "keyid"), 5, "keyid is not a string"),
        (_KEY_DOC, (*_SIGS, 0, "keyid"), None, "keyid is not a string"),
    ],
)
def test_bundle_field_errors(doc: Any, path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(BundleFormatError, match=message):
        Bundle.from_json(json.dumps(_apply(doc, path, value)).encode())


def test_bundle_lenient_fields() -> None:
    """What may be absent: a keyid, a hint (read as None)."""
    doc = _apply(_KEY_DOC, (*_SIGS, 0, "keyid"), _DELETE)
    assert Bundle.from_json(json.dumps(doc).encode()).signatures[0].keyid == ""
    for hint in (None, ""):
        doc = _apply(_KEY_DOC, ("verificationMaterial", "publicKey", "hint"), hint)
        assert Bundle.from_json(json.dumps(doc).encode()).key_hint is None


# ==============================================================================
# 2. Statement.from_payload
# ==============================================================================

_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
_FILES = Statement.build(
    "model",
    Serialization(),
    (
        Resource("a/b.bin", "sha256", b"\x01" * 32),
        Resource("c.txt", "sha256", b"\x02" * 32),
    ),
    _AT,
)
_SHARDS_SER = Serialization("shards", "sha256", 1000)
_SHARDS = Statement.build(
    "model",
    _SHARDS_SER,
    (
        Resource("w.bin:0:1000", _SHARDS_SER.algorithm, b"\x03" * 32),
        Resource("w.bin:1000:1500", _SHARDS_SER.algorithm, b"\x04" * 32),
    ),
    _AT,
)
_FILES_DOC = json.loads(_FILES.to_payload())
_SHARDS_DOC = json.loads(_SHARDS.to_payload())
_STATEMENT_KEYS = st.sampled_from(
    [
        "_type",
        "subject",
        "name",
        "digest",
        "sha256",
        "predicateType",
        "predicate",
        "serialization",
        "method",
        "hash_type",
        "shard_size",
        "allow_symlinks",
        "ignore_paths",
        "resources",
        "algorithm",
        "bastion",
        "version",
        "signed_at",
    ]
)


def _read_statement(payload: bytes) -> Statement | None:
    """Statement.from_payload, letting only BundleFormatError (with a message) through."""
    statement = _outcome(BundleFormatError, lambda: Statement.from_payload(payload))
    if isinstance(statement, BundleFormatError):
        assert statement.message
        return None
    assert statement.resources
    assert statement.digest == root_digest(statement.resources)
    return statement


# A path component: no "/", no NUL, not "." or "..".
_COMPONENT = st.text(st.characters(exclude_characters="/\x00"), min_size=1, max_size=8).filter(
    lambda c: c not in (".", "..")
)
_SAFE_NAME = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)
# Every representable signing time, early years included.
_SIGNED_AT = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0, tzinfo=UTC))


@st.composite
def _statements(draw: st.DrawFn) -> Statement:
    ignore = tuple(draw(st.lists(_SAFE_NAME, max_size=3)))
    allow = draw(st.booleans())
    digests = st.binary(min_size=32, max_size=32)
    if draw(st.booleans()):
        ser = Serialization(
            "files", draw(st.sampled_from(["sha256", "blake3"])), DEFAULT_SHARD_SIZE, allow, ignore
        )
        names = draw(st.lists(_SAFE_NAME, min_size=1, max_size=6, unique=True))
    else:
        size = draw(st.integers(1, 10**12))
        ser = Serialization("shards", "sha256", size, allow, ignore)
        names = []
        for path in draw(st.lists(_SAFE_NAME, min_size=1, max_size=3, unique=True)):
            length = draw(st.integers(0, 4 * size))
            starts = range(0, max(length, 1), size)
            names += [f"{path}:{s}:{min(s + size, length)}" for s in starts]
    resources = tuple(Resource(n, ser.algorithm, draw(digests)) for n in names)
    return Statement.build(draw(st.text(max_size=30)), ser, resources, draw(_SIGNED_AT))


@_SOME
@given(_statements())
def test_statement_round_trip(statement: Statement) -> None:
    parsed = Statement.from_payload(statement.to_payload())
    assert parsed.serialization == statement.serialization
    assert parsed.resources == statement.resources  # order kept
    assert parsed.signed_at == statement.signed_at
    assert parsed.root_digest == statement.root_digest
    assert parsed.subject_name == statement.subject_name
    assert parsed == statement


@_MANY
@given(st.binary(max_size=2048))
def test_statement_arbitrary_bytes(data: bytes) -> None:
    _read_statement(data)


@_MANY
@given(_json_values(_TEXT | _STATEMENT_KEYS))
def test_statement_arbitrary_json(value: Any) -> None:
    _read_statement(json.dumps(value).encode())


@pytest.mark.parametrize("data", _deep_nesting(), ids=["lists", "objects", "unclosed", "field"])
def test_statement_deep_nesting(data: bytes) -> None:
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Statement.from_payload(data)


@_MANY
@given(
    st.sampled_from([_FILES_DOC, _SHARDS_DOC]).flatmap(
        lambda doc: _mutated(
            doc,
            _json_values(_TEXT | _STATEMENT_KEYS)
            | st.sampled_from(
                [
                    "",
                    "..",
                    "/etc/passwd",
                    "a//b",
                    "a\x00b",
                    "w.bin:0:1000",
                    "w.bin:1000:0",
                    "sha256",
                    "blake3",
                    "shards",
                    "files",
                    "sha256-sharded-1000",
                    "00" * 32,
                    1000.0,
                    1000.5,
                    math.nan,
                    True,
                    STATEMENT_TYPE,
                    PREDICATE_TYPE,
                    "https://model_signing/Digests/v0.1",
                    "2025-01-02T03:04:05Z",
                ]
            ),
        )
    )
)
def test_statement_mutated_fields(doc: Any) -> None:
    _read_statement(json.dumps(doc).encode())


_RES = ("predicate", "resources")
_SER = ("predicate", "serialization")
_EXT = ("predicate", "bastion")
_SUBJECT_DIGEST = ("subject", 0, "digest", "sha256")


@pytest.mark.parametrize(
    ("doc", "path", "value", "message"),
    [
        (_FILES_DOC, (), [], "statement is missing or not an object"),
        (_FILES_DOC, ("_type",), _DELETE, "not an in-toto v1 statement"),
        (_FILES_DOC, ("_type",), "https://in-toto.io/Statement/v0.1", "in-toto v1"),
        (_FILES_DOC, ("predicateType",), "https://model_signing/Digests/v0.1", "re-sign"),
        (_FILES_DOC, ("predicateType",), "https://example.com/x", "unknown predicate type"),
        (_FILES_DOC, ("predicateType",), _DELETE, "unknown predicate type"),
        (_FILES_DOC, ("subject",), [], "exactly one subject"),
        (_FILES_DOC, ("subject",), lambda d: d["subject"] * 2, "exactly one subject"),
        (_FILES_DOC, ("subject",), _DELETE, "exactly one subject"),
        (_FILES_DOC, ("subject", 0), "model", "subject is missing or not an object"),
        (_FILES_DOC, ("subject", 0, "digest"), _DELETE, "subject digest"),
        (_FILES_DOC, _SUBJECT_DIGEST, _DELETE, "lacks a name or sha256"),
        (_FILES_DOC, ("subject", 0, "name"), 5, "lacks a name or sha256"),
        (_FILES_DOC, _SUBJECT_DIGEST, "zz" * 32, "inconsistent"),
        (_FILES_DOC, _SUBJECT_DIGEST, "00" * 32, "inconsistent"),
        (_FILES_DOC, _SUBJECT_DIGEST, "", "inconsistent"),
        (_FILES_DOC, ("predicate",), _DELETE, "predicate is missing"),
        (_FILES_DOC, _SER, _DELETE, "serialization block is not an object"),
        (_FILES_DOC, (*_SER, "method"), "tree", "unknown method"),
        (_FILES_DOC, (*_SER, "hash_type"), "md5", "unsupported hash"),
        (_FILES_DOC, (*_SER, "allow_symlinks"), "yes", "allow_symlinks"),
        (_FILES_DOC, (*_SER, "ignore_paths"), "x", "ignore_paths"),
        (_FILES_DOC, (*_SER, "ignore_paths"), ["ok", "../x"], "unsafe ignore path"),
        (_SHARDS_DOC, (*_SER, "hash_type"), "blake3", "serialization is invalid"),
        (_FILES_DOC, _RES, _DELETE, "lists no resources"),
        (_FILES_DOC, _RES, [], "lists no resources"),
        (_FILES_DOC, _RES, {"a": 1}, "lists no resources"),
        (_FILES_DOC, (*_RES, 0), "a/b.bin", "not an object"),
        (_FILES_DOC, (*_RES, 0, "digest"), _DELETE, "lacks a name, algorithm or digest"),
        (_FILES_DOC, (*_RES, 0, "name"), 7, "lacks a name, algorithm or digest"),
        (_FILES_DOC, (*_RES, 0, "digest"), "zz" * 32, "not hex"),
        (_FILES_DOC, (*_RES, 0, "digest"), "0x" + "00" * 31, "not hex"),
        (_FILES_DOC, (*_RES, 0, "digest"), "abc", "not hex"),
        (_FILES_DOC, (*_RES, 0, "digest"), "ab", "wrong length"),
        (_FILES_DOC, (*_RES, 0, "digest"), "", "wrong length"),
        (_FILES_DOC, (*_RES, 0, "digest"), "ab" * 33, "wrong length"),
        (_FILES_DOC, (*_RES, 1, "name"), "a/b.bin", "twice"),
        (_FILES_DOC, (*_RES, 0, "name"), "../b.bin", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "a/../../b.bin", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "/etc/passwd", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "a//b.bin", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "a/b.bin/", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "a/./b.bin", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "a/b\x00.bin", "unsafe"),
        (_FILES_DOC, (*_RES, 0, "name"), "", "empty or overlong"),
        (_FILES_DOC, (*_RES, 0, "name"), "x" * 5000, "empty or overlong"),
        (_FILES_DOC, (*_RES, 0, "algorithm"), "blake3", "uses 'blake3'"),
        (_SHARDS_DOC, (*_RES, 0, "algorithm"), "sha256-sharded-999", "sharded-999"),
        (_SHARDS_DOC, (*_RES, 0, "algorithm"), "sha256", "uses 'sha256'"),
        (_SHARDS_DOC, (*_SER, "shard_size"), 999, "uses"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:0", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:x:10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:0:x", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:10:0", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:-1:10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin::10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:0:10:", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin: 0:10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:+0:10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "w.bin:0x0:10", "malformed shard name"),
        (_SHARDS_DOC, (*_RES, 0, "name"), ":0:10", "empty or overlong"),
        (_SHARDS_DOC, (*_RES, 0, "name"), "../w.bin:0:10", "unsafe"),
        (_SHARDS_DOC, (*_RES, 1, "name"), "w.bin:0:1000", "twice"),
        (_SHARDS_DOC, (*_SER, "shard_size"), 1000.5, "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), math.nan, "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), math.inf, "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), True, "shard_size is not a number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), "1000", "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), [1000], "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), _DELETE, "shard_size is not a whole number"),
        (_SHARDS_DOC, (*_SER, "shard_size"), 0, "shard_size is not positive"),
        (_SHARDS_DOC, (*_SER, "shard_size"), -1000, "shard_size is not positive"),
        (_FILES_DOC, _EXT, "x", "bastion extension"),
        (_FILES_DOC, (*_EXT, "version"), 2, "extension version 2"),
        (_FILES_DOC, (*_EXT, "version"), 0, "extension version 0"),
        (_FILES_DOC, (*_EXT, "version"), "1", "extension version '1'"),
        (_FILES_DOC, (*_EXT, "version"), _DELETE, "extension version None"),
        (_FILES_DOC, (*_EXT, "signed_at"), _DELETE, "signing time is missing"),
        (_FILES_DOC, (*_EXT, "signed_at"), 1735787045, "signing time is missing"),
        (_FILES_DOC, (*_EXT, "signed_at"), "yesterday", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-13-01T00:00:00Z", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-02-30T00:00:00Z", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-01-02 03:04:05", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-01-02T03:04:05+00:00", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-01-02T03:04:05.5Z", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "2025-01-02T03:04:05Z\x00", "malformed"),
        (_FILES_DOC, (*_EXT, "signed_at"), "\ud800", "malformed"),
    ],
)
def test_statement_field_errors(doc: Any, path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(BundleFormatError, match=message):
        Statement.from_payload(json.dumps(_apply(doc, path, value)).encode())


def test_statement_v02_predicate_says_resign() -> None:
    doc = _apply(_FILES_DOC, ("predicateType",), "https://model_signing/Digests/v0.1")
    with pytest.raises(BundleFormatError) as info:
        Statement.from_payload(json.dumps(doc).encode())
    assert "pre-1.0" in info.value.message
    assert "re-sign the model" in info.value.message


def test_statement_integral_float_shard_size() -> None:
    """The reference writes shard_size 1000 as 1000.0 (protobuf Struct): accepted."""
    doc = _apply(_SHARDS_DOC, (*_SER, "shard_size"), 1000.0)
    parsed = Statement.from_payload(json.dumps(doc).encode())
    assert parsed.serialization.shard_size == 1000
    assert type(parsed.serialization.shard_size) is int
    assert parsed == _SHARDS


def test_statement_without_extension() -> None:
    parsed = Statement.from_payload(json.dumps(_apply(_FILES_DOC, _EXT, _DELETE)).encode())
    assert (parsed.signed_at, parsed.extension_version) == (None, None)
    assert parsed.resources == _FILES.resources


_OFFSETS = st.integers(0, 10**20).map(str) | st.sampled_from(
    ["", "-1", "+1", " 1", "1 ", "01", "1.0", "1e3", "0x10", "1_000", "x", "\u2160", "\u00bd"]
)
_SHARD_PATHS = _SAFE_NAME | st.sampled_from(
    ["", ".", "..", "a/../b", "/abs", "a//b", "x:1", "a\x00"]
)


@_MANY
@given(
    st.tuples(_SHARD_PATHS, _OFFSETS, _OFFSETS).map(":".join)
    | st.text(alphabet="w.bin:0123456789-+ /x", max_size=24)
)
@example("w.bin:0001:1000")
@example("w.bin:1:1")
def test_statement_shard_names(name: str) -> None:
    """Shard names of the right shape are read back; anything else is refused."""
    statement = _read_statement(json.dumps(_apply(_SHARDS_DOC, (*_RES, 0, "name"), name)).encode())
    if statement is not None:
        assert statement.resources[0].name == name
        path, start, end = file_of(name, "shards")
        assert path
        assert 0 <= start <= end
        first, last = name.rsplit(":", 2)[1:]
        assert re.fullmatch("[0-9]+", first)
        assert re.fullmatch("[0-9]+", last)
        assert (int(first), int(last)) == (start, end)


@_SOME
@given(st.text(max_size=80))
@example("2025-1-2T3:4:5Z")
@example("\u0662\u0660\u0662\u0665-01-02T03:04:05Z")
def test_statement_signed_at_strings(raw: str) -> None:
    doc = _apply(_FILES_DOC, (*_EXT, "signed_at"), raw)
    statement = _read_statement(json.dumps(doc).encode())
    if statement is not None:
        assert statement.signed_at is not None
        assert statement.signed_at.tzinfo is UTC


@_SOME
@given(
    st.integers(0, 10000),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
)
@example(2024, 2, 29, 23, 59, 59)
@example(2025, 2, 29, 0, 0, 0)
@example(2025, 1, 1, 0, 0, 60)
def test_statement_signed_at_fields(y: int, mo: int, d: int, h: int, mi: int, sec: int) -> None:
    """A signing time is accepted exactly when it names a real UTC second."""
    raw = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}Z"
    doc = _apply(_FILES_DOC, (*_EXT, "signed_at"), raw)
    statement = _read_statement(json.dumps(doc).encode())
    try:
        expected = datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
    except ValueError:
        assert statement is None
    else:
        assert statement is not None
        assert statement.signed_at == expected


@settings(max_examples=10, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(999, 12, 31)))
@example(datetime(999, 1, 1))
def test_statement_round_trip_early_years(when: datetime) -> None:
    statement = Statement.build(
        "m", Serialization(), _FILES.resources, when.replace(microsecond=0, tzinfo=UTC)
    )
    assert Statement.from_payload(statement.to_payload()) == statement


@pytest.mark.parametrize("version", [True, 1.0])
def test_statement_extension_version_must_be_integer(version: object) -> None:
    doc = _apply(_FILES_DOC, (*_EXT, "version"), version)
    try:
        Statement.from_payload(json.dumps(doc).encode())
    except BundleFormatError:
        return
    raise AssertionError(f"extension version {version!r} was accepted")


@settings(max_examples=20, deadline=None)
@given(st.text(max_size=12))
@example("w.bin:\u00b2:3")
@example("w.bin:0:" + "9" * 5000)
def test_statement_shard_offsets_never_crash(name: str) -> None:
    _read_statement(json.dumps(_apply(_SHARDS_DOC, (*_RES, 0, "name"), name)).encode())


# ==============================================================================
# 3. file_of / order_key
# ==============================================================================


@_MANY
@given(st.text(max_size=40), st.integers(0, 2**64), st.integers(0, 2**64))
@example("a:1:2", 3, 4)
@example(":", 0, 0)
@example("a::", 5, 10)
def test_file_of_parses_shard_names(path: str, start: int, length: int) -> None:
    end = start + length
    assert file_of(f"{path}:{start}:{end}", "shards") == (path, start, end)


@_SOME
@given(st.text(max_size=40))
def test_file_of_whole_files(name: str) -> None:
    assert file_of(name, "files") == (name, 0, -1)


@_MANY
@given(_TEXT)
def test_file_of_arbitrary_names(name: str) -> None:
    parsed = _outcome(BundleFormatError, lambda: file_of(name, "shards"))
    if isinstance(parsed, BundleFormatError):
        assert "malformed shard name" in parsed.message
    else:
        path, start, end = parsed
        assert 0 <= start <= end
        assert name.startswith(path + ":")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=12))
@example("a:\u00b2:3")
@example("a:0:" + "9" * 5000)
def test_file_of_never_crashes(name: str) -> None:
    _outcome(BundleFormatError, lambda: file_of(name, "shards"))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([0x660, 0xFF10, 0x966]))
@example(0, 10, 0x660)
def test_file_of_refuses_non_ascii_offsets(start: int, length: int, zero: int) -> None:
    def digits(n: int) -> str:
        return "".join(chr(zero + int(d)) for d in str(n))

    name = f"w.bin:{digits(start)}:{digits(start + length)}"
    parsed = _outcome(BundleFormatError, lambda: file_of(name, "shards"))
    assert isinstance(parsed, BundleFormatError), f"{name!r} was read as {parsed}"


def test_order_key_path_components() -> None:
    names = ["a.txt", "a-b/x", "a/b"]
    assert sorted(names, key=lambda n: order_key(n, "files")) == ["a/b", "a-b/x", "a.txt"]
    # Code-point order of the whole names would differ: "-" < "." < "/".
    assert sorted(names) == ["a-b/x", "a.txt", "a/b"]


def test_order_key_shards_numeric() -> None:
    names = ["f:10:20", "f:9:10", "f:100:200", "e/f:0:1", "f:0:9"]
    ordered = sorted(names, key=lambda n: order_key(n, "shards"))
    assert ordered == ["e/f:0:1", "f:0:9", "f:9:10", "f:10:20", "f:100:200"]


@_SOME
@given(st.lists(st.tuples(_SAFE_NAME, st.integers(0, 10**15)), min_size=1, max_size=12))
def test_order_key_sorts_by_components_then_offsets(shards: list[tuple[str, int]]) -> None:
    names = [f"{path}:{start}:{start + 1}" for path, start in shards]
    ordered = sorted(names, key=lambda n: order_key(n, "shards"))
    parsed = [file_of(n, "shards") for n in ordered]
    keys = [(p.split("/"), s) for p, s, _ in parsed]
    assert keys == sorted(keys)
    # Every shard of one file is in numeric order.
    for path in {p for p, _ in shards}:
        starts = [s for p, s, _ in parsed if p == path]
        assert starts == sorted(starts)


# ==============================================================================
# 4. PublicKey.from_pem / PrivateKey.from_pem
# ==============================================================================

_PASSPHRASE = b"correct horse battery staple"
_KEYS = {t: generate_key(t) for t in KEY_TYPES}
_PUBLIC_PEM = {t: k.public_key.pem for t, k in _KEYS.items()}
_PRIVATE_PEM = {t: k.to_pem(None) for t, k in _KEYS.items()}
_ENCRYPTED_PEM = {t: k.to_pem(_PASSPHRASE) for t, k in _KEYS.items()}
_FINGERPRINT = {t: k.public_key.fingerprint for t, k in _KEYS.items()}

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_UNSUPPORTED_PRIVATE = {
    "rsa": _RSA,
    "ed448": ed448.Ed448PrivateKey.generate(),
    "x25519": x25519.X25519PrivateKey.generate(),
    "secp256k1": ec.generate_private_key(ec.SECP256K1()),
}


def _private_pem(key: Any, password: bytes | None = None, *, pkcs8: bool = True) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    fmt = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def _public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der_blocks(pem: bytes) -> list[bytes]:
    """The DER content of each PEM block of ``pem``."""
    bodies = re.findall(rb"-----BEGIN [A-Z0-9 ]+-----\n(.*?)-----END ", pem, re.DOTALL)
    assert bodies
    return [base64.b64decode(b"".join(body.split())) for body in bodies]


_REAL_DER = sorted(
    {
        der
        for pems in (_PUBLIC_PEM, _PRIVATE_PEM, _ENCRYPTED_PEM)
        for pem in pems.values()
        for der in _der_blocks(pem)
    }
    | {
        der
        for k in _UNSUPPORTED_PRIVATE.values()
        for pem in (_public_pem(k), _private_pem(k))
        for der in _der_blocks(pem)
    }
    | set(_der_blocks(_private_pem(_KEYS["ecdsa-p256"].keys[0], pkcs8=False)))
)
_PEM_LABELS = st.sampled_from(
    [
        b"PUBLIC KEY",
        b"PRIVATE KEY",
        b"ENCRYPTED PRIVATE KEY",
        b"EC PRIVATE KEY",
        b"RSA PRIVATE KEY",
        b"CERTIFICATE",
    ]
) | st.text(alphabet="ABCKEYZ09 ", min_size=1, max_size=12).map(str.encode)
_PEM_HEADERS = st.sampled_from(
    [
        b"",
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\n",
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,XYZ\n\n",
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0011223344556677\n\n",
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: BOGUS\n\n",
        b"Proc-Type: 4,ENCRYPTED\n\n",
        b"Comment: hello\n\n",
    ]
)


@st.composite
def _der(draw: st.DrawFn) -> bytes:
    """Real key DER, damaged at random, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    der = bytearray(draw(st.sampled_from(_REAL_DER)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(der)))
        match draw(st.sampled_from(["flip", "cut", "insert"])):
            case "flip" if at < len(der):
                der[at] ^= draw(st.integers(1, 255))
            case "cut":
                del der[at:]
            case _:
                der[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(der)


@st.composite
def _pem_files(draw: st.DrawFn) -> bytes:
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        label = draw(_PEM_LABELS)
        end_label = label if draw(st.integers(0, 9)) else draw(_PEM_LABELS)
        body = draw(_PEM_HEADERS) + base64.encodebytes(draw(_der()))
        blocks.append(b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label, body, end_label))
    return b"".join(blocks)


def _read_public(data: bytes) -> PublicKey | None:
    key = _outcome(KeyFormatError, lambda: PublicKey.from_pem(data))
    if isinstance(key, KeyFormatError):
        assert key.message
        return None
    assert key.algorithm in ALGORITHMS
    return key


def _read_private(data: bytes, passphrase: bytes | None) -> PrivateKey | None:
    key = _outcome((KeyFormatError, PassphraseError), lambda: PrivateKey.from_pem(data, passphrase))
    if isinstance(key, BastionError):
        assert key.message
        return None
    assert key.public_key.algorithm in ALGORITHMS
    return key


@_MANY
@given(st.binary(max_size=1024), st.none() | st.binary(max_size=16))
@example(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n", None)
@example(b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n", b"x")
@example(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n-----END ENCRYPTED PRIVATE KEY-----\n", b"x")
def test_keys_arbitrary_bytes(data: bytes, passphrase: bytes | None) -> None:
    _read_public(data)
    _read_private(data, passphrase)


@_MANY
@given(_pem_files(), st.none() | st.just(_PASSPHRASE) | st.binary(max_size=8))
def test_keys_damaged_pem(data: bytes, passphrase: bytes | None) -> None:
    _read_public(data)
    _read_private(data, passphrase)


@_SOME
@given(st.sampled_from(KEY_TYPES), st.sampled_from(["public", "private", "encrypted"]), st.data())
def test_keys_truncated(key_type: str, kind: str, data: st.DataObject) -> None:
    pem = {"public": _PUBLIC_PEM, "private": _PRIVATE_PEM, "encrypted": _ENCRYPTED_PEM}[kind][
        key_type
    ]
    cut = data.draw(st.integers(0, len(pem) - 1))
    truncated = pem[:cut]
    if kind == "public":
        key = _read_public(truncated)
        loaded = key.pem if key else None
    else:
        private = _read_private(truncated, _PASSPHRASE)
        loaded = private.public_key.pem if private else None
    if loaded is not None:
        # Only a cut between two blocks leaves something readable: the first
        # block (the classical part of a hybrid key) or the whole key.
        assert _PUBLIC_PEM[key_type].startswith(loaded)


@_FEW
@given(st.sampled_from(KEY_TYPES), st.binary(min_size=1, max_size=64), st.binary(max_size=64))
def test_keys_encrypted_round_trip(key_type: str, passphrase: bytes, other: bytes) -> None:
    pem = _KEYS[key_type].to_pem(passphrase)
    assert b"ENCRYPTED PRIVATE KEY" in pem
    key = PrivateKey.from_pem(pem, passphrase)
    assert key.public_key.fingerprint == _FINGERPRINT[key_type]
    if other == passphrase:
        return
    with pytest.raises(PassphraseError):
        PrivateKey.from_pem(pem, other or None)


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("passphrase", [None, b""])
def test_keys_missing_passphrase(key_type: str, passphrase: bytes | None) -> None:
    with pytest.raises(PassphraseError, match="is encrypted; give its passphrase"):
        PrivateKey.from_pem(_ENCRYPTED_PEM[key_type], passphrase)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_keys_wrong_passphrase(key_type: str) -> None:
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        PrivateKey.from_pem(_ENCRYPTED_PEM[key_type], _PASSPHRASE + b"!")


@pytest.mark.parametrize("encrypted", [False, True])
def test_keys_traditional_ec_format(encrypted: bool) -> None:
    """Legacy "EC PRIVATE KEY" files, encrypted with Proc-Type/DEK-Info headers."""
    key = _KEYS["ecdsa-p256"].keys[0]
    pem = _private_pem(key, _PASSPHRASE if encrypted else None, pkcs8=False)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    loaded = PrivateKey.from_pem(pem, _PASSPHRASE)
    assert loaded.public_key.fingerprint == _FINGERPRINT["ecdsa-p256"]
    if encrypted:
        with pytest.raises(PassphraseError):
            PrivateKey.from_pem(pem, None)
        with pytest.raises(PassphraseError):
            PrivateKey.from_pem(pem, b"wrong")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_keys_crlf(key_type: str) -> None:
    public = PublicKey.from_pem(_PUBLIC_PEM[key_type].replace(b"\n", b"\r\n"))
    assert public.fingerprint == _FINGERPRINT[key_type]
    private = PrivateKey.from_pem(_PRIVATE_PEM[key_type].replace(b"\n", b"\r\n"))
    assert private.public_key.fingerprint == _FINGERPRINT[key_type]


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("pems", [_PRIVATE_PEM, _ENCRYPTED_PEM], ids=["plain", "encrypted"])
def test_keys_private_given_as_public(key_type: str, pems: dict[str, bytes]) -> None:
    with pytest.raises(KeyFormatError, match=r"not a public key; pass the \.pub file"):
        PublicKey.from_pem(pems[key_type])


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_keys_public_given_as_private(key_type: str) -> None:
    with pytest.raises(
        KeyFormatError, match=r"holds a public key, not a private key; pass the \.key"
    ):
        PrivateKey.from_pem(_PUBLIC_PEM[key_type], _PASSPHRASE)


def test_keys_certificate_given_as_key() -> None:
    with pytest.raises(KeyFormatError, match="holds a certificate, not a public key"):
        PublicKey.from_pem(_CA_PEM)
    with pytest.raises(KeyFormatError, match="holds a certificate, not a private key"):
        PrivateKey.from_pem(_CA_PEM)


@pytest.mark.parametrize(
    "types_",
    [
        ("ecdsa-p256", "ecdsa-p384"),  # two classical keys
        ("ed25519", "ecdsa-p256"),
        ("ml-dsa-65", "ecdsa-p384"),  # ML-DSA first
        ("ml-dsa-65", "ml-dsa-65"),
        ("ecdsa-p384", "ml-dsa-65", "ml-dsa-65"),  # three blocks
        ("ecdsa-p256", "ecdsa-p256", "ecdsa-p256"),
        ("hybrid", "ed25519"),
    ],
)
def test_keys_not_a_valid_hybrid(types_: tuple[str, ...]) -> None:
    count = sum(2 if t == "hybrid" else 1 for t in types_)
    with pytest.raises(KeyFormatError, match=f"holds {count} keys"):
        PublicKey.from_pem(b"".join(_PUBLIC_PEM[t] for t in types_))
    with pytest.raises(KeyFormatError, match=f"holds {count} keys"):
        PrivateKey.from_pem(b"".join(_PRIVATE_PEM[t] for t in types_))


@pytest.mark.parametrize("name", sorted(_UNSUPPORTED_PRIVATE))
def test_keys_unsupported_types(name: str) -> None:
    key = _UNSUPPORTED_PRIVATE[name]
    with pytest.raises(KeyFormatError, match="not supported"):
        PublicKey.from_pem(_public_pem(key))
    with pytest.raises(KeyFormatError, match="not supported"):
        PrivateKey.from_pem(_private_pem(key))
    with pytest.raises(KeyFormatError, match="not supported"):
        PrivateKey.from_pem(_private_pem(key, _PASSPHRASE), _PASSPHRASE)


@_FEW
@given(st.sampled_from(KEY_TYPES), st.integers(1, 70_000), st.sampled_from([b"\n", b"A", b"\x00"]))
def test_keys_oversized(key_type: str, extra: int, fill: bytes) -> None:
    for pem, read in (
        (_PUBLIC_PEM[key_type], PublicKey.from_pem),
        (_PRIVATE_PEM[key_type], PrivateKey.from_pem),
    ):
        data = pem + fill * (64 * 1024 - len(pem) + extra)
        with pytest.raises(KeyFormatError, match="too large"):
            read(data)


@settings(max_examples=5, deadline=None)
@given(st.integers(1024, 4096))
@example(1024)
def test_keys_long_passphrase(length: int) -> None:
    passphrase = b"p" * length
    try:
        pem = _KEYS["ed25519"].to_pem(passphrase)
    except BastionError:
        return  # a clear refusal would do
    assert PrivateKey.from_pem(pem, passphrase).public_key.fingerprint == _FINGERPRINT["ed25519"]


# ==============================================================================
# 5. TrustPolicy.from_toml
# ==============================================================================

_CA_KEY = ec.generate_private_key(ec.SECP256R1())
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion test CA")])
_CA_CERT = (
    x509.CertificateBuilder()
    .subject_name(_CA_NAME)
    .issuer_name(_CA_NAME)
    .public_key(_CA_KEY.public_key())
    .serial_number(1)
    .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
    .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(_CA_KEY, hashes.SHA256())
)
_CA_PEM = _CA_CERT.public_bytes(serialization.Encoding.PEM)


def _toml_str(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    """A TOML value for ``value``; tables are written inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml_doc(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_str(k)} = {_toml_value(v)}\n" for k, v in doc.items())


# TOML text cannot hold surrogates; NUL is included (a path holding one is refused).
_TOML_CHARS = st.characters(exclude_categories=("Cs",))
_TOML_TEXT = st.text(_TOML_CHARS, max_size=16)
_POLICY_WORDS = st.sampled_from(
    [
        "version",
        "threshold",
        "algorithms",
        "keys",
        "certificates",
        "name",
        "public_key",
        "path",
        "roots",
        "roots_path",
        "identities",
    ]
)


def _toml_values(keys: st.SearchStrategy[str] = _TOML_TEXT) -> st.SearchStrategy[Any]:
    scalars = (
        st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats()
        | _TOML_TEXT
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=16,
    )


_ANY_TOML = _toml_values(_TOML_TEXT | _POLICY_WORDS)
_PUBLIC_PEM_TEXT = st.sampled_from([pem.decode() for pem in _PUBLIC_PEM.values()])
_PEM_TEXT = _PUBLIC_PEM_TEXT | st.sampled_from(
    [_PRIVATE_PEM["ed25519"].decode(), _CA_PEM.decode(), ""]
)
_PEM_TEXT = _PEM_TEXT | st.tuples(_PEM_TEXT, st.integers(0, 3000)).map(lambda t: t[0][: t[1]])
_FILE_NAMES = st.sampled_from(["k.pub", "ca.crt", "bad.pem", "missing", "", ".", "..", "sub/x"])
_ENTRY_NAMES = st.text(_TOML_CHARS, min_size=1, max_size=8)


@st.composite
def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """``good`` about four times in five, so that documents often get deep."""
    return draw(good if draw(st.sampled_from([True, True, True, True, False])) else bad)


def _entries(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A table with the ``required`` fields, mostly, plus some ``optional`` ones."""
    return _mostly(
        st.fixed_dictionaries(required, optional=optional),
        st.fixed_dictionaries({}, optional={**required, **optional, "extra": _ANY_TOML}),
    )


_KEY_ENTRY = _mostly(
    _entries(
        {"name": _ENTRY_NAMES, "public_key": _mostly(_PUBLIC_PEM_TEXT, _PEM_TEXT | _ANY_TOML)},
        {},
    ),
    _entries(
        {"name": _mostly(_ENTRY_NAMES, _ANY_TOML), "path": _mostly(_FILE_NAMES, _ANY_TOML)},
        {"public_key": _PEM_TEXT},
    ),
)
_CERT_ENTRY = _mostly(
    _entries(
        {
            "name": _ENTRY_NAMES,
            "roots": _mostly(st.just(_CA_PEM.decode()), _PEM_TEXT | _ANY_TOML),
            "identities": _mostly(st.lists(_TOML_TEXT, max_size=3), _ANY_TOML),
        },
        {"roots_path": _FILE_NAMES},
    ),
    _entries(
        {"name": _mostly(_ENTRY_NAMES, _ANY_TOML), "roots_path": _mostly(_FILE_NAMES, _ANY_TOML)},
        {"identities": st.lists(_TOML_TEXT, max_size=3)},
    ),
)
_POLICY_DOCS = _entries(
    {
        "version": _mostly(st.just(1), _ANY_TOML),
        "keys": _mostly(st.lists(_KEY_ENTRY, min_size=1, max_size=3), _ANY_TOML),
    },
    {
        "threshold": _mostly(st.integers(-1, 4), _ANY_TOML),
        "algorithms": _mostly(
            st.lists(st.sampled_from(sorted(ALGORITHMS)), max_size=4),
            st.lists(st.sampled_from(sorted(ALGORITHMS)) | _TOML_TEXT, max_size=3) | _ANY_TOML,
        ),
        "certificates": _mostly(st.lists(_CERT_ENTRY, max_size=2), _ANY_TOML),
    },
)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for policies' relative paths: a key, a root, and a bad file."""
    base = tmp_path_factory.mktemp("policy")
    (base / "k.pub").write_bytes(_PUBLIC_PEM["ecdsa-p256"])
    (base / "ca.crt").write_bytes(_CA_PEM)
    (base / "bad.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    (base / "sub").mkdir()
    return base


def _read_policy(text: str, base: Path | str = ".") -> TrustPolicy | None:
    policy = _outcome(
        (TrustPolicyError, PathNotFoundError), lambda: TrustPolicy.from_toml(text, base_dir=base)
    )
    if isinstance(policy, BastionError):
        assert policy.message
        return None
    assert policy.keys or policy.authorities
    assert 1 <= policy.threshold <= len(policy.keys) + len(policy.authorities)
    assert policy.algorithms
    assert policy.algorithms <= ALGORITHMS
    return policy


@_SOME
@given(_toml_values())
def test_toml_helper_writes_valid_toml(value: Any) -> None:
    """The serializer these tests use writes TOML that reads back to the same value."""
    assume(not any(isinstance(v, float) and math.isnan(v) for v in _leaves(value)))
    assert tomllib.loads(_toml_doc({"v": value})) == {"v": value}


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    return [value]


@_MANY
@given(st.text(max_size=400))
@example("")
@example("version = 1")
@example("version = 1\n[[keys]]\n")
@example("x = " + "[" * 5000)
@example("x = " + "{a = " * 5000)
@example('a = "\\ud800"')
@example("x = 1979-02-30")
@example("x = 07:32:60")
def test_policy_arbitrary_text(text: str) -> None:
    _read_policy(text)


@_MANY
@given(st.dictionaries(_TOML_TEXT | _POLICY_WORDS, _ANY_TOML, max_size=6))
def test_policy_arbitrary_toml(doc: dict[str, Any]) -> None:
    _read_policy(_toml_doc(doc))


@_MANY
@given(_POLICY_DOCS)
def test_policy_plausible_documents(policy_dir: Path, doc: dict[str, Any]) -> None:
    _read_policy(_toml_doc(doc), policy_dir)


@pytest.mark.parametrize("depth", [100, 1000, 100_000], ids=lambda d: f"depth-{d}")
def test_policy_deep_nesting(depth: int) -> None:
    for text in ("x = " + "[" * depth + "]" * depth, "x = " + "{a = " * depth + "1" + "}" * depth):
        with pytest.raises(TrustPolicyError):
            TrustPolicy.from_toml(text)


def _key_entry(**fields: Any) -> dict[str, Any]:
    return {"name": "k", "public_key": _PUBLIC_PEM["ed25519"].decode(), **fields}


_CERT = {"name": "ca", "roots": _CA_PEM.decode(), "identities": ["*"]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 1}, "trusts no key and no certificate authority"),
        ({"version": 1, "keys": [], "certificates": []}, "trusts no key"),
        ({"keys": [_key_entry()]}, "version = 1"),
        ({"version": 2, "keys": [_key_entry()]}, "version = 1"),
        ({"version": "1", "keys": [_key_entry()]}, "version = 1"),
        ({"version": True, "keys": [_key_entry()]}, "version = 1"),  # once equal to 1
        ({"version": 1.0, "keys": [_key_entry()]}, "version = 1"),
        ({"version": 1, "keys": [_key_entry()], "thresold": 1}, "unknown setting.*thresold"),
        ({"version": 1, "keys": [_key_entry(comment="x")]}, "unknown setting.*comment"),
        ({"version": 1, "certificates": [{**_CERT, "identity": "x"}]}, "unknown setting"),
        ({"version": 1, "keys": [_key_entry()], "threshold": 0}, "threshold 0 cannot be met"),
        ({"version": 1, "keys": [_key_entry()], "threshold": -1}, "threshold -1 cannot be met"),
        ({"version": 1, "keys": [_key_entry()], "threshold": 2}, "threshold 2 cannot be met"),
        ({"version": 1, "keys": [_key_entry()], "threshold": True}, "whole number"),
        ({"version": 1, "keys": [_key_entry()], "threshold": 1.0}, "whole number"),
        ({"version": 1, "keys": [_key_entry()], "threshold": "1"}, "whole number"),
        ({"version": 1, "keys": [_key_entry()], "algorithms": []}, "allows no algorithm"),
        ({"version": 1, "keys": [_key_entry()], "algorithms": ["rsa"]}, "unknown algorithm"),
        ({"version": 1, "keys": [_key_entry()], "algorithms": "ed25519"}, "list of names"),
        ({"version": 1, "keys": [_key_entry()], "algorithms": [1]}, "list of names"),
        ({"version": 1, "keys": _key_entry()}, "array of tables"),
        ({"version": 1, "keys": ["k"]}, "array of tables"),
        ({"version": 1, "keys": [_key_entry(name="")]}, "needs a name"),
        ({"version": 1, "keys": [_key_entry(name=5)]}, "needs a name"),
        ({"version": 1, "keys": [{"public_key": _PUBLIC_PEM["ed25519"].decode()}]}, "needs a name"),
        ({"version": 1, "keys": [_key_entry(), _key_entry()]}, "same name"),
        ({"version": 1, "keys": [_key_entry(name="ca")], "certificates": [_CERT]}, "same name"),
        ({"version": 1, "keys": [{"name": "k"}]}, "exactly one of public_key and path"),
        ({"version": 1, "keys": [_key_entry(path="k.pub")]}, "exactly one of public_key"),
        ({"version": 1, "keys": [_key_entry(public_key=5)]}, "must be a PEM string"),
        ({"version": 1, "keys": [_key_entry(public_key="nope")]}, "not a PEM key file"),
        (
            {"version": 1, "keys": [_key_entry(public_key=_PRIVATE_PEM["ed25519"].decode())]},
            "not a public key",
        ),
        ({"version": 1, "keys": [{"name": "k", "path": 5}]}, "path must be a string"),
        ({"version": 1, "keys": [{"name": "k", "path": "missing.pub"}]}, "cannot read"),
        ({"version": 1, "keys": [{"name": "k", "path": "."}]}, "cannot read"),
        (
            {"version": 1, "certificates": [{k: v for k, v in _CERT.items() if k != "identities"}]},
            "identities must be a list of strings",
        ),
        ({"version": 1, "certificates": [{**_CERT, "identities": []}]}, "lists no identities"),
        ({"version": 1, "certificates": [{**_CERT, "identities": "*"}]}, "list of strings"),
        ({"version": 1, "certificates": [{**_CERT, "roots": "x"}]}, "no readable PEM certificate"),
        (
            {"version": 1, "certificates": [{**_CERT, "roots": _PUBLIC_PEM["ed25519"].decode()}]},
            "no readable PEM certificate",
        ),
        ({"version": 1, "certificates": [{"name": "ca", "identities": ["*"]}]}, "exactly one"),
    ],
)
def test_policy_errors(policy_dir: Path, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(TrustPolicyError, match=message):
        TrustPolicy.from_toml(_toml_doc(doc), base_dir=policy_dir)


def test_policy_paths_resolve_against_base_dir(policy_dir: Path) -> None:
    policy = TrustPolicy.from_toml(
        _toml_doc(
            {
                "version": 1,
                "threshold": 2,
                "keys": [{"name": "k", "path": "k.pub"}],
                "certificates": [{"name": "ca", "roots_path": "ca.crt", "identities": ["a@b"]}],
            }
        ),
        base_dir=policy_dir,
    )
    assert policy.keys[0].key.fingerprint == _FINGERPRINT["ecdsa-p256"]
    assert policy.authorities[0].roots == (_CA_CERT,)
    assert policy.threshold == 2


_POLICY_NAMES = st.text(
    st.characters(exclude_categories=("Cs",)),
    min_size=1,
    max_size=20,
) | st.sampled_from(
    [
        'a"b',
        "a\\b",
        '\\"',
        "\x00\x1f\x7f",
        "\u00e9 \u2603 \u540d",
        "t\tb",
        "'''",
        '"""',
        "\U0001f600",
        "\u2028",
        "\ue000",
    ]
)
_PUBLIC_KEYS = [k.public_key for k in _KEYS.values()]


@st.composite
def _policies(draw: st.DrawFn) -> TrustPolicy:
    names = draw(st.lists(_POLICY_NAMES, min_size=1, max_size=6, unique=True))
    n_keys = draw(st.integers(0, len(names)))
    keys = tuple(TrustedKey(n, draw(st.sampled_from(_PUBLIC_KEYS))) for n in names[:n_keys])
    authorities = tuple(
        TrustedAuthority(
            n, (_CA_CERT,), tuple(draw(st.lists(_POLICY_NAMES, min_size=1, max_size=3)))
        )
        for n in names[n_keys:]
    )
    threshold = draw(st.integers(1, len(names)))
    algorithms = draw(st.frozensets(st.sampled_from(sorted(ALGORITHMS)), min_size=1))
    return TrustPolicy(keys, authorities, threshold, algorithms)


@_SOME
@given(_policies())
def test_policy_round_trip(policy: TrustPolicy) -> None:
    parsed = TrustPolicy.from_toml(policy.to_toml())
    assert [k.name for k in parsed.keys] == [k.name for k in policy.keys]
    assert [k.key.fingerprint for k in parsed.keys] == [k.key.fingerprint for k in policy.keys]
    assert [a.name for a in parsed.authorities] == [a.name for a in policy.authorities]
    assert [a.identities for a in parsed.authorities] == [a.identities for a in policy.authorities]
    assert [a.roots for a in parsed.authorities] == [a.roots for a in policy.authorities]
    assert parsed.threshold == policy.threshold
    assert parsed.algorithms == policy.algorithms


@settings(max_examples=20, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=0x10000).filter(lambda c: not c.isprintable()),
        min_size=1,
        max_size=3,
    )
)
@example("\U000e0001")
@example("\U000f0000")
def test_policy_round_trip_astral_names(name: str) -> None:
    policy = TrustPolicy(keys=(TrustedKey(name, _PUBLIC_KEYS[0]),))
    assert TrustPolicy.from_toml(policy.to_toml()).keys[0].name == name


@pytest.mark.parametrize(
    "entry",
    [
        {"keys": [{"name": "k", "path": "k\x00.pub"}]},
        {"certificates": [{"name": "ca", "roots_path": "\x00", "identities": ["*"]}]},
    ],
    ids=["path", "roots_path"],
)
def test_policy_nul_in_path(policy_dir: Path, entry: dict[str, Any]) -> None:
    with pytest.raises(TrustPolicyError, match="not valid"):
        TrustPolicy.from_toml(_toml_doc({"version": 1, **entry}), base_dir=policy_dir)


@settings(max_examples=5, deadline=None)
@given(st.integers(4301, 6000), st.sampled_from(["version", "threshold", "x"]))
@example(5000, "threshold")
def test_policy_huge_integer(digits: int, key: str) -> None:
    _read_policy(f"{key} = {'1' * digits}\n")


@pytest.mark.parametrize("entry", ["keys", "certificates"])
def test_policy_referenced_file_read_bounded(tmp_path: Path, entry: str) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(64 << 20)  # sparse: no disk used
    doc: dict[str, Any] = {
        "keys": {"keys": [{"name": "k", "path": str(big)}]},
        "certificates": {
            "certificates": [{"name": "c", "roots_path": str(big), "identities": ["*"]}]
        },
    }[entry]
    tracemalloc.start()
    try:
        with pytest.raises(TrustPolicyError):
            TrustPolicy.from_toml(_toml_doc({"version": 1, **doc}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading the policy took {peak >> 20} MiB"


# ==============================================================================
# 6. load_pem_certificates
# ==============================================================================


def _read_certs(data: bytes) -> None:
    certs = _outcome(
        CertificateFormatError, lambda: load_pem_certificates(data, source="roots.pem")
    )
    if isinstance(certs, CertificateFormatError):
        assert "roots.pem" in certs.message
        return
    assert certs
    assert all(isinstance(c, x509.Certificate) for c in certs)


_CA_DER = _CA_CERT.public_bytes(serialization.Encoding.DER)


@st.composite
def _cert_pems(draw: st.DrawFn) -> bytes:
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            der = bytearray(_CA_DER)
            for _ in range(draw(st.integers(1, 3))):
                at = draw(st.integers(0, len(der) - 1))
                if draw(st.booleans()):
                    der[at] ^= draw(st.integers(1, 255))
                else:
                    del der[at:]
                    break
            body = bytes(der)
        else:
            body = draw(st.binary(max_size=200))
        label = draw(st.sampled_from([b"CERTIFICATE", b"X509 CERTIFICATE", b"PUBLIC KEY"]))
        blocks.append(
            b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label, base64.encodebytes(body), label)
        )
    return b"".join(blocks)


@_MANY
@given(st.binary(max_size=2048))
@example(b"")
@example(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
def test_certs_arbitrary_bytes(data: bytes) -> None:
    _read_certs(data)


@_MANY
@given(_cert_pems())
def test_certs_damaged_pem(data: bytes) -> None:
    _read_certs(data)


@_SOME
@given(st.integers(0, len(_CA_PEM)))
def test_certs_truncated(cut: int) -> None:
    data = _CA_PEM[:cut]
    if cut < len(_CA_PEM) - 1:  # the final newline is optional
        with pytest.raises(CertificateFormatError, match="no readable PEM certificate"):
            load_pem_certificates(data, source="roots.pem")
    else:
        assert load_pem_certificates(data, source="roots.pem") == [_CA_CERT]


def _bad_version_der() -> bytes:
    v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2: version v3
    assert _CA_DER.count(v3) == 1
    return _CA_DER.replace(v3, b"\xa0\x03\x02\x01\x03")


@pytest.mark.parametrize("form", ["pem", "der"])
def test_certs_invalid_version(form: str) -> None:
    der = _bad_version_der()
    if form == "pem":
        pem = b"-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n" % (
            base64.encodebytes(der)
        )
        with pytest.raises(CertificateFormatError, match=r"r\.pem"):
            load_pem_certificates(pem, source="r.pem")
    else:
        with pytest.raises(VerificationError, match="invalid certificate"):
            load_der_certificate(der, source="the bundle")


def _serial_zero_der() -> bytes:
    serial_one = b"\x02\x01\x01"  # INTEGER 1: the test CA's serial number
    assert _CA_DER.count(serial_one) == 1
    return _CA_DER.replace(serial_one, b"\x02\x01\x00")


@pytest.mark.parametrize("form", ["pem", "der"])
def test_certs_non_positive_serial(form: str) -> None:
    der = _serial_zero_der()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if form == "pem":
            pem = b"-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n" % (
                base64.encodebytes(der)
            )
            with pytest.raises(CertificateFormatError, match=r"r\.pem"):
                load_pem_certificates(pem, source="r.pem")
        else:
            with pytest.raises(VerificationError, match="invalid certificate"):
                load_der_certificate(der, source="the bundle")


def test_certs_oversized() -> None:
    data = _CA_PEM * ((4 << 20) // len(_CA_PEM) + 1)
    with pytest.raises(CertificateFormatError, match="too large"):
        load_pem_certificates(data, source="roots.pem")


# ==============================================================================
# 7. Serialization.from_dict
# ==============================================================================

_SERIALIZATION_DICTS = _mostly(
    st.fixed_dictionaries(
        {
            "method": _mostly(st.sampled_from(["files", "shards"]), st.just("tree")),
            "hash_type": _mostly(st.just("sha256"), st.sampled_from(["blake3", "md5", "SHA256"])),
        },
        optional={
            "shard_size": _mostly(
                st.integers(1, 10**30) | st.floats(1, 1e300).map(float.__floor__).map(float),
                st.sampled_from([1000.5, 0, -1, math.nan, math.inf, True, "1000"]),
            ),
            "allow_symlinks": _mostly(st.booleans(), _json_values()),
            "ignore_paths": _mostly(st.lists(_SAFE_NAME, max_size=3), st.lists(_TEXT, max_size=3)),
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "method": st.sampled_from(["files", "shards"]) | _json_values(),
            "hash_type": st.sampled_from(["sha256", "blake3"]) | _json_values(),
            "shard_size": _json_values(),
            "allow_symlinks": _json_values(),
            "ignore_paths": _json_values(),
            "extra": _json_values(),
        },
    ),
)


def _read_serialization(body: Any) -> None:
    ser = _outcome(BundleFormatError, lambda: Serialization.from_dict(body))
    if isinstance(ser, BundleFormatError):
        assert ser.message
        return
    assert ser.method in ("files", "shards")
    assert ser.hash_type in ("sha256", "blake3")
    assert type(ser.shard_size) is int
    assert ser.shard_size > 0


@_MANY
@given(_json_values(_TEXT | st.sampled_from(["method", "hash_type", "shard_size"])))
def test_serialization_arbitrary_json(body: Any) -> None:
    _read_serialization(body)


@_MANY
@given(_SERIALIZATION_DICTS)
def test_serialization_plausible_dicts(body: dict[str, Any]) -> None:
    _read_serialization(body)
    # The reader sees what json.loads gives, too.
    _read_serialization(json.loads(json.dumps(body)))


@_SOME
@given(_statements())
def test_serialization_round_trip(statement: Statement) -> None:
    ser = statement.serialization
    assert Serialization.from_dict(ser.to_dict()) == ser
    assert Serialization.from_dict(json.loads(json.dumps(ser.to_dict()))) == ser


# ==============================================================================
# 8. DigestCache
# ==============================================================================

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _cache_file(directory: Path, data: bytes) -> str:
    fd, name = tempfile.mkstemp(dir=directory)  # mode 0600
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name


def _fake_file() -> Any:
    return types.SimpleNamespace(device=1, inode=2, size=3, mtime_ns=4, ctime_ns=5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@_SOME
@given(st.binary(min_size=16, max_size=4096).filter(lambda b: not b.startswith(_SQLITE_MAGIC)))
@example(b"\x00" * 4096)
@example(b"not a database, just text\n" * 10)
def test_cache_refuses_non_sqlite(cache_dir: Path, data: bytes) -> None:
    path = _cache_file(cache_dir, data)
    with pytest.raises(InputError, match="is not a Bastion cache") as info:
        DigestCache(path)
    assert type(info.value) is InputError
    assert "delete it" in info.value.message
    with open(path, "rb") as f:
        assert f.read() == data  # left as it was


@_SOME
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x00" * 4096)
def test_cache_refuses_damaged_sqlite(cache_dir: Path, data: bytes) -> None:
    """A SQLite header on garbage: refused, or (if SQLite can use it) a working cache."""
    path = _cache_file(cache_dir, _SQLITE_MAGIC + data)
    cache = _outcome(InputError, lambda: DigestCache(path))
    if isinstance(cache, InputError):
        assert "not a Bastion cache" in cache.message
        return
    with cache:
        f = _fake_file()
        assert cache.get(f, "files:sha256") is None


def test_cache_refuses_other_format_version(cache_dir: Path) -> None:
    path = _cache_file(cache_dir, b"")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="has format 7; delete it"):
        DigestCache(path)


def test_cache_foreign_sqlite_database(cache_dir: Path) -> None:
    path = _cache_file(cache_dir, b"")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE digests (x TEXT)")
    db.commit()
    db.close()
    try:
        cache = DigestCache(path)
    except InputError:
        return  # refusing it would do
    with cache:
        assert cache.get(_fake_file(), "files:sha256") is None
