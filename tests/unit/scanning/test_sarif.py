"""SARIF 2.1.0 output: valid against the official JSON schema, severities, locations.

The schema, ``tests/data/sarif-schema-2.1.0.json``, is an unmodified copy of
``sarif-2.1/schema/sarif-schema-2.1.0.json`` from the OASIS SARIF Technical
Committee's repository (github.com/oasis-tcs/sarif-spec at commit e0583813964e;
the file last changed in a560296ca8c9, 2024-05-02); its ``id`` is the OASIS
errata01 URI. It is OASIS TC content, governed by the OASIS IPR Policy (RF on
RAND terms mode), as that repository's LICENSE.md states. No PyPI package ships
it: sarif-om, sarif-tools, jschema-to-python, pysarif, sarif-pydantic and
pydantic-sarif were checked. Validation uses ``jsonschema`` (draft 4, as the
schema declares), with ``uri`` and ``uri-reference`` checked here because
jsonschema checks them only with optional extras.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scanning import scan
from bastion.scanning._report import Finding, ScanReport, Severity
from bastion.scanning._sarif import to_sarif
from tests.unit.scanning.crafted import EVIL_PICKLE, make_zip, torch_zip

SCHEMA_PATH = Path(__file__).parents[2] / "data" / "sarif-schema-2.1.0.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

#: RFC 3986 characters: unreserved, reserved, and percent-encoded octets.
_URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or (
        bool(_URI_TEXT.fullmatch(value)) and bool(urlsplit(value).scheme)
    )


@FORMATS.checks("uri-reference")
def _is_uri_reference(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI_TEXT.fullmatch(value))


VALIDATOR = jsonschema.Draft4Validator(SCHEMA, format_checker=FORMATS)


def schema_errors(log: object) -> list[str]:
    # Through JSON and back, as a consumer reads it; any lone surrogate would fail here.
    text = json.dumps(log, ensure_ascii=False).encode("utf-8")
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in VALIDATOR.iter_errors(json.loads(text))
    ]


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
            Finding(
                "keras.lambda",
                Severity.HIGH,
                "Lambda layer",
                "m.keras",
                "keras",
                member="config.json",
                config_path="config.layers[2]",
            ),
        ],
    )


# --- the schema itself ----------------------------------------------------------------


def test_schema_is_the_official_sarif_2_1_0_schema() -> None:
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    assert SCHEMA["properties"]["version"]["enum"] == ["2.1.0"]
    assert "result" in SCHEMA["definitions"]


_RESULT: tuple[str | int, ...] = ("runs", 0, "results", 0)
_PHYSICAL = (*_RESULT, "locations", 0, "physicalLocation")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("version",), "2.2.0"),
        ((*_RESULT, "level"), "fatal"),
        ((*_RESULT, "ruleIndex"), -2),
        ((*_PHYSICAL, "region"), {"byteOffset": -2}),
        ((*_PHYSICAL, "artifactLocation", "uri"), "a b"),
        (("runs", 0, "originalUriBaseIds", "SCANROOT", "uri"), "file:///a b/"),
        (("runs", 0, "tool", "driver", "rules", 0, "shortDescription"), {"markdown": "x"}),
        (("runs", 0, "unexpected"), 1),
    ],
    ids=["version", "level", "rule-index", "offset", "uri-space", "base-uri", "no-text", "extra"],
)
def test_the_validator_rejects_broken_logs(path: tuple[str | int, ...], value: object) -> None:
    log = to_sarif(_report())
    assert schema_errors(log) == []
    node: Any = log
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(log)


# --- what Bastion writes is valid ------------------------------------------------------


def test_crafted_report_is_valid() -> None:
    assert schema_errors(to_sarif(_report())) == []


def test_empty_report_is_valid() -> None:
    log = to_sarif(ScanReport(root="."))
    assert schema_errors(log) == []
    assert log["runs"][0]["results"] == []


def test_real_scans_are_valid(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(torch_zip(EVIL_PICKLE))
    (tmp_path / "nested.zip").write_bytes(make_zip({"inner/w x#1.pkl": EVIL_PICKLE}))
    (tmp_path / "unknown.bin").write_bytes(b"\x01\x02garbage")
    (tmp_path / "link").symlink_to(tmp_path / "m.pt")
    report = scan(tmp_path)
    assert {f.rule_id for f in report.findings} >= {"pickle.global.dangerous", "scan.symlink"}
    log = to_sarif(report)
    assert schema_errors(log) == []
    uris = {
        loc["physicalLocation"]["artifactLocation"]["uri"]
        for result in log["runs"][0]["results"]
        for loc in result["locations"]
    }
    assert "nested.zip!/inner/w%20x%231.pkl" in uris


def test_undecodable_names_stay_valid_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad\xffname.pkl")
    report = ScanReport(
        root=str(tmp_path),
        findings=[
            Finding("pickle.global.dangerous", Severity.CRITICAL, f"in {name}", "m.tar", "tar",
                    member=name, config_path="\ud800"),
        ],
    )  # fmt: skip
    log = to_sarif(report)
    assert schema_errors(log) == []
    [result] = log["runs"][0]["results"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "m.tar!/bad%FFname.pkl"  # the name's own bytes
    assert result["message"]["text"] == "in bad\\udcffname.pkl"
    assert result["properties"]["configPath"] == "\\ud800"


_NAMES = st.one_of(
    st.text(min_size=1, max_size=40),
    st.binary(min_size=1, max_size=40).map(os.fsdecode),
    st.text(st.characters(categories=("Cs", "Ll", "Po")), min_size=1, max_size=10),
)
_FINDINGS = st.builds(
    Finding,
    rule_id=st.from_regex(r"[a-z]{1,8}(\.[a-z-]{1,12}){1,2}", fullmatch=True),
    severity=st.sampled_from(list(Severity)),
    message=_NAMES,
    path=_NAMES,
    format=st.sampled_from(["pickle", "zip", "onnx", "unknown"]),
    member=st.none() | _NAMES,
    offset=st.none() | st.integers(0, 2**63),
    config_path=st.none() | _NAMES,
)


@settings(max_examples=150, deadline=None)
@given(findings=st.lists(_FINDINGS, max_size=6))
def test_any_report_gives_a_valid_log(findings: list[Finding]) -> None:
    log = to_sarif(ScanReport(root=".", findings=findings))
    assert schema_errors(log) == []
    [run] = log["runs"]
    assert len(run["results"]) == len(findings)
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert rule_ids == sorted({f.rule_id for f in findings})
    for result in run["results"]:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        path = unquote_to_bytes(uri.split("!/", 1)[0]) if "!/" in uri else unquote_to_bytes(uri)
        assert path in {
            f.path.encode("utf-8", "surrogateescape" if _escapable(f.path) else "backslashreplace")
            for f in findings
        }


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


# --- what the fields mean ----------------------------------------------------------------


def test_log_has_the_required_top_level_properties() -> None:
    log = to_sarif(_report())
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bastion"
    assert "informationUri" not in driver  # optional in SARIF; Bastion publishes no URL
    ids = [r["id"] for r in driver["rules"]]
    assert ids == sorted(
        {"pickle.global.dangerous", "torch.torchscript", "numpy.object-array", "keras.lambda"}
    )
    assert all(r["shortDescription"]["text"] for r in driver["rules"])


def test_results_map_severity_location_and_offset() -> None:
    [run] = to_sarif(_report())["runs"]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert {k: v["level"] for k, v in by_rule.items()} == {
        "pickle.global.dangerous": "error",
        "keras.lambda": "error",
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
    assert by_rule["keras.lambda"]["properties"] == {
        "severity": "high",
        "format": "keras",
        "configPath": "config.layers[2]",
    }


def test_base_uri_is_an_absolute_folder_uri(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(torch_zip(EVIL_PICKLE))
    [run] = to_sarif(scan(tmp_path / "m.pt"))["runs"]
    base = run["originalUriBaseIds"]["SCANROOT"]["uri"]
    assert base == tmp_path.resolve().as_uri() + "/"
    assert run["results"]


def test_new_rules_have_descriptions() -> None:
    report = ScanReport(
        root=".",
        findings=[
            Finding(rule, Severity.HIGH, "x", "m", "onnx")
            for rule in ("pickle.memo-expansion", "onnx.external-data-missing")
        ],
    )
    rules = to_sarif(report)["runs"][0]["tool"]["driver"]["rules"]
    assert all(r["shortDescription"]["text"] != r["id"] for r in rules)
