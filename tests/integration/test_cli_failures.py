"""Failures the command line handles on its own: a half-written key pair, a folder given as
keys, ignore paths that escape the model, and Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bastion.signing
from bastion.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_an_out_that_names_a_folder_is_a_usage_error(
    out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It once crashed on Path.with_name: exit 3 and a traceback.
    code, stdout, err = run(capsys, "keygen", "--out", out, "--unencrypted", "--json")
    assert code == 2
    assert "names a folder, not the keys" in err
    assert '"usage"' in stdout


def test_an_existing_public_key_leaves_no_private_key_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k.pub").write_text("someone else's key\n")
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted")
    assert code == 2
    assert "k.pub' already exists" in err
    assert not (tmp_path / "k.key").exists()  # once written before the .pub was refused
    assert (tmp_path / "k.pub").read_text() == "someone else's key\n"
    code, _, _ = run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted", "--force")
    assert code == 0
    assert (tmp_path / "k.key").exists()
    assert (tmp_path / "k.pub").read_text() != "someone else's key\n"


@pytest.mark.parametrize("ignored", ["a/../b", "../x"])
def test_an_ignore_path_that_is_not_a_plain_name_is_a_usage_error(
    ignored: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was reported as a corrupt signature (bundle_invalid) though no bundle was read.
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted")
    code, out, err = run(
        capsys, "sign", model, "--key", tmp_path / "k.key", "--ignore-paths", ignored, "--json"
    )
    assert code == 2
    assert json.loads(out)["error"]["code"] == "usage"
    assert "is not a plain name inside the model" in err


def test_ctrl_c_is_the_interrupted_error_with_json_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It printed no JSON document, so a script reading stdout got nothing to parse.
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bastion.signing, "digest", interrupted)
    code, out, err = run(capsys, "digest", tmp_path, "--json")
    assert code == 130
    assert json.loads(out) == {
        "ok": False,
        "error": {"code": "interrupted", "message": "interrupted before the command finished"},
    }
    assert err == "bastion: error [interrupted]: interrupted before the command finished\n"
