"""mTLS clients: from ``[[clients]]`` tables to the client a verified certificate names."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from bastion.auth._mtls import ClientCertificates, MtlsClient, normalize_fingerprint
from bastion.errors import InputError
from tests.support.pki import make_leaf, make_root_ca

FINGERPRINT = "3f" * 32
COLONS = ":".join(["3F"] * 32)

CLIENTS = f"""
[[clients]]
name = "ci-runner"
sha256 = "{COLONS}"
roles = ["publisher:vision", "consumer:*", "publisher:vision"]
scope = ["publish", "version.pull"]

[[clients]]
name = "scanner"
subject = "CN=scanner,O=Acme"
roles = "auditor:*"
scope = "*"

[[clients]]
name = "reader"
sha256 = "{"ab" * 32}"
roles = ["consumer:vision"]
"""


def test_clients_are_read_and_identified_by_fingerprint_or_subject() -> None:
    clients = ClientCertificates.from_toml(CLIENTS)
    runner = clients.identify(FINGERPRINT, "CN=whoever")
    assert runner == MtlsClient(
        "ci-runner", (("*", "consumer"), ("vision", "publisher")), ("publish", "version.pull")
    )
    assert clients.identify(COLONS, "") == runner  # colon-separated and upper case too
    scanner = clients.identify("00" * 32, "CN=scanner,O=Acme")
    assert scanner == MtlsClient("scanner", (("*", "auditor"),), ("*",))
    assert [c.name for c in clients.clients] == ["ci-runner", "reader", "scanner"]


def test_without_a_scope_a_client_gets_what_its_roles_are_for() -> None:
    reader = ClientCertificates.from_toml(CLIENTS).identify("ab" * 32, "")
    assert reader is not None
    assert reader.scope == ("consume",)


def test_the_fingerprint_wins_over_the_subject() -> None:
    clients = ClientCertificates.from_toml(CLIENTS)
    found = clients.identify(FINGERPRINT, "CN=scanner,O=Acme")
    assert found is not None
    assert found.name == "ci-runner"


@pytest.mark.parametrize(
    ("fingerprint", "subject"),
    [
        ("00" * 32, "CN=nobody"),
        ("00" * 32, ""),
        ("3f" * 31, ""),  # too short
        ("3f" * 32 + "00", ""),  # too long
        ("zz" * 32, "cn=scanner,o=acme"),  # subjects compare exactly
        ("", "CN=scanner, O=Acme"),
        ("", "O=Acme,CN=scanner"),
    ],
)
def test_unknown_certificates_identify_no_client(fingerprint: str, subject: str) -> None:
    assert ClientCertificates.from_toml(CLIENTS).identify(fingerprint, subject) is None


def test_a_real_certificate_is_identified_as_the_transport_describes_it(tmp_path: Path) -> None:
    ca = make_root_ca(tmp_path)
    leaf = make_leaf(tmp_path, ca, common_name="ci-runner", email=None)
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    fingerprint = hashlib.sha256(der).hexdigest()
    subject = leaf.cert.subject.rfc4514_string()
    assert subject == "CN=ci-runner,O=Bastion Tests"
    document = f"""
[[clients]]
name = "by-fingerprint"
sha256 = "{fingerprint.upper()}"
roles = ["publisher:vision"]

[[clients]]
name = "by-subject"
subject = "{subject}"
roles = ["consumer:vision"]
"""
    clients = ClientCertificates.from_toml(document)
    by_fingerprint = clients.identify(fingerprint, subject)
    assert by_fingerprint is not None
    assert by_fingerprint.name == "by-fingerprint"
    other = make_leaf(tmp_path, ca, common_name="ci-runner", email=None, stem="other")
    other_fingerprint = hashlib.sha256(other.cert.public_bytes(serialization.Encoding.DER))
    by_subject = clients.identify(other_fingerprint.hexdigest(), subject)
    assert by_subject is not None
    assert by_subject.name == "by-subject"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[[clients]", "not valid TOML"),
        ("", "no \\[\\[clients\\]\\] table"),
        ("clients = []", "no \\[\\[clients\\]\\] table"),
        ("clients = 'x'", "no \\[\\[clients\\]\\] table"),
        ("clients = ['x']", "client #1 must be a \\[\\[clients\\]\\] table"),
        ("[other]\n[[clients]]\nname='a'", "unknown top-level"),
        (
            "[[clients]]\nname='a'\nsha256='" + "a" * 64 + "'\nroles='admin:*'\nrole='x'",
            "#1.*'role'",
        ),
        ("[[clients]]\nsha256='" + "a" * 64 + "'\nroles='admin:*'", "#1: 'name'"),
        ("[[clients]]\nname='CI Runner'\nsha256='" + "a" * 64 + "'\nroles='admin:*'", "'name'"),
        ("[[clients]]\nname='a..b'\nsha256='" + "a" * 64 + "'\nroles='admin:*'", "'name'"),
        ("[[clients]]\nname='a'\nroles='admin:*'", "exactly one of"),
        (
            "[[clients]]\nname='a'\nsha256='" + "a" * 64 + "'\nsubject='CN=a'\nroles='admin:*'",
            "one",
        ),
        ("[[clients]]\nname='a'\nsha256='abc'\nroles='admin:*'", "64 hex"),
        ("[[clients]]\nname='a'\nsha256='" + "g" * 64 + "'\nroles='admin:*'", "64 hex"),
        ("[[clients]]\nname='a'\nsha256='" + "a:" * 32 + "'\nroles='admin:*'", "64 hex"),
        ("[[clients]]\nname='a'\nsha256=5\nroles='admin:*'", "64 hex"),
        ("[[clients]]\nname='a'\nsubject='ci-runner'\nroles='admin:*'", "RFC 4514"),
        ("[[clients]]\nname='a'\nsubject=\"CN=a\\nO=b\"\nroles='admin:*'", "RFC 4514"),
        ("[[clients]]\nname='a'\nsubject=''\nroles='admin:*'", "RFC 4514"),
        ("[[clients]]\nname='a'\nsubject='CN=a'", "'roles' is required"),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles=[]", "non-empty"),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles=['owner:*']", 'not "role:namespace"'),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles=['admin:Bad']", "namespace name"),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles='admin:*'\nscope=[]", "'scope'"),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles='admin:*'\nscope=['fly']", "'fly'"),
        ("[[clients]]\nname='a'\nsubject='CN=a'\nroles='admin:*'\nscope=5", "'scope'"),
    ],
)
def test_bad_documents_are_input_errors_naming_the_table(document: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ClientCertificates.from_toml(document)


def test_duplicates_are_refused() -> None:
    one = "[[clients]]\nname='a'\nsubject='CN=a'\nroles='admin:*'\n"
    with pytest.raises(InputError, match="'a' is listed twice"):
        ClientCertificates.from_toml(one + one.replace("CN=a", "CN=b"))
    with pytest.raises(InputError, match="'a' and 'b' name the same certificate"):
        ClientCertificates.from_toml(one + one.replace("'a'", "'b'"))
    fp = "[[clients]]\nname='{}'\nsha256='{}'\nroles='admin:*'\n"
    with pytest.raises(InputError, match="same certificate"):
        ClientCertificates.from_toml(
            fp.format("a", "AB" * 32) + fp.format("b", ":".join(["ab"] * 32))
        )


def test_fingerprints_are_normalized() -> None:
    assert normalize_fingerprint(COLONS) == FINGERPRINT
    assert normalize_fingerprint(FINGERPRINT.upper()) == FINGERPRINT
    assert normalize_fingerprint("3f:" + "3f" * 31) is None  # colons all the way or not at all
    assert normalize_fingerprint(FINGERPRINT + "\n") is None


# --- property-based: a client list or an InputError, never anything else ----------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from(["admin:*", "consumer:vision", "publish", "*", "CN=a", "ab" * 32, COLONS])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_TABLES = st.dictionaries(
    st.sampled_from(["name", "sha256", "subject", "roles", "scope", "other"]),
    _VALUES | st.sampled_from(["a", "runner-1"]),
)


@given(st.lists(_TABLES | _VALUES, max_size=4))
def test_random_client_tables_give_clients_or_an_input_error(tables: list[Any]) -> None:
    try:
        clients = ClientCertificates.from_document({"clients": tables})
    except InputError:
        return
    for client in clients.clients:
        assert client.roles
        assert client.scope


@given(
    st.text(max_size=300)
    | st.lists(
        st.sampled_from(
            [
                "[[clients]]",
                "name = 'a'",
                "name = 'b'",
                f"sha256 = '{COLONS}'",
                "subject = 'CN=a'",
                "roles = ['admin:*']",
                "roles = 'x'",
                "scope = '*'",
                "scope = ['browse', 'fly']",
                "[clients]",
                "other = 1",
                "= broken",
            ]
        ),
        max_size=12,
    ).map("\n".join)
)
def test_random_toml_documents_give_clients_or_an_input_error(text: str) -> None:
    try:
        clients = ClientCertificates.from_toml(text)
    except InputError:
        return
    assert clients.clients


@given(st.text(max_size=100), st.text(max_size=100))
def test_identify_never_fails_on_odd_input(fingerprint: str, subject: str) -> None:
    found = ClientCertificates.from_toml(CLIENTS).identify(fingerprint, subject)
    known = subject == "CN=scanner,O=Acme" or normalize_fingerprint(fingerprint) is not None
    assert found is None or known
