"""Every way of tampering with a signed model is caught, and reported precisely."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bastion
from bastion.errors import BundleFormatError, ModelTreeError, UsageError, VerificationError
from bastion.signing import PrivateKey
from bastion.signing._bundle import Bundle, DsseSignature, Statement, pae
from bastion.signing._manifest import Resource, Serialization
from tests.conftest import ModelFactory


def _fails(model: Path, key: PrivateKey, **kwargs: object) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        bastion.verify(model, public_key=key.public_key, **kwargs)  # type: ignore[arg-type]
    return info.value


def _diff(err: VerificationError) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    assert err.result is not None
    return err.result.modified, err.result.added, err.result.removed


@pytest.fixture(params=["files", "shards"])
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sign(model: Path, key: PrivateKey, method: str = "files", **kwargs: object) -> None:
    bastion.sign(model, key, method=method, shard_size=1000, **kwargs)  # type: ignore[arg-type]


def test_untouched_model_verifies(model: Path, key: PrivateKey, method: str) -> None:
    _sign(model, key, method)
    result = bastion.verify(model, public_key=key.public_key)
    assert result.ok
    assert result.files == 5  # .git is ignored, the hidden .cache file is not
    assert result.signers[0].algorithm == "ecdsa-p256"


def test_changed_byte(model: Path, key: PrivateKey, method: str) -> None:
    _sign(model, key, method)
    path = model / "weights/part-0.bin"
    data = bytearray(path.read_bytes())
    data[1500] ^= 0x01
    path.write_bytes(bytes(data))
    assert _diff(_fails(model, key)) == (("weights/part-0.bin",), (), ())


def test_appended_byte(model: Path, key: PrivateKey, method: str) -> None:
    _sign(model, key, method)
    with open(model / "weights/part-1.bin", "ab") as fh:
        fh.write(b"\x00")
    assert _diff(_fails(model, key)) == (("weights/part-1.bin",), (), ())


def test_added_removed_and_renamed_files(model: Path, key: PrivateKey, method: str) -> None:
    _sign(model, key, method)
    (model / "extra.py").write_text("import os")
    (model / "tokenizer/vocab.txt").unlink()
    (model / "config.json").rename(model / "config.yaml")
    modified, added, removed = _diff(_fails(model, key))
    assert modified == ()
    assert added == ("config.yaml", "extra.py")
    assert removed == ("config.json", "tokenizer/vocab.txt")


def test_root_digest_covers_contents_not_names(make_model: ModelFactory, key: PrivateKey) -> None:
    # As in OMS: the root digest hashes the resources' digests only. A rename that
    # keeps the order keeps it; the signed manifest is what catches the rename.
    model = make_model({"a.bin": b"a", "b.bin": b"b"})
    before = bastion.digest(model)
    _sign(model, key)
    (model / "b.bin").rename(model / "c.bin")
    assert bastion.digest(model) == before
    assert _diff(_fails(model, key)) == ((), ("c.bin",), ("b.bin",))


def test_two_files_swapped(model: Path, key: PrivateKey, method: str) -> None:
    _sign(model, key, method)
    a, b = model / "weights/part-0.bin", model / "weights/part-1.bin"
    a_data, b_data = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_data)
    b.write_bytes(a_data)
    assert _diff(_fails(model, key))[0] == ("weights/part-0.bin", "weights/part-1.bin")


def test_empty_file_added(model: Path, key: PrivateKey, method: str) -> None:
    # The reference tool cannot see this in shards mode; Bastion records empty files.
    _sign(model, key, method)
    (model / "weights/empty.bin").touch()
    assert _diff(_fails(model, key)) == ((), ("weights/empty.bin",), ())


def test_file_named_with_colon_in_shards_mode(make_model: ModelFactory, key: PrivateKey) -> None:
    model = make_model({"w:1.bin": b"x" * 2500, "a:b:c": b"y" * 10})
    _sign(model, key, "shards")
    assert bastion.verify(model, public_key=key.public_key).ok
    (model / "w:1.bin").write_bytes(b"x" * 2499 + b"z")
    assert _diff(_fails(model, key)) == (("w:1.bin",), (), ())


def test_git_paths_and_signature_are_not_part_of_the_model(model: Path, key: PrivateKey) -> None:
    _sign(model, key)
    (model / ".git/HEAD").write_text("changed")
    (model / ".gitignore").write_text("*.tmp")
    assert bastion.verify(model, public_key=key.public_key).ok


def test_git_paths_can_be_signed(model: Path, key: PrivateKey) -> None:
    _sign(model, key, ignore_git_paths=False)
    (model / ".git/HEAD").write_text("changed")
    assert _diff(_fails(model, key))[0] == (".git/HEAD",)


def test_ignore_paths_are_recorded_and_reapplied(model: Path, key: PrivateKey) -> None:
    _sign(model, key, ignore_paths=["tokenizer"])
    (model / "tokenizer/vocab.txt").write_text("changed")
    (model / "tokenizer/new.txt").write_text("new")
    assert bastion.verify(model, public_key=key.public_key).ok
    bundle = json.loads((model / "model.sig").read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert "tokenizer" in statement["predicate"]["serialization"]["ignore_paths"]


def _rewrite_payload(sig: Path, change: dict[str, object]) -> None:
    bundle = json.loads(sig.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"].update(change)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))


def test_changed_ignore_list_breaks_the_signature(model: Path, key: PrivateKey) -> None:
    _sign(model, key)
    _rewrite_payload(model / "model.sig", {"ignore_paths": ["model.sig", "weights"]})
    err = _fails(model, key)
    assert "not valid" in err.message


def test_symlink_refused_by_default(model: Path, key: PrivateKey) -> None:
    (model / "link.bin").symlink_to(model / "config.json")
    with pytest.raises(ModelTreeError, match="symbolic link"):
        _sign(model, key)


def test_symlink_added_after_signing_fails_verification(model: Path, key: PrivateKey) -> None:
    _sign(model, key)
    (model / "link.bin").symlink_to(model / "config.json")
    assert "symbolic link" in _fails(model, key).message


def test_allowed_symlink_inside_root_is_hashed_as_its_target(model: Path, key: PrivateKey) -> None:
    (model / "alias.json").symlink_to("config.json")
    _sign(model, key, allow_symlinks=True)
    assert bastion.verify(model, public_key=key.public_key).ok
    (model / "config.json").write_text("{}")
    assert _diff(_fails(model, key))[0] == ("alias.json", "config.json")


def test_symlink_outside_root_is_never_followed(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (model / "escape.txt").symlink_to(secret)
    with pytest.raises(ModelTreeError, match="outside the model"):
        _sign(model, key, allow_symlinks=True)
    (model / "escape.txt").unlink()
    (model / "alias.json").symlink_to("config.json")
    _sign(model, key, allow_symlinks=True)
    (model / "alias.json").unlink()
    (model / "alias.json").symlink_to(secret)
    assert "outside the model" in _fails(model, key).message


def test_non_utf8_name_is_refused(model: Path, key: PrivateKey) -> None:
    bad = os.path.join(os.fsencode(model), b"caf\xe9.bin")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    with pytest.raises(ModelTreeError, match="not valid UTF-8"):
        _sign(model, key)
    os.remove(bad)
    _sign(model, key)
    with open(bad, "wb") as fh:
        fh.write(b"x")
    assert "UTF-8" in _fails(model, key).message


def test_signature_symlinked_to_a_model_file_is_refused_at_verification(
    model: Path, key: PrivateKey
) -> None:
    # model.sig -> config.json must not leave config.json out of the comparison.
    _sign(model, key)
    bundle = json.loads((model / "model.sig").read_bytes())
    bundle["auto_map"] = {"AutoModel": "attacker/repo--evil.Model"}
    (model / "config.json").write_text(json.dumps(bundle))
    (model / "model.sig").unlink()
    (model / "model.sig").symlink_to("config.json")
    err = _fails(model, key)
    assert "symbolic link to 'config.json'" in err.message
    assert "regular file" in err.message


def test_signature_outside_linking_into_the_model_is_refused(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.sig"
    _sign(model, key, signature_path=outside)
    (model / "config.json").write_bytes(outside.read_bytes())
    outside.unlink()
    outside.symlink_to(model / "config.json")
    assert "symbolic link" in _fails(model, key, signatures=[outside]).message


def test_signature_reached_through_a_linked_folder_keeps_its_own_name(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    # Only the signature's own entry is left out, whatever path leads to it.
    _sign(model, key)
    alias = tmp_path / "alias"
    alias.symlink_to(model)
    assert bastion.verify(model, public_key=key.public_key, signatures=[alias / "model.sig"]).ok
    (model / "config.json").write_text("{}")
    err = _fails(model, key, signatures=[alias / "model.sig"])
    assert _diff(err) == (("config.json",), (), ())


def test_signature_symlink_is_refused_at_signing(model: Path, key: PrivateKey) -> None:
    (model / "model.sig").symlink_to("config.json")
    with pytest.raises(ModelTreeError, match=r"symbolic link to 'config\.json'"):
        _sign(model, key, allow_symlinks=True)
    assert (model / "model.sig").is_symlink()  # nothing was written
    (model / "model.sig").unlink()
    _sign(model, key, allow_symlinks=True)
    bundle = json.loads((model / "model.sig").read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["serialization"]["ignore_paths"] == [
        ".git",
        ".gitattributes",
        ".github",
        ".gitignore",
        "model.sig",
    ]


def test_signing_refuses_to_replace_a_file_that_is_not_a_signature(
    model: Path, key: PrivateKey
) -> None:
    weights = model / "weights/part-0.bin"
    before = weights.read_bytes()
    with pytest.raises(UsageError, match=r"not a signature bundle.*--force"):
        _sign(model, key, signature_path=weights)
    assert weights.read_bytes() == before
    _sign(model, key)
    _sign(model, key)  # an existing bundle is replaced without asking
    _sign(model, key, signature_path=weights, overwrite=True)
    assert json.loads(weights.read_bytes())["mediaType"].startswith(
        "application/vnd.dev.sigstore.bundle"
    )


def test_single_file_signature_never_replaces_the_model(tmp_path: Path, key: PrivateKey) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 100)
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="the model file being signed"):
            bastion.sign(weights, key, signature_path=weights, overwrite=overwrite)
    assert weights.read_bytes() == b"\x00" * 100


def _signed_bundle(key: PrivateKey, names: list[str]) -> bytes:
    """A correctly signed bundle over arbitrary resource names (what an attacker could make)."""
    resources = tuple(Resource(n, "sha256", bytes(32)) for n in names)
    statement = Statement.build("m", Serialization(), resources, datetime.now(UTC))
    payload = statement.to_payload()
    sigs = tuple(DsseSignature(h, s) for h, s in key.sign(pae(payload)))
    return Bundle(payload, sigs, key_hint=key.public_key.hint).to_json()


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "a/./b"])
def test_dotdot_and_absolute_names_in_a_signed_bundle_are_refused(
    model: Path, key: PrivateKey, name: str
) -> None:
    (model / "model.sig").write_bytes(_signed_bundle(key, [name]))
    with pytest.raises(BundleFormatError, match="unsafe"):
        bastion.verify(model, public_key=key.public_key)


def test_bundle_for_another_model_says_so(make_model: ModelFactory, key: PrivateKey) -> None:
    first = make_model({"a.bin": b"a", "b.bin": b"b"}, name="first")
    second = make_model({"c.bin": b"c"}, name="second")
    _sign(first, key)
    err = _fails(second, key, signatures=[first / "model.sig"])
    assert "different model" in err.message
    assert err.exit_code == 1


def test_wrong_key_fails(model: Path, key: PrivateKey, other_key: PrivateKey) -> None:
    _sign(model, key)
    err = _fails(model, other_key)
    assert "does not name" in err.message


def test_flipped_payload_byte_fails(model: Path, key: PrivateKey) -> None:
    _sign(model, key)
    bundle = json.loads((model / "model.sig").read_bytes())
    payload = bytearray(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload[-5] ^= 0x01
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    (model / "model.sig").write_text(json.dumps(bundle))
    assert "not valid" in _fails(model, key).message


@pytest.mark.parametrize("cut", [0, 1, 100, -1])
def test_truncated_bundle_is_bad_input(model: Path, key: PrivateKey, cut: int) -> None:
    _sign(model, key)
    sig = model / "model.sig"
    sig.write_bytes(sig.read_bytes()[:cut])
    with pytest.raises(BundleFormatError) as info:
        bastion.verify(model, public_key=key.public_key)
    assert info.value.exit_code == 2


def test_single_file_model(tmp_path: Path, key: PrivateKey) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 100)
    result = bastion.sign(weights, key)
    assert result.signature == str(tmp_path / "model.safetensors.sig")
    assert bastion.verify(weights, public_key=key.public_key).ok
    weights.write_bytes(b"\x00" * 101)
    assert _diff(_fails(weights, key))[0] == (".",)
