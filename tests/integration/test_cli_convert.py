"""``bastion convert`` through ``main``: exit 0 written, 2 refused; JSON on stdout with --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bastion.cli import main
from tests.unit.scanning.crafted import Reduces


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2, 3), "b": torch.zeros(3)}, "epoch": 4}, path)
    return path


def test_convert_writes_safetensors(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "model.safetensors"
    code, out, err = run(capsys, "convert", checkpoint, dst)
    assert (code, out) == (0, "")
    assert "wrote 2 tensor(s)" in err
    assert "left out: epoch" in err
    tensors = load_file(dst)
    assert torch.equal(tensors["model.w"], torch.ones(2, 3))
    assert torch.equal(tensors["model.b"], torch.zeros(3))


def test_json_document(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "model.safetensors"
    code, out, _ = run(capsys, "convert", checkpoint, dst, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["format"] == "pytorch-zip"
    assert doc["tensors"] == ["model.b", "model.w"]
    assert doc["skipped"] == ["epoch"]
    assert doc["bytes_written"] == dst.stat().st_size


def test_malicious_checkpoint_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": Reduces()}, src)  # written, never loaded
    dst = tmp_path / "evil.safetensors"
    code, out, err = run(capsys, "convert", src, dst, "--json")
    assert code == 2
    assert "bastion: error [bad_input]: refusing to convert" in err
    assert "posix.system" in err
    assert json.loads(out)["error"]["code"] == "bad_input"
    assert not dst.exists()


def test_existing_destination_needs_force(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "model.safetensors"
    dst.write_bytes(b"old")
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert code == 2
    assert "--force" in err
    assert dst.read_bytes() == b"old"
    assert run(capsys, "convert", checkpoint, dst, "--force")[0] == 0
    assert set(load_file(dst)) == {"model.w", "model.b"}


def test_not_a_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "readme.txt").write_text("not a model")
    code, _, err = run(capsys, "convert", tmp_path / "readme.txt", tmp_path / "x.safetensors")
    assert code == 2
    assert "not a PyTorch checkpoint" in err
