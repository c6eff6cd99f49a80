"""SARIF 2.1.0 output: the properties the specification requires, and the severity mapping."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.scanning import scan
from bastion.scanning._report import Finding, ScanReport, Severity
from bastion.scanning._sarif import to_sarif
from tests.unit.scanning.crafted import EVIL_PICKLE, torch_zip


def _report() -> ScanReport:
    return ScanReport(
        root="model",
        findings=[
            Finding(
                "pickle.global.dangerous",
                Severity.CRITICAL,
                "imports os.system",
                "m.pt",
                "pytorch-zip",
                member="archive/data.pkl",
                offset=12,
            ),
            Finding("torch.torchscript", Severity.MEDIUM, "TorchScript", "m.pt", "pytorch-zip"),
            Finding("numpy.object-array", Severity.INFO, "object array", "a b.npy", "numpy"),
        ],
    )


def test_log_has_the_required_top_level_properties() -> None:
    log = to_sarif(_report())
    json.dumps(log)  # serialisable
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bastion"
    assert "informationUri" not in driver  # optional in SARIF; Bastion publishes no URL
    ids = [r["id"] for r in driver["rules"]]
    assert ids == sorted({"pickle.global.dangerous", "torch.torchscript", "numpy.object-array"})
    assert all(r["shortDescription"]["text"] for r in driver["rules"])


def test_results_map_severity_location_and_offset() -> None:
    [run] = to_sarif(_report())["runs"]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert {k: v["level"] for k, v in by_rule.items()} == {
        "pickle.global.dangerous": "error",
        "torch.torchscript": "warning",
        "numpy.object-array": "note",
    }
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["message"]["text"]
    evil = by_rule["pickle.global.dangerous"]["locations"][0]
    assert evil["physicalLocation"]["artifactLocation"]["uri"] == "m.pt!/archive/data.pkl"
    assert evil["physicalLocation"]["region"] == {"byteOffset": 12}
    assert evil["logicalLocations"][0]["fullyQualifiedName"] == "m.pt!/archive/data.pkl"
    spaced = by_rule["numpy.object-array"]["locations"][0]["physicalLocation"]
    assert spaced["artifactLocation"]["uri"] == "a%20b.npy"
    assert "region" not in spaced


def test_base_uri_is_an_absolute_folder_uri(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(torch_zip(EVIL_PICKLE))
    [run] = to_sarif(scan(tmp_path / "m.pt"))["runs"]
    base = run["originalUriBaseIds"]["SCANROOT"]["uri"]
    assert base == tmp_path.resolve().as_uri() + "/"
    assert run["results"]
