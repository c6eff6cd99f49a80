"""Every key type signs and verifies; key files and passphrases fail clearly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import bastion
from bastion.errors import KeyFormatError, PassphraseError, VerificationError
from bastion.signing import KEY_TYPES, PrivateKey, PublicKey, TrustPolicy, generate_key


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_every_key_type_signs_and_verifies(model: Path, key_type: str) -> None:
    key = generate_key(key_type)  # type: ignore[arg-type]
    signed = bastion.sign(model, key)
    result = bastion.verify(model, public_key=key.public_key)
    assert result.signers[0].algorithm == signed.algorithm
    assert result.root_digest == signed.root_digest


def test_encrypted_key_file_round_trip(model: Path, tmp_path: Path) -> None:
    key = generate_key("ed25519")
    path = tmp_path / "k.key"
    path.write_bytes(key.to_pem(b"correct horse"))
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    bastion.sign(model, path, passphrase=b"correct horse")
    assert bastion.verify(model, public_key=key.public_key).ok
    with pytest.raises(PassphraseError, match="wrong passphrase") as info:
        bastion.sign(model, path, passphrase=b"wrong")
    assert info.value.exit_code == 2
    with pytest.raises(PassphraseError, match="encrypted"):
        bastion.sign(model, path)


def test_public_key_given_as_private_key(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    path.write_bytes(generate_key("ecdsa-p256").public_key.pem)
    with pytest.raises(KeyFormatError, match=r"not a private key; pass the \.key file"):
        bastion.sign(model, path)


def test_private_key_given_as_public_key(model: Path, key: PrivateKey, tmp_path: Path) -> None:
    bastion.sign(model, key)
    path = tmp_path / "k.key"
    path.write_bytes(key.to_pem(None))
    with pytest.raises(KeyFormatError, match="not a public key"):
        bastion.verify(model, public_key=path)


def test_unsupported_key_types(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match="not supported"):
        PrivateKey.from_pem(pem)
    k1 = ec.generate_private_key(ec.SECP192R1()).public_key()
    with pytest.raises(KeyFormatError, match="not supported"):
        PublicKey.from_pem(
            k1.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _drop_signature(sig: Path, index: int) -> None:
    bundle = json.loads(sig.read_bytes())
    del bundle["dsseEnvelope"]["signatures"][index]
    sig.write_text(json.dumps(bundle))


@pytest.mark.parametrize("dropped", [0, 1])
def test_hybrid_needs_both_signatures(model: Path, dropped: int) -> None:
    key = generate_key("hybrid")
    bastion.sign(model, key)
    _drop_signature(model / "model.sig", dropped)
    with pytest.raises(VerificationError, match="not valid"):
        bastion.verify(model, public_key=key.public_key)


def test_hybrid_bundle_is_readable_as_its_classical_half(model: Path) -> None:
    # The classical signature comes first with the classical key's hint, so a
    # verifier that trusts only that key (as the reference tool does) accepts it.
    key = generate_key("hybrid")
    bastion.sign(model, key)
    classical = PublicKey(key.public_key.parts[:1])
    result = bastion.verify(model, public_key=classical)
    assert result.signers[0].algorithm == "ecdsa-p384"
    bundle = json.loads((model / "model.sig").read_bytes())
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == classical.hint
    assert len(bundle["dsseEnvelope"]["signatures"]) == 2
    assert base64.b64decode(bundle["dsseEnvelope"]["payload"]).startswith(b"{")


def _two_key_policy(a: PrivateKey, b: PrivateKey) -> TrustPolicy:
    return TrustPolicy.from_toml(
        "version = 1\nthreshold = 2\n"
        f"[[keys]]\nname = 'alice'\npublic_key = '''{a.public_key.pem.decode()}'''\n"
        f"[[keys]]\nname = 'bob'\npublic_key = '''{b.public_key.pem.decode()}'''\n"
    )


def test_threshold_counts_distinct_signers(
    model: Path, key: PrivateKey, other_key: PrivateKey, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice.sig", tmp_path / "bob.sig"
    bastion.sign(model, key, signature_path=alice)
    bastion.sign(model, other_key, signature_path=bob)
    policy = _two_key_policy(key, other_key)
    result = bastion.verify(model, trust=policy, signatures=[alice, bob])
    assert sorted(s.name for s in result.signers) == ["alice", "bob"]
    with pytest.raises(VerificationError, match="2 distinct trusted signers"):
        bastion.verify(model, trust=policy, signatures=[alice])
    with pytest.raises(VerificationError, match="2 distinct trusted signers"):
        bastion.verify(model, trust=policy, signatures=[alice, alice])
    (model / "weights/part-0.bin").write_bytes(b"changed")
    with pytest.raises(VerificationError, match="modified"):
        bastion.verify(model, trust=policy, signatures=[alice, bob])


def test_threshold_counts_a_hybrid_key_and_its_classical_half_once(model: Path) -> None:
    hybrid = generate_key("hybrid")
    classical = PrivateKey(hybrid.keys[:1])
    policy = TrustPolicy.from_toml(
        "version = 1\nthreshold = 2\n"
        f"[[keys]]\nname = 'hybrid'\npublic_key = '''{hybrid.public_key.pem.decode()}'''\n"
        f"[[keys]]\nname = 'classical'\npublic_key = '''{classical.public_key.pem.decode()}'''\n"
    )
    both, half = model.parent / "both.sig", model.parent / "half.sig"
    bastion.sign(model, hybrid, signature_path=both)
    bastion.sign(model, classical, signature_path=half)
    with pytest.raises(VerificationError, match="come from 1 distinct key"):
        bastion.verify(model, trust=policy, signatures=[both, half])


def test_cosignatures_inside_the_model_live_in_an_ignored_folder(
    model: Path, key: PrivateKey, other_key: PrivateKey
) -> None:
    folder = model / "signatures"
    bastion.sign(model, key, signature_path=folder / "alice.sig", ignore_paths=["signatures"])
    bastion.sign(model, other_key, signature_path=folder / "bob.sig", ignore_paths=["signatures"])
    policy = _two_key_policy(key, other_key)
    both = [folder / "alice.sig", folder / "bob.sig"]
    assert bastion.verify(model, trust=policy, signatures=both).ok


def test_a_stray_file_beside_the_signature_is_reported(
    model: Path, key: PrivateKey, other_key: PrivateKey
) -> None:
    # Only the signatures being checked are left out of the comparison.
    bastion.sign(model, key, signature_path=model / "alice.sig")
    bastion.sign(model, other_key, signature_path=model / "bob.sig")
    with pytest.raises(VerificationError, match=r"1 added \(bob.sig\)"):
        bastion.verify(model, public_key=key.public_key, signatures=[model / "alice.sig"])


def test_policy_restricts_algorithms(model: Path, key: PrivateKey) -> None:
    bastion.sign(model, key)
    policy = TrustPolicy.from_toml(
        "version = 1\nalgorithms = ['ml-dsa-65']\n"
        f"[[keys]]\nname = 'k'\npublic_key = '''{key.public_key.pem.decode()}'''\n"
    )
    with pytest.raises(VerificationError, match="not allowed"):
        bastion.verify(model, trust=policy)


def test_policy_reads_key_files_relative_to_itself(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    bastion.sign(model, key)
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy/release.pub").write_bytes(key.public_key.pem)
    policy_file = tmp_path / "policy/trust.toml"
    policy_file.write_text("version = 1\n[[keys]]\nname = 'release'\npath = 'release.pub'\n")
    result = bastion.verify(model, trust=TrustPolicy.from_file(policy_file))
    assert result.signers[0].name == "release"
