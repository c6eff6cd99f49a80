"""Signing with X.509 certificates, and verifying a chain at the recorded signing time.

Every PKI is built fresh by ``tests.support.pki``. Time is controlled with the
``now=`` arguments: ``sign(now=T)`` records T as the signing time, and the
chain is validated at that recorded time, not at the time of verification.

A bundle whose recorded signing time lies outside the leaf's window is made by
:func:`sign_recording_time`: sign normally, then record another signing time
and re-sign the envelope with the leaf's key, as a signer whose clock was
wrong would. ``sign`` itself refuses to record a signing time outside the
leaf's window.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import bastion
from bastion.signing import TrustPolicy
from tests.support.pki import (
    KEY_TYPES,
    PKI,
    Issued,
    KeyType,
    make_intermediate_ca,
    make_key,
    make_leaf,
    make_pki,
    make_root_ca,
    write_key,
)

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
EMAIL = "release-bot@example.com"
URI = "https://ci.example.com/pipelines/release"
COMMON_NAME = "Release Bot"
ANY = ["*"]  # a CA needs its accepted identities written out; "*" accepts any


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"layers": 2}\n')
    (root / "weights" / "part-0.bin").write_bytes(bytes(range(256)) * 4)
    return root


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path / "pki", email=EMAIL, uri=URI)


def sign_with(
    model: Path, leaf: Issued, chain: list[Issued], signature: Path, **kwargs: object
) -> bastion.SignResult:
    return bastion.sign(
        model,
        leaf.key_path,
        certificate=leaf.cert_path,
        chain=[c.cert_path for c in chain],
        signature_path=signature,
        **kwargs,  # type: ignore[arg-type]
    )


def replace_leaf(signature: Path, cert: x509.Certificate) -> None:
    """Swap the leaf certificate in a bundle; the DSSE signature does not cover it."""
    bundle = json.loads(signature.read_bytes())
    chain = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    chain[0]["rawBytes"] = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    signature.write_text(json.dumps(bundle))


def pae(payload: bytes, payload_type: str) -> bytes:
    """DSSE pre-authentication encoding (DSSE v1 protocol), written out independently."""
    return b"DSSEv1 %d %s %d %s" % (
        len(payload_type),
        payload_type.encode(),
        len(payload),
        payload,
    )


def sign_recording_time(
    model: Path, leaf: Issued, chain: list[Issued], signature: Path, signed_at: datetime
) -> None:
    """A valid certificate signature whose recorded signing time is ``signed_at``."""
    sign_with(model, leaf, chain, signature)
    bundle = json.loads(signature.read_bytes())
    envelope = bundle["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["bastion"]["signed_at"] = f"{signed_at:%Y-%m-%dT%H:%M:%SZ}"
    payload = json.dumps(statement, indent=2).encode()
    key = bastion.PrivateKey.from_pem(leaf.key_path.read_bytes())
    envelope["payload"] = base64.b64encode(payload).decode()
    envelope["signatures"] = [
        {"keyid": keyid, "sig": base64.b64encode(sig).decode()}
        for keyid, sig in key.sign(pae(payload, envelope["payloadType"]))
    ]
    signature.write_text(json.dumps(bundle))


def fails(model: Path, signature: Path, **kwargs: object) -> bastion.VerificationError:
    with pytest.raises(bastion.VerificationError) as info:
        bastion.verify(model, signatures=[signature], **kwargs)  # type: ignore[arg-type]
    return info.value


# --- what works --------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_certificate_signature_verifies_for_every_leaf_key_type(
    tmp_path: Path, model_dir: Path, pki: PKI, key_type: KeyType
) -> None:
    leaf = make_leaf(tmp_path / "pki", pki.intermediate, key_type=key_type, email=EMAIL)
    sig = tmp_path / "model.sig"
    signed = sign_with(model_dir, leaf, [pki.intermediate], sig)
    assert signed.algorithm == key_type

    result = bastion.verify(model_dir, ca=pki.root.cert_path, identities=[EMAIL], signatures=[sig])
    assert result.ok
    (signer,) = result.signers
    assert signer.kind == "certificate"
    assert signer.algorithm == key_type
    assert signer.key_fingerprint == signed.key_fingerprint
    assert EMAIL in signer.identities
    assert signer.signed_at == signed.signed_at


def test_ed25519_leaf_works(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    leaf = make_leaf(tmp_path / "pki", pki.intermediate, key_type="ed25519", stem="ed")
    sig = tmp_path / "model.sig"
    sign_with(model_dir, leaf, [pki.intermediate], sig)
    result = bastion.verify(model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig])
    assert result.signers[0].algorithm == "ed25519"


@pytest.mark.parametrize("identity", [EMAIL, URI, "Test Signer"])
def test_identity_from_san_email_uri_or_common_name_is_accepted(
    tmp_path: Path, model_dir: Path, pki: PKI, identity: str
) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    result = bastion.verify(
        model_dir,
        ca=pki.root.cert_path,
        identities=["someone@example.com", identity],
        signatures=[sig],
    )
    assert set(result.signers[0].identities) == {EMAIL, URI, "Test Signer"}


def test_extended_key_usage_code_signing_without_key_usage_verifies(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, digital_signature=None, code_signing=True, stem="eku"
    )
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.KeyUsage)
    sig = tmp_path / "model.sig"
    sign_with(model_dir, leaf, [pki.intermediate], sig)
    assert bastion.verify(model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig]).ok


def test_leaf_valid_at_signing_time_but_expired_now_still_verifies(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    """The chain is checked at the recorded signing time: a later expiry does not matter."""
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - DAY, not_after=NOW + 30 * DAY
    )
    sig = tmp_path / "model.sig"
    signed = sign_with(model_dir, leaf, [pki.intermediate], sig, now=NOW)
    a_year_later = NOW + 365 * DAY
    assert a_year_later > leaf.cert.not_valid_after_utc
    result = bastion.verify(
        model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig], now=a_year_later
    )
    assert result.ok
    assert result.signers[0].signed_at == signed.signed_at == NOW


def test_recorded_signing_time_inside_the_window_verifies(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    """The control for the expiry tests below: the same construction, inside the window."""
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - DAY, not_after=NOW + 30 * DAY
    )
    sig = tmp_path / "model.sig"
    signed_at = NOW + 10 * DAY
    sign_recording_time(model_dir, leaf, [pki.intermediate], sig, signed_at)
    result = bastion.verify(
        model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig], now=signed_at
    )
    assert result.signers[0].signed_at == signed_at


def test_trust_policy_with_certificate_roots(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    policy = TrustPolicy.for_roots([pki.root.cert], [EMAIL])
    assert bastion.verify(model_dir, trust=policy, signatures=[sig]).ok

    # From TOML: an entry for another CA first, then the right one.
    other = make_root_ca(tmp_path / "other", common_name="Other Root")
    toml = (
        "version = 1\n"
        "[[certificates]]\n"
        f'name = "other"\nroots_path = "{other.cert_path}"\nidentities = ["*"]\n'
        "[[certificates]]\n"
        f'name = "corp"\nroots_path = "{pki.root.cert_path}"\nidentities = ["{EMAIL}"]\n'
    )
    result = bastion.verify(model_dir, trust=TrustPolicy.from_toml(toml), signatures=[sig])
    assert result.signers[0].name == "corp"


def test_one_key_trusted_as_a_key_and_through_a_ca_counts_once(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    public = bastion.PrivateKey.from_pem(pki.leaf.key_path.read_bytes()).public_key
    toml = (
        "version = 1\nthreshold = 2\n"
        f"[[keys]]\nname = 'bot-key'\npublic_key = '''{public.pem.decode()}'''\n"
        f"[[certificates]]\nname = 'corp'\nroots_path = '{pki.root.cert_path}'\n"
        "identities = ['*']\n"
    )
    as_key, as_cert = tmp_path / "key.sig", tmp_path / "cert.sig"
    bastion.sign(model_dir, pki.leaf.key_path, signature_path=as_key)
    sign_with(model_dir, pki.leaf, [pki.intermediate], as_cert)
    with pytest.raises(bastion.VerificationError, match="come from 1 distinct key"):
        bastion.verify(model_dir, trust=TrustPolicy.from_toml(toml), signatures=[as_key, as_cert])


# --- what fails at verification: VerificationError, exit 1 -------------------


def test_leaf_expired_at_signing_time_fails(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - DAY, not_after=NOW + 30 * DAY
    )
    sig = tmp_path / "model.sig"
    signed_at = NOW + 60 * DAY  # after the leaf's notAfter, while its CAs are still valid
    sign_recording_time(model_dir, leaf, [pki.intermediate], sig, signed_at)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY, now=signed_at + DAY)
    assert "certificate not trusted" in err.message
    assert f"signing time {signed_at:%Y-%m-%dT%H:%M:%SZ}" in err.message
    assert "not valid" in err.message
    assert err.exit_code == 1
    assert err.code == "verification_failed"


def test_leaf_not_yet_valid_at_signing_time_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - DAY, not_after=NOW + 30 * DAY
    )
    sig = tmp_path / "model.sig"
    signed_at = NOW - 10 * DAY  # before the leaf's notBefore, while its CAs were valid
    sign_recording_time(model_dir, leaf, [pki.intermediate], sig, signed_at)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY, now=NOW)
    assert f"signing time {signed_at:%Y-%m-%dT%H:%M:%SZ}" in err.message
    assert "not valid" in err.message


def test_intermediate_expired_at_signing_time_fails(tmp_path: Path, model_dir: Path) -> None:
    root = make_root_ca(tmp_path / "pki")
    intermediate = make_intermediate_ca(
        tmp_path / "pki", root, not_before=NOW - 30 * DAY, not_after=NOW + DAY
    )
    leaf = make_leaf(tmp_path / "pki", intermediate)  # valid for a year
    sig = tmp_path / "model.sig"
    signed_at = NOW + 10 * DAY
    sign_recording_time(model_dir, leaf, [intermediate], sig, signed_at)
    err = fails(model_dir, sig, ca=root.cert_path, identities=ANY, now=signed_at)
    assert "not valid" in err.message


def test_signing_time_in_the_future_fails(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig, now=NOW + timedelta(hours=1))
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY, now=NOW)
    assert "in the future" in err.message


def test_key_usage_without_digital_signature_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    """A certificate for the same key, re-issued without digitalSignature, may not sign."""
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    reissued = make_leaf(
        tmp_path / "pki", pki.intermediate, key=pki.leaf.key, digital_signature=False, stem="ku"
    )
    assert not reissued.cert.extensions.get_extension_for_class(
        x509.KeyUsage
    ).value.digital_signature
    replace_leaf(sig, reissued.cert)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert "key usage does not allow signing" in err.message


def test_neither_key_usage_nor_code_signing_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    reissued = make_leaf(
        tmp_path / "pki",
        pki.intermediate,
        key=pki.leaf.key,
        digital_signature=None,
        code_signing=False,
        stem="bare",
    )
    replace_leaf(sig, reissued.cert)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert "neither digitalSignature nor codeSigning" in err.message


def test_certificate_swapped_for_another_key_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    """A valid certificate of the same CA, for another key, does not vouch for this signature."""
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    other = make_leaf(tmp_path / "pki", pki.intermediate, stem="other")
    replace_leaf(sig, other.cert)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert "does not match its certificate" in err.message


def test_chain_to_an_untrusted_root_fails(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    other = make_root_ca(tmp_path / "other", common_name="Other Root")
    err = fails(model_dir, sig, ca=other.cert_path, identities=ANY)
    assert "certificate not trusted" in err.message
    assert err.exit_code == 1


def test_impostor_intermediate_with_the_trusted_name_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    """Names are not enough: an intermediate with the right name from another root fails."""
    rogue_root = make_root_ca(tmp_path / "rogue", common_name="Rogue Root")
    rogue_intermediate = make_intermediate_ca(tmp_path / "rogue", rogue_root)
    assert rogue_intermediate.cert.subject == pki.intermediate.cert.subject
    leaf = make_leaf(tmp_path / "rogue", rogue_intermediate, email=EMAIL)
    sig = tmp_path / "model.sig"
    sign_with(model_dir, leaf, [rogue_intermediate], sig)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=[EMAIL])
    assert "certificate not trusted" in err.message


def test_missing_intermediate_fails(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [], sig)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert "certificate not trusted" in err.message


def test_leaf_cannot_act_as_a_ca(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    grandchild = make_leaf(tmp_path / "pki", pki.leaf, stem="grandchild")
    sig = tmp_path / "model.sig"
    sign_with(model_dir, grandchild, [pki.leaf, pki.intermediate], sig)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert "certificate not trusted" in err.message


def test_identity_mismatch_fails(tmp_path: Path, model_dir: Path, pki: PKI) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=["someone-else@example.com"])
    assert "not trusted" in err.message
    assert EMAIL in err.message  # says which identity the certificate has


def test_certificate_signature_over_a_modified_model_fails(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    (model_dir / "weights" / "part-0.bin").write_bytes(b"\x00" * 1024)
    err = fails(model_dir, sig, ca=pki.root.cert_path, identities=ANY)
    assert err.result is not None
    assert err.result.modified == ("weights/part-0.bin",)


def test_a_ca_without_identities_is_a_usage_error(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    # "*" must be written out, as in a trust policy; no default accepts any identity.
    sig = tmp_path / "model.sig"
    sign_with(model_dir, pki.leaf, [pki.intermediate], sig)
    with pytest.raises(bastion.UsageError, match=r"identities=\['\*'\]") as info:
        bastion.verify(model_dir, ca=pki.root.cert_path, signatures=[sig])
    assert info.value.exit_code == 2
    assert bastion.verify(model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig]).ok


# --- what is refused at signing: InputError, exit 2 ---------------------------


def test_certificate_not_matching_the_private_key_is_refused(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    stranger = write_key(make_key("ecdsa-p256"), tmp_path / "stranger.key")
    with pytest.raises(bastion.InputError) as info:
        bastion.sign(
            model_dir,
            stranger,
            certificate=pki.leaf.cert_path,
            chain=[pki.intermediate.cert_path],
            signature_path=tmp_path / "model.sig",
        )
    assert not isinstance(info.value, bastion.VerificationError)
    assert "does not match the private key" in info.value.message
    assert info.value.exit_code == 2
    assert not (tmp_path / "model.sig").exists()


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 30 * DAY, NOW - DAY), (NOW + DAY, NOW + 30 * DAY)],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_not_valid_now_is_refused(
    tmp_path: Path, model_dir: Path, pki: PKI, not_before: datetime, not_after: datetime
) -> None:
    leaf = make_leaf(tmp_path / "pki", pki.intermediate, not_before=not_before, not_after=not_after)
    with pytest.raises(bastion.InputError) as info:
        sign_with(model_dir, leaf, [pki.intermediate], tmp_path / "model.sig")
    assert "valid only from" in info.value.message
    assert info.value.exit_code == 2


def test_unreadable_certificate_is_an_input_error(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(bastion.CertificateFormatError) as info:
        bastion.sign(model_dir, pki.leaf.key_path, certificate=junk)
    assert info.value.exit_code == 2


def test_hybrid_key_with_a_certificate_is_a_usage_error(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    with pytest.raises(bastion.UsageError):
        bastion.sign(
            model_dir,
            bastion.generate_key("hybrid"),
            certificate=pki.leaf.cert_path,
            signature_path=tmp_path / "model.sig",
        )


@pytest.mark.parametrize(
    ("digital_signature", "code_signing"),
    [(False, True), (None, False)],
    ids=["key-usage-without-digitalSignature", "no-usage-at-all"],
)
def test_certificate_that_may_not_sign_is_refused_as_input_error(
    tmp_path: Path,
    model_dir: Path,
    pki: PKI,
    digital_signature: bool | None,
    code_signing: bool,
) -> None:
    leaf = make_leaf(
        tmp_path / "pki",
        pki.intermediate,
        digital_signature=digital_signature,
        code_signing=code_signing,
        stem="cannot-sign",
    )
    with pytest.raises(bastion.InputError) as info:
        sign_with(model_dir, leaf, [pki.intermediate], tmp_path / "model.sig")
    assert info.value.exit_code == 2


# --- the certificate window is checked at the signing time ---------------------


def test_sign_refuses_a_signing_time_outside_the_certificate_window(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - DAY, not_after=NOW + 30 * DAY
    )
    with pytest.raises(bastion.InputError):
        sign_with(model_dir, leaf, [pki.intermediate], tmp_path / "model.sig", now=NOW + 60 * DAY)


def test_sign_accepts_a_certificate_valid_at_the_given_time(
    tmp_path: Path, model_dir: Path, pki: PKI
) -> None:
    leaf = make_leaf(
        tmp_path / "pki", pki.intermediate, not_before=NOW - 60 * DAY, not_after=NOW - 30 * DAY
    )
    sig = tmp_path / "model.sig"
    sign_with(model_dir, leaf, [pki.intermediate], sig, now=NOW - 45 * DAY)
    assert bastion.verify(model_dir, ca=pki.root.cert_path, identities=ANY, signatures=[sig]).ok
