"""The command line through its ``main``: results on stdout, diagnoses on stderr,
documented exit codes (0 ok, 1 verification failed, 2 usage or bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.cli import main
from tests.support.pki import make_pki


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    secret = tmp_path / "passphrase.txt"
    secret.write_text("s3cret passphrase\n")
    code, _, _ = run(
        capsys,
        "keygen",
        "--type",
        "ecdsa-p384",
        "--out",
        tmp_path / "keys/release",
        "--passphrase-file",
        secret,
    )
    assert code == 0
    return tmp_path / "keys"


def test_sign_verify_digest_round_trip(
    model: Path, keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "passphrase.txt"
    code, out, err = run(
        capsys, "sign", model, "--key", keys / "release.key", "--passphrase-file", pw, "--json"
    )
    assert code == 0
    signed = json.loads(out)
    assert signed["signature"] == str(model / "model.sig")
    assert "signed 5 resource(s)" in err

    code, out, _ = run(capsys, "verify", model, "--public-key", keys / "release.pub", "--json")
    assert code == 0
    verified = json.loads(out)
    assert verified["ok"] is True
    assert verified["root_digest"] == signed["root_digest"]

    code, out, _ = run(capsys, "digest", model)
    assert (code, out.strip()) == (0, signed["root_digest"])


def test_tampered_model_exits_1_with_the_difference(
    model: Path, keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "passphrase.txt"
    run(capsys, "sign", model, "--key", keys / "release.key", "--passphrase-file", pw)
    (model / "config.json").write_text("{}")
    (model / "evil.py").write_text("import os")
    code, out, err = run(capsys, "verify", model, "--public-key", keys / "release.pub", "--json")
    assert code == 1
    body = json.loads(out)
    assert body["ok"] is False
    assert body["error"]["code"] == "verification_failed"
    assert body["error"]["result"]["modified"] == ["config.json"]
    assert body["error"]["result"]["added"] == ["evil.py"]
    assert err.count("\n") == 1
    assert "does not match" in err


def test_trust_policy_round_trip(
    model: Path, keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "passphrase.txt"
    run(capsys, "sign", model, "--key", keys / "release.key", "--passphrase-file", pw)
    policy = tmp_path / "trust.toml"
    code, _, _ = run(capsys, "trust", "init", "--public-key", keys / "release.pub", "--out", policy)
    assert code == 0
    code, out, _ = run(capsys, "verify", model, "--trust", policy, "--json")
    assert code == 0
    assert json.loads(out)["signers"][0]["name"] == "release"
    code, _, err = run(
        capsys, "trust", "init", "--public-key", keys / "release.pub", "--out", policy
    )
    assert code == 2
    assert "already exists" in err


def test_shards_blake3_and_ignore_flags(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--type", "ed25519", "--out", tmp_path / "k", "--unencrypted")
    for flags in (["--method", "shards", "--shard-size", "1000"], ["--hash", "blake3"]):
        code, _, _ = run(
            capsys,
            "sign",
            model,
            "--key",
            tmp_path / "k.key",
            "--ignore-paths",
            "tokenizer",
            *flags,
        )
        assert code == 0
        (model / "tokenizer/vocab.txt").write_text("ignored change")
        code, _, _ = run(capsys, "verify", model, "--public-key", tmp_path / "k.pub")
        assert code == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sign", "{tmp}/missing", "--key", "{tmp}/k.key"], "does not exist"),
        (["sign", "{model}", "--key", "{tmp}/k.pub"], "not a private key"),
        (["sign", "{model}", "--key", "{tmp}/nope.key"], "does not exist"),
        (["verify", "{model}", "--public-key", "{tmp}/k.key"], "not a public key"),
        (["verify", "{model}", "--public-key", "{tmp}/k.pub", "--signature", "{tmp}/junk"], "JSON"),
        (["verify", "{model}", "--trust", "{tmp}/empty.toml"], "trusts no key"),
        (["verify", "{model}", "--ca", "{tmp}/k.pub", "--identity", "x"], "certificate"),
        (["keygen", "--out", "{tmp}/new"], "needs a passphrase"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted")
    run(capsys, "sign", model, "--key", tmp_path / "k.key")
    (tmp_path / "junk").write_text('{"mediaType": "application/vnd.dev.sigstore.bun')
    (tmp_path / "empty.toml").write_text("version = 1\n")
    args = [a.format(tmp=tmp_path, model=model) for a in argv]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert needle in err
    assert err.startswith("bastion: error [")
    assert err.count("\n") == 1


def test_usage_errors_exit_2_with_one_line_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify")
    assert (code, out) == (2, "")
    assert err == (
        "bastion: error [usage]: the following arguments are required: model; "
        "see bastion verify --help\n"
    )
    code, out, err = run(capsys, "digest", ".", "--json", "--hash", "md5")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "usage"
    assert "invalid choice: 'md5'" in json.loads(out)["error"]["message"]
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("bastion ")


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"x" * 1000)
    for extra in ([], ["--json"]):
        command = [sys.executable, "-m", "bastion", "digest", str(tmp_path), *extra]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run_:
            assert run_.stdout is not None
            assert run_.stderr is not None
            run_.stdout.close()  # nobody reads the result: a pipe into `head -0`
            err = run_.stderr.read().decode()
        assert run_.returncode == 141, err
        assert "Traceback" not in err
        assert "report" not in err


def test_json_errors_go_to_stdout_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "digest", tmp_path / "missing", "--json")
    assert code == 2
    assert json.loads(out) == {
        "ok": False,
        "error": {
            "code": "path_not_found",
            "message": f"model path '{tmp_path}/missing' does not exist",
        },
    }
    assert "path_not_found" in err


def test_signature_symlink_is_refused_at_signing_and_verification(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted")
    (model / "model.sig").symlink_to("config.json")
    sign = ("sign", model, "--key", tmp_path / "k.key", "--allow-symlinks", "--json")
    code, out, err = run(capsys, *sign)
    assert code == 2
    assert json.loads(out)["error"]["code"] == "model_tree_invalid"
    assert "symbolic link to 'config.json'" in err
    (model / "model.sig").unlink()
    assert run(capsys, *sign)[0] == 0
    (model / "config.json").write_bytes((model / "model.sig").read_bytes())
    (model / "model.sig").unlink()
    (model / "model.sig").symlink_to("config.json")
    code, _, err = run(capsys, "verify", model, "--public-key", tmp_path / "k.pub")
    assert code == 1
    assert "symbolic link" in err


def test_verify_with_a_ca_needs_an_identity(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path / "pki")
    code, _, err = run(
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
    verify = ("verify", model, "--ca", pki.root.cert_path)
    code, out, err = run(capsys, *verify)
    assert (code, out) == (2, "")
    assert err.startswith("bastion: error [usage]: --ca needs at least one --identity")
    assert "--identity '*'" in err
    code, _, err = run(capsys, *verify, "--identity", "*")
    assert code == 0, err


def test_sign_does_not_overwrite_a_file_that_is_not_a_signature(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--out", tmp_path / "k", "--unencrypted")
    weights = model / "weights/part-0.bin"
    before = weights.read_bytes()
    sign = ("sign", model, "--key", tmp_path / "k.key", "--signature", weights)
    code, _, err = run(capsys, *sign)
    assert code == 2
    assert "already exists and is not a signature bundle" in err
    assert "--force" in err
    assert weights.read_bytes() == before
    assert run(capsys, *sign, "--force")[0] == 0
    assert run(capsys, *sign)[0] == 0  # now a bundle: re-signing replaces it


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o644, True)])
def test_signing_with_a_key_others_may_read_warns_on_stderr(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, warned: bool
) -> None:
    run(capsys, "keygen", "--type", "ed25519", "--out", tmp_path / "k", "--unencrypted")
    (tmp_path / "k.key").chmod(mode)
    code, out, err = run(capsys, "sign", model, "--key", tmp_path / "k.key", "--json")
    assert code == 0
    assert json.loads(out)["signature"] == str(model / "model.sig")
    assert ("is accessible to group or others" in err) is warned
    if warned:
        assert f"mode {mode:04o}" in err
        assert f"chmod 600 {tmp_path / 'k.key'}" in err
