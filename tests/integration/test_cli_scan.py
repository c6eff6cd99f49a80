"""``bastion scan`` through ``main``: reports on stdout, exit 0 clean / 1 findings / 2 usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.cli import main
from tests.unit.scanning.crafted import BENIGN_PICKLE, EVIL_PICKLE, torch_zip


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    root.mkdir()
    (root / "model.pt").write_bytes(torch_zip(BENIGN_PICKLE))
    (root / "config.json").write_text('{"hidden_size": 8}')
    return root


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    root = tmp_path / "evil"
    root.mkdir()
    (root / "model.pt").write_bytes(torch_zip(EVIL_PICKLE))
    return root


def test_clean_model_exits_0(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scan", clean)
    assert (code, out) == (0, "")
    assert "scanned 2 file(s)" in err


def test_findings_exit_1_with_one_line_each(evil: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scan", evil)
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith("critical")
    assert "model.pt!archive/data.pkl" in line
    assert "pickle.global.dangerous" in line


def test_fail_on_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "blob").write_bytes(bytes(range(256)))  # unknown format: medium
    assert run(capsys, "scan", tmp_path, "--fail-on", "high")[0] == 0
    assert run(capsys, "scan", tmp_path, "--fail-on", "medium")[0] == 1
    assert run(capsys, "scan", tmp_path)[0] == 1


def test_json_report(evil: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scan", evil, "--format", "json")
    assert code == 1
    body = json.loads(out)
    assert body["schema_version"] == 1
    assert body["max_severity"] == "critical"
    assert body["findings"][0]["member"] == "archive/data.pkl"


def test_sarif_report(evil: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scan", evil, "--format", "sarif")
    assert code == 1
    log = json.loads(out)
    assert log["version"] == "2.1.0"
    assert log["runs"][0]["results"][0]["level"] == "error"


def test_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scan", tmp_path / "absent")
    assert (code, out) == (2, "")
    assert "path_not_found" in err


def test_bad_option_exits_2(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scan", clean, "--fail-on", "severe")
    assert (code, out) == (2, "")
    assert err.startswith("bastion: error [usage]: argument --fail-on: invalid choice")


def test_json_failures_are_a_json_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # scan's --json is --format json: it once printed nothing at all when the scan failed.
    for flags in (["--json"], ["--format", "json"]):
        code, out, _ = run(capsys, "scan", tmp_path / "absent", *flags)
        assert code == 2
        assert json.loads(out)["error"]["code"] == "path_not_found"


def test_the_command_module_does_not_import_the_scanner() -> None:
    code = (
        "import sys, bastion.cli.scan; "
        "print(any(m.startswith('bastion.scanning') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
