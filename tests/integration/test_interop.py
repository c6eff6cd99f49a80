"""Interoperability with the reference tool, model-signing 1.1.1, in both directions.

The reference runs as a separate process (its CLI, or its Python API under
``sys.executable``), so nothing it imports or warns about leaks into this
process; Bastion runs in-process through its CLI entry point,
``bastion.cli.main``, which returns the exit code.

Root digests: the reference orders resources by path *components*
(``a/b``, ``a-b/x``, ``a.txt``: ``["a", "b"] < ["a-b", "x"] < ["a.txt"]``),
whereas the OMS specification says code-point order of the names
(``a-b/x``, ``a.txt``, ``a/b``: ``"-" < "." < "/"``). Bastion follows the
reference, so that both tools compute the same root digest for the same tree;
the golden tests below pin that order and digest as literal constants.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.cli import main
from tests.support.pki import PKI, Issued, KeyType, make_key, make_pki, make_root_ca, write_key

REFERENCE = Path(sys.executable).parent / "model_signing"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not REFERENCE.exists(), reason=f"reference tool not installed at {REFERENCE}"
    ),
]

EC_KEY_TYPES: tuple[KeyType, ...] = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521")

#: A small model: nested folders, a hidden file (signed), and git metadata (ignored).
MODEL_FILES: dict[str, bytes] = {
    "config.json": b'{"hidden_size": 8}\n',
    "weights/layer-0.bin": bytes(range(256)) * 8,
    "weights/nested/deep/layer-1.bin": b"\x07" * 3000,
    "tokenizer/vocab.txt": b"hello\nworld\n",
    ".cache/x": b"hidden files are part of the model\n",
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".git/objects/ab/cdef0123": b"not part of the model",
}
#: What both tools sign of MODEL_FILES, in manifest order.
MODEL_RESOURCES = [
    ".cache/x",
    "config.json",
    "tokenizer/vocab.txt",
    "weights/layer-0.bin",
    "weights/nested/deep/layer-1.bin",
]

# --- the golden tree -------------------------------------------------------
#
# Names chosen so that component order and code-point order disagree, and one
# file of 11,500 bytes that splits into 12 shards of (at most) 1,000 bytes.
# The constants below were computed once with model-signing 1.1.1 and with
# Bastion, which agreed; they must never change without a format decision.
GOLDEN_FILES: dict[str, bytes] = {
    "a/b": b"alpha\n",
    "a-b/x": b"bravo\n",
    "a.txt": b"charlie\n",
    "weights.bin": bytes(i % 251 for i in range(11_500)),
}
GOLDEN_SHARD_SIZE = 1000
GOLDEN_ORDER_FILES = ["a/b", "a-b/x", "a.txt", "weights.bin"]
GOLDEN_ORDER_SHARDS = [
    "a/b:0:6",
    "a-b/x:0:6",
    "a.txt:0:8",
    *(f"weights.bin:{start}:{start + 1000}" for start in range(0, 11_000, 1000)),
    "weights.bin:11000:11500",
]
GOLDEN_DIGEST_FILES = "sha256:a50c522141f3a383763406a15fbe3a6d672627d78d262eab7eaf8d165a1d1e88"
GOLDEN_DIGEST_SHARDS = "sha256:1d8aadcbfaf92b638ebc8554b71841acf4c8724d1f0f41e6309526235169e8fe"

#: Sign with the reference's Python API in shards mode: model, key, signature, shard size.
REFERENCE_SHARD_SIGNER = """
import sys
from model_signing import hashing, signing
model, key, signature, shard_size = sys.argv[1:]
config = hashing.Config().use_shard_serialization(shard_size=int(shard_size))
signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(config).sign(
    model, signature
)
"""


# --- helpers ---------------------------------------------------------------


def build_model(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def reference(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the reference CLI; never raises on a non-zero exit."""
    return subprocess.run(
        [str(REFERENCE), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def reference_shard_sign(model: Path, key: Path, signature: Path, shard_size: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE_SHARD_SIGNER, model, key, signature, str(shard_size)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def bastion(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``bastion ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def ec_key_pair(directory: Path, key_type: KeyType) -> tuple[Path, Path]:
    """An unencrypted PKCS#8 private key and its SubjectPublicKeyInfo public key."""
    key = make_key(key_type)
    private = write_key(key, directory / f"{key_type}.key")
    public = directory / f"{key_type}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def bastion_keygen(capsys: pytest.CaptureFixture[str], prefix: Path, key_type: str) -> Path:
    code, _, err = bastion(capsys, "keygen", "--type", key_type, "--out", prefix, "--unencrypted")
    assert code == 0, err
    return prefix


def read_bundle(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def statement(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(base64.b64decode(read_bundle(path)["dsseEnvelope"]["payload"]))
    return doc


def resource_names(path: Path) -> list[str]:
    return [r["name"] for r in statement(path)["predicate"]["resources"]]


def subject_digest(path: Path) -> str:
    return "sha256:" + statement(path)["subject"][0]["digest"]["sha256"]


def pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END PUBLIC KEY-----\n"
    return [block + end for block in data.split(end) if block.strip()]


# --- reference signs, Bastion verifies -------------------------------------


@pytest.mark.parametrize("key_type", EC_KEY_TYPES)
def test_reference_key_signature_verifies_with_bastion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: KeyType
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    private, public = ec_key_pair(tmp_path, key_type)
    sig = tmp_path / "model.sig"
    done = reference("sign", "key", model, "--private_key", private, "--signature", sig)
    assert done.returncode == 0, done.stderr
    # Both tools sign hidden files and leave .git out.
    assert resource_names(sig) == MODEL_RESOURCES
    code, out, err = bastion(capsys, "digest", model)
    assert (code, out.strip()) == (0, subject_digest(sig)), err

    code, out, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 0, err
    assert "verified" in out
    assert key_type in out

    # .git is ignored by both: changing it does not matter.
    (model / ".git" / "HEAD").write_bytes(b"ref: refs/heads/other\n")
    code, _, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 0, err

    (model / "weights" / "nested" / "deep" / "layer-1.bin").write_bytes(b"\x08" * 3000)
    code, _, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 1
    assert "modified" in err
    assert "weights/nested/deep/layer-1.bin" in err


def test_reference_signature_inside_the_model_verifies_with_bastion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference records its own signature file as ignored; Bastion finds it by default."""
    model = build_model(tmp_path / "model", MODEL_FILES)
    private, public = ec_key_pair(tmp_path, "ecdsa-p256")
    done = reference(
        "sign", "key", model, "--private_key", private, "--signature", model / "model.sig"
    )
    assert done.returncode == 0, done.stderr
    code, _, err = bastion(capsys, "verify", model, "--public-key", public)
    assert code == 0, err

    (model / ".cache" / "x").write_bytes(b"tampered hidden file\n")
    code, _, err = bastion(capsys, "verify", model, "--public-key", public)
    assert code == 1
    assert ".cache/x" in err


def test_reference_signature_fails_with_another_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    private, _ = ec_key_pair(tmp_path / "signer", "ecdsa-p256")
    _, stranger = ec_key_pair(tmp_path / "stranger", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    assert (
        reference("sign", "key", model, "--private_key", private, "--signature", sig).returncode
        == 0
    )
    code, _, err = bastion(capsys, "verify", model, "--public-key", stranger, "--signature", sig)
    assert code == 1
    assert "verification_failed" in err


# --- Bastion signs, reference verifies -------------------------------------


@pytest.mark.parametrize("key_type", EC_KEY_TYPES)
def test_bastion_key_signature_verifies_with_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: str
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    prefix = bastion_keygen(capsys, tmp_path / "release", key_type)
    code, _, err = bastion(capsys, "sign", model, "--key", f"{prefix}.key")
    assert code == 0, err
    sig = model / "model.sig"
    assert resource_names(sig) == MODEL_RESOURCES

    done = reference("verify", "key", model, "--signature", sig, "--public_key", f"{prefix}.pub")
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout

    (model / "config.json").write_bytes(b'{"hidden_size": 9}\n')
    done = reference("verify", "key", model, "--signature", sig, "--public_key", f"{prefix}.pub")
    assert done.returncode == 1
    assert "Verification failed" in done.stderr


def test_single_file_model_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A single-file model is the resource ``.`` for both tools."""
    model = tmp_path / "model.safetensors"
    model.write_bytes(bytes(range(256)) * 20)
    private, public = ec_key_pair(tmp_path, "ecdsa-p256")
    theirs, ours = tmp_path / "reference.sig", tmp_path / "bastion.sig"
    done = reference("sign", "key", model, "--private_key", private, "--signature", theirs)
    assert done.returncode == 0, done.stderr
    code, _, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", theirs)
    assert code == 0, err

    code, _, err = bastion(capsys, "sign", model, "--key", private, "--signature", ours)
    assert code == 0, err
    assert resource_names(ours) == resource_names(theirs) == ["."]
    assert subject_digest(ours) == subject_digest(theirs)
    done = reference("verify", "key", model, "--signature", ours, "--public_key", public)
    assert done.returncode == 0, done.stderr


# --- certificates, both ways -----------------------------------------------


def reference_sign_certificate(model: Path, sig: Path, pki: PKI, *chain: Issued) -> int:
    """Sign with the reference's certificate method; the number of certificates it bundled."""
    chain_flags = [arg for issued in chain for arg in ("--certificate_chain", issued.cert_path)]
    done = reference(
        "sign",
        "certificate",
        model,
        "--signature",
        sig,
        "--private_key",
        pki.leaf.key_path,
        "--signing_certificate",
        pki.leaf.cert_path,
        *chain_flags,
    )
    assert done.returncode == 0, done.stderr
    material = read_bundle(sig)["verificationMaterial"]
    return len(material["x509CertificateChain"]["certificates"])


@pytest.mark.parametrize("key_type", EC_KEY_TYPES)
def test_reference_certificate_signature_verifies_with_bastion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: KeyType
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    pki = make_pki(tmp_path / "pki", leaf_key_type=key_type, email="release-bot@example.com")
    sig = tmp_path / "model.sig"
    assert reference_sign_certificate(model, sig, pki, pki.intermediate) == 2

    verify = ("verify", model, "--signature", sig, "--ca", pki.root.cert_path)
    code, out, err = bastion(capsys, *verify, "--identity", "*")
    assert code == 0, err
    assert "verified" in out

    code, _, err = bastion(capsys, *verify, "--identity", "release-bot@example.com")
    assert code == 0, err

    code, _, err = bastion(capsys, *verify, "--identity", "someone-else@example.com")
    assert code == 1
    assert "not trusted" in err

    other_root = make_root_ca(tmp_path / "other", common_name="Another Root")
    code, _, err = bastion(
        capsys, "verify", model, "--signature", sig, "--ca", other_root.cert_path, "--identity", "*"
    )
    assert code == 1
    assert "not trusted" in err

    (model / "tokenizer" / "vocab.txt").write_bytes(b"goodbye\n")
    code, _, err = bastion(capsys, *verify, "--identity", "*")
    assert code == 1
    assert "tokenizer/vocab.txt" in err


def test_reference_certificate_chain_including_the_root_verifies_with_bastion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chain file that also holds the root (as many PKIs ship it) is fine."""
    model = build_model(tmp_path / "model", MODEL_FILES)
    pki = make_pki(tmp_path / "pki")
    sig = tmp_path / "model.sig"
    assert reference_sign_certificate(model, sig, pki, pki.intermediate, pki.root) == 3
    code, _, err = bastion(
        capsys, "verify", model, "--signature", sig, "--ca", pki.root.cert_path, "--identity", "*"
    )
    assert code == 0, err


@pytest.mark.parametrize("key_type", EC_KEY_TYPES)
def test_bastion_certificate_signature_verifies_with_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: KeyType
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    pki = make_pki(tmp_path / "pki", leaf_key_type=key_type)
    code, _, err = bastion(
        capsys,
        "sign",
        model,
        "--key",
        pki.leaf.key_path,
        "--cert",
        pki.leaf.cert_path,
        "--chain",
        pki.intermediate.cert_path,
    )
    assert code == 0, err
    sig = model / "model.sig"
    material = read_bundle(sig)["verificationMaterial"]
    assert "publicKey" not in material
    assert len(material["x509CertificateChain"]["certificates"]) == 2

    done = reference(
        "verify",
        "certificate",
        model,
        "--signature",
        sig,
        "--certificate_chain",
        pki.root.cert_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout

    other_root = make_root_ca(tmp_path / "other", common_name="Another Root")
    done = reference(
        "verify",
        "certificate",
        model,
        "--signature",
        sig,
        "--certificate_chain",
        other_root.cert_path,
    )
    assert done.returncode == 1

    # And Bastion agrees with itself on the same bundle.
    code, _, err = bastion(
        capsys, "verify", model, "--ca", pki.root.cert_path, "--identity", "signer@example.com"
    )
    assert code == 0, err


# --- hybrid keys: the classical half is plain OMS --------------------------


def test_hybrid_bundle_classical_half_verifies_with_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    prefix = bastion_keygen(capsys, tmp_path / "hybrid", "hybrid")
    hybrid_pub = Path(f"{prefix}.pub")
    classical_pem, ml_dsa_pem = pem_blocks(hybrid_pub.read_bytes())
    classical_pub = tmp_path / "classical.pub"
    classical_pub.write_bytes(classical_pem)
    classical_key = serialization.load_pem_public_key(classical_pem)
    assert isinstance(classical_key, ec.EllipticCurvePublicKey)
    assert classical_key.curve.name == "secp384r1"

    code, _, err = bastion(capsys, "sign", model, "--key", f"{prefix}.key")
    assert code == 0, err
    sig = model / "model.sig"
    assert len(read_bundle(sig)["dsseEnvelope"]["signatures"]) == 2

    # The reference checks the first (classical, ECDSA P-384) signature only.
    done = reference("verify", "key", model, "--signature", sig, "--public_key", classical_pub)
    assert done.returncode == 0, done.stderr

    code, out, err = bastion(capsys, "verify", model, "--public-key", hybrid_pub)
    assert code == 0, err
    assert "hybrid-ecdsa-p384-ml-dsa-65" in out

    # Bastion needs both halves of a hybrid key: strip either signature and it fails.
    ml_dsa_keyid = hashlib.sha256(ml_dsa_pem).hexdigest()
    bundle = read_bundle(sig)
    signatures = bundle["dsseEnvelope"]["signatures"]
    assert ml_dsa_keyid in {s["keyid"] for s in signatures}
    for keep_ml_dsa in (False, True):
        stripped = tmp_path / f"stripped-{keep_ml_dsa}.sig"
        bundle["dsseEnvelope"]["signatures"] = [
            s for s in signatures if (s["keyid"] == ml_dsa_keyid) is keep_ml_dsa
        ]
        stripped.write_text(json.dumps(bundle))
        code, _, err = bastion(
            capsys, "verify", model, "--public-key", hybrid_pub, "--signature", stripped
        )
        assert code == 1, f"verified without the {'classical' if keep_ml_dsa else 'ML-DSA'} half"
        assert "verification_failed" in err

    # Without its ML-DSA signature, the bundle is still a valid classical OMS bundle.
    stripped_classical = tmp_path / "stripped-False.sig"
    done = reference(
        "verify", "key", model, "--signature", stripped_classical, "--public_key", classical_pub
    )
    assert done.returncode == 0, done.stderr


# --- root digests: parity and golden constants -----------------------------


def test_golden_root_digest_files_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model(tmp_path / "golden", GOLDEN_FILES)
    code, out, err = bastion(capsys, "digest", model)
    assert code == 0, err
    assert out.strip() == GOLDEN_DIGEST_FILES

    key, _ = ec_key_pair(tmp_path, "ecdsa-p256")
    ours, theirs = tmp_path / "bastion.sig", tmp_path / "reference.sig"
    code, _, err = bastion(capsys, "sign", model, "--key", key, "--signature", ours)
    assert code == 0, err
    done = reference("sign", "key", model, "--private_key", key, "--signature", theirs)
    assert done.returncode == 0, done.stderr

    # Component order (the reference's), not code-point order (the spec's).
    assert sorted(GOLDEN_ORDER_FILES) == ["a-b/x", "a.txt", "a/b", "weights.bin"]
    assert resource_names(ours) == GOLDEN_ORDER_FILES
    assert resource_names(theirs) == GOLDEN_ORDER_FILES
    assert subject_digest(ours) == GOLDEN_DIGEST_FILES
    assert subject_digest(theirs) == GOLDEN_DIGEST_FILES


def test_golden_root_digest_shards_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model(tmp_path / "golden", GOLDEN_FILES)
    size = str(GOLDEN_SHARD_SIZE)
    shards = ("--method", "shards", "--shard-size", size)
    code, out, err = bastion(capsys, "digest", model, *shards)
    assert code == 0, err
    assert out.strip() == GOLDEN_DIGEST_SHARDS

    key, _ = ec_key_pair(tmp_path, "ecdsa-p256")
    ours, theirs = tmp_path / "bastion.sig", tmp_path / "reference.sig"
    code, _, err = bastion(capsys, "sign", model, "--key", key, "--signature", ours, *shards)
    assert code == 0, err
    reference_shard_sign(model, key, theirs, GOLDEN_SHARD_SIZE)

    assert sum(name.startswith("weights.bin:") for name in GOLDEN_ORDER_SHARDS) == 12
    assert resource_names(ours) == GOLDEN_ORDER_SHARDS
    assert resource_names(theirs) == GOLDEN_ORDER_SHARDS
    assert subject_digest(ours) == GOLDEN_DIGEST_SHARDS
    assert subject_digest(theirs) == GOLDEN_DIGEST_SHARDS


# --- shards mode via the reference's Python API ----------------------------


def test_reference_shard_signature_verifies_with_bastion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model", MODEL_FILES)
    private, public = ec_key_pair(tmp_path, "ecdsa-p384")
    sig = tmp_path / "model.sig"
    reference_shard_sign(model, private, sig, 1000)
    serialization_block = statement(sig)["predicate"]["serialization"]
    # The reference round-trips the statement through a protobuf Struct.
    assert serialization_block["method"] == "shards"
    assert serialization_block["shard_size"] == 1000.0
    assert isinstance(serialization_block["shard_size"], float)

    code, out, err = bastion(capsys, "digest", model, "--method", "shards", "--shard-size", "1000")
    assert (code, out.strip()) == (0, subject_digest(sig)), err

    code, out, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 0, err
    assert "verified" in out

    # Flip one byte in the third shard of a file: caught, and the file is named.
    layer = model / "weights" / "nested" / "deep" / "layer-1.bin"
    data = bytearray(layer.read_bytes())
    data[2500] ^= 0xFF
    layer.write_bytes(bytes(data))
    code, _, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 1
    assert "modified" in err
    assert "weights/nested/deep/layer-1.bin" in err


def test_reference_shard_signature_with_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference leaves empty files out in shards mode; Bastion verifies and says so.

    Bastion itself records an empty file as ``name:0:0`` (docs/signing.md, deviation 4),
    so in shards mode, and only there, a tree with an empty file has a different root
    digest under the two tools.
    """
    model = build_model(tmp_path / "model", {**GOLDEN_FILES, "empty.txt": b""})
    private, public = ec_key_pair(tmp_path, "ecdsa-p256")
    sig = tmp_path / "model.sig"
    reference_shard_sign(model, private, sig, GOLDEN_SHARD_SIZE)
    assert resource_names(sig) == GOLDEN_ORDER_SHARDS
    assert subject_digest(sig) == GOLDEN_DIGEST_SHARDS
    code, _, err = bastion(capsys, "verify", model, "--public-key", public, "--signature", sig)
    assert code == 0, err
    assert "does not cover empty files" in err

    ours = tmp_path / "bastion.sig"
    shards = ("--method", "shards", "--shard-size", str(GOLDEN_SHARD_SIZE))
    code, _, err = bastion(capsys, "sign", model, "--key", private, "--signature", ours, *shards)
    assert code == 0, err
    assert "empty.txt:0:0" in resource_names(ours)
    assert subject_digest(ours) != subject_digest(sig)


def test_files_mode_digest_parity_with_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files mode parity on a tree with an empty file: both tools include it."""
    model = build_model(tmp_path / "model", {**GOLDEN_FILES, "empty.txt": b""})
    private, _ = ec_key_pair(tmp_path, "ecdsa-p256")
    sig = tmp_path / "model.sig"
    assert (
        reference("sign", "key", model, "--private_key", private, "--signature", sig).returncode
        == 0
    )
    assert resource_names(sig) == ["a/b", "a-b/x", "a.txt", "empty.txt", "weights.bin"]
    code, out, err = bastion(capsys, "digest", model)
    assert (code, out.strip()) == (0, subject_digest(sig)), err
