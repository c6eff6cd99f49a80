"""Digests computed while a file streams in equal those computed from the file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion
from bastion.errors import VerificationError
from bastion.signing import StreamDigester, verify_digests
from bastion.signing._hashing import ManifestHasher
from bastion.signing._manifest import Serialization
from bastion.signing._tree import walk_model

SERIALIZATIONS = [
    Serialization("files", "sha256"),
    Serialization("files", "blake3"),
    Serialization("shards", "sha256", shard_size=7),
    Serialization("shards", "sha256", shard_size=1024),
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
    ser=st.sampled_from(SERIALIZATIONS),
)
def test_streamed_digests_match_the_file_hasher(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, cuts: list[int], ser: Serialization
) -> None:
    folder = tmp_path_factory.mktemp("model")
    (folder / "w.bin").write_bytes(data)
    expected = ManifestHasher(ser, threads=1).hash(walk_model(folder))
    digester = StreamDigester("w.bin", ser)
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        digester.update(data[start:cut])
        start = cut
    digester.update(data[start:])
    assert digester.resources() == expected
    assert digester.size == len(data)


def _sign(tmp_path: Path, key: bastion.PrivateKey, **kwargs: object) -> tuple[Path, bytes]:
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a" * 100)
    (model / "b.txt").write_bytes(b"")
    sig = tmp_path / "model.sig"
    bastion.sign(model, key, signature_path=sig, **kwargs)  # type: ignore[arg-type]
    return model, sig.read_bytes()


def _streamed(model: Path, ser: Serialization, changes: dict[str, bytes] | None = None) -> list:
    out = []
    for f in sorted(model.iterdir()):
        d = StreamDigester(f.name, ser)
        d.update((changes or {}).get(f.name, f.read_bytes()))
        out.extend(d.resources())
    return out


@pytest.mark.parametrize("method", ["files", "shards"])
def test_verify_digests_accepts_the_signed_files_and_names_a_changed_one(
    tmp_path: Path, method: str
) -> None:
    key = bastion.generate_key("ed25519")
    model, signature = _sign(tmp_path, key, method=method, shard_size=64)
    trust = bastion.TrustPolicy.for_keys([key.public_key])
    ser = Serialization(method, "sha256", shard_size=64)  # type: ignore[arg-type]
    result, statement = verify_digests(signature, _streamed(model, ser), trust=trust)
    assert result.ok
    assert result.files == 2
    assert statement.serialization.method == method
    with pytest.raises(VerificationError) as caught:
        verify_digests(signature, _streamed(model, ser, {"a.bin": b"b" * 100}), trust=trust)
    assert caught.value.result is not None
    assert caught.value.result.modified == ("a.bin",)


def test_verify_digests_refuses_an_untrusted_signer(tmp_path: Path) -> None:
    key, other = bastion.generate_key("ed25519"), bastion.generate_key("ed25519")
    model, signature = _sign(tmp_path, key)
    with pytest.raises(VerificationError, match="does not name"):
        verify_digests(
            signature,
            _streamed(model, Serialization()),
            trust=bastion.TrustPolicy.for_keys([other.public_key]),
        )
