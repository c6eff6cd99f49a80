"""Pulling from the real hub: verified before the files appear, by version or alias, and yanks.

A pull writes into a temporary folder beside the destination, verifies the
signature, and only then renames it into place; a refused or failed pull leaves
nothing at the destination. Aliases only ever point at servable versions.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import bastion
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, bearer, write_safe_model


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _nothing_at(dest: Path) -> None:
    assert not dest.exists()
    assert list(dest.parent.glob(f".{dest.name}.pulling-*")) == []


def test_round_trip_is_byte_identical_and_verifies(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    pushed = admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    dest = tmp_path / "pulled" / "xray"
    pulled = admin.pull("med/xray@1.0.0", dest)

    got = _files(dest)
    assert got.pop("model.sig") == admin.show("med/xray@1.0.0")["signature"].encode()
    assert got == _files(safe_model)
    assert pulled["ref"] == "med/xray@1.0.0"
    assert pulled["files"] == pushed["files"] == 3
    assert pulled["bytes"] == pushed["bytes"]
    assert [s["key_fingerprint"] for s in pulled["signers"]] == [signing_key.public_key.fingerprint]
    result = bastion.verify(dest, trust=bastion.TrustPolicy.for_keys([signing_key.public_key]))
    assert result.root_digest == pulled["root_digest"]
    assert result.root_digest == admin.show("med/xray@1.0.0")["root_digest"]
    assert [p.name for p in dest.parent.iterdir()] == ["xray"]  # no temporary folder left


def test_pull_by_alias_follows_the_alias(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    newer = write_safe_model(tmp_path / "newer", seed=5)
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    admin.push(newer, "med/xray@1.1.0", key=signing_key)

    assert admin.set_alias("med/xray", "prod", "1.0.0")["previous"] is None
    first = admin.pull("med/xray:prod", tmp_path / "a")
    assert first["ref"] == "med/xray@1.0.0"
    assert _files(tmp_path / "a").items() >= _files(safe_model).items()

    assert admin.set_alias("med/xray", "prod", "1.1.0")["previous"] == "1.0.0"
    second = admin.pull("med/xray:prod", tmp_path / "b")
    assert second["ref"] == "med/xray@1.1.0"
    got = _files(tmp_path / "b")
    got.pop("model.sig")
    assert got == _files(newer)

    with pytest.raises(bastion.NotFoundError):
        admin.pull("med/xray:staging", tmp_path / "c")
    _nothing_at(tmp_path / "c")


def test_pull_refuses_a_signature_the_caller_does_not_trust(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    mine = bastion.TrustPolicy.for_keys([bastion.generate_key("ed25519").public_key])
    with pytest.raises(bastion.VerificationError):
        admin.pull("med/xray@1.0.0", tmp_path / "dest", trust=mine)
    _nothing_at(tmp_path / "dest")

    (tmp_path / "taken").mkdir()
    with pytest.raises(bastion.UsageError, match="exists"):
        admin.pull("med/xray@1.0.0", tmp_path / "taken")
    assert list((tmp_path / "taken").iterdir()) == []


def test_a_yanked_version_is_pulled_only_when_allowed(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    admin.set_alias("med/xray", "prod", "1.0.0")
    yanked = admin.yank("med/xray@1.0.0", "CVE-2026-0001: bad weights")
    assert yanked["reason"] == "CVE-2026-0001: bad weights"

    shown = admin.show("med/xray@1.0.0")
    assert shown["yanked"] is True
    assert shown["yank_reason"] == "CVE-2026-0001: bad weights"
    assert shown["state"] == "published"

    for ref, dest in (("med/xray@1.0.0", tmp_path / "a"), ("med/xray:prod", tmp_path / "b")):
        with pytest.raises(bastion.VersionYankedError, match="CVE-2026-0001"):
            admin.pull(ref, dest)
        _nothing_at(dest)

    pulled = admin.pull("med/xray@1.0.0", tmp_path / "c", allow_yanked=True)
    assert pulled["yanked"] is True
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == (
        safe_model / "model.safetensors"
    ).read_bytes()


def test_an_alias_never_points_at_a_yanked_or_quarantined_version(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    admin.yank("med/xray@1.0.0", "withdrawn")
    with pytest.raises(bastion.ConflictError, match="yanked"):
        admin.set_alias("med/xray", "prod", "1.0.0")

    with pytest.raises(bastion.QuarantinedError):
        admin.push(safe_model, "med/xray@2.0.0", key=bastion.generate_key("ed25519"))
    with pytest.raises(bastion.ConflictError, match="quarantined"):
        admin.set_alias("med/xray", "prod", "2.0.0")
    with pytest.raises(bastion.ConflictError, match="quarantined"):
        admin.yank("med/xray@2.0.0", "not servable anyway")

    with pytest.raises(bastion.NotFoundError):
        admin.show("med/xray:prod")
    assert {v["version"]: v["aliases"] for v in admin.versions("med/xray")} == {
        "1.0.0": [],
        "2.0.0": [],
    }


def test_allowing_a_yanked_pull_is_read_as_the_route_reads_its_flag(
    hub: RunningHub, admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey
) -> None:
    """The policies see ``allow_yanked`` as the route parses it (``1`` and ``true`` alike)."""
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    admin.yank("med/xray@1.0.0", "withdrawn")
    url = f"{hub.url}/api/v1/models/med/xray/versions/1.0.0/files/model.safetensors"
    with httpx.Client(headers=bearer(hub.admin_token)) as client:
        assert client.get(url).status_code == 410
        for flag in ("1", "true", "True"):
            assert client.get(url, params={"allow_yanked": flag}).status_code == 200, flag
