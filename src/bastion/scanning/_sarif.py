"""A scan report as SARIF 2.1.0, the format code-scanning services ingest.

One run, tool ``bastion``; one rule per rule id seen; one result per finding.
A member inside a container is addressed as ``path!/member`` (the jar-URL
convention), and also named as a logical location. The output is checked against
the official SARIF 2.1.0 JSON schema in the tests. Names that are not valid UTF-8
(kept with surrogate escapes) are percent-encoded byte for byte in URIs and shown
with backslash escapes in text, so that the log is always valid UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from bastion.scanning._report import Finding, ScanReport, Severity

__all__ = ["SARIF_SCHEMA", "SARIF_VERSION", "to_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"

#: One-line descriptions of the rules Bastion's containers and walk report.
RULES: dict[str, str] = {
    "scan.incomplete": "Part of the file could not be scanned",
    "scan.limit": "A resource limit was reached; part of the file was not scanned",
    "scan.unknown-format": "Unrecognised binary format",
    "scan.unsupported-format": "Recognised format that is not scanned yet",
    "scan.symlink": "Symbolic link, not followed",
    "scan.special-file": "Special file, not read",
    "zip.name-mismatch": "Zip local header and central directory name different members",
    "zip.header-mismatch": "Zip local header flags or method differ from the central directory",
    "zip.crc-mismatch": "Zip member CRC does not match its bytes",
    "zip.duplicate-name": "Several zip entries share one name",
    "zip.path-traversal": "Zip member name climbs out with '..'",
    "zip.absolute-path": "Zip member name is an absolute path",
    "zip.symlink": "Zip member is a symbolic link",
    "zip.encrypted": "Zip member is encrypted and cannot be scanned",
    "tar.path-traversal": "Tar member name climbs out with '..'",
    "tar.absolute-path": "Tar member name is an absolute path",
    "tar.link": "Tar member is a symbolic or hard link",
    "tar.special-member": "Tar member is a device or FIFO",
    "torch.torchscript": "TorchScript archive, which runs code on load",
    "numpy.object-array": "numpy object array, loaded through pickle",
    "numpy.size-mismatch": "numpy data length differs from its header",
    "pickle.memo-expansion": "Pickle whose shared memo references expand enormously",
    "onnx.external-data": "ONNX tensor data read from a file outside the model or a link",
    "onnx.external-data-missing": "ONNX tensor data file missing beside the model",
    "onnx.custom-domain": "ONNX operators that need a custom-op library",
}

_LEVELS = {
    Severity.INFO: "note",
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}


def to_sarif(report: ScanReport) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``report`` (a JSON-ready dict)."""
    rule_ids = sorted({f.rule_id for f in report.findings})
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    rules = [
        {
            "id": rule_id,
            "name": rule_id.replace(".", "/"),
            "shortDescription": {"text": RULES.get(rule_id, rule_id)},
        }
        for rule_id in rule_ids
    ]
    findings = sorted(
        report.findings, key=lambda f: (-f.severity, f.path, f.member or "", f.offset or 0)
    )
    results = [_result(f, index[f.rule_id]) for f in findings]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion",
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"SCANROOT": _base(report.root)},
                "results": results,
            }
        ],
    }


def _base(root: str) -> dict[str, Any]:
    """Where relative paths start: the folder scanned, or the folder of the file scanned."""
    path = Path(root).resolve()
    folder = path if path.is_dir() else path.parent
    return {"uri": folder.as_uri().rstrip("/") + "/", "description": {"text": _text(root)}}


def _uri(name: str) -> str:
    """``name`` percent-encoded; a name read as bytes is encoded as those bytes."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        raw = name.encode("utf-8", "backslashreplace")
    return quote(raw)


def _text(text: str) -> str:
    """``text`` with any lone surrogate written as a ``\\udcNN`` escape: valid UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    uri = _uri(finding.path)
    if finding.member is not None:
        uri += "!/" + _uri(finding.member)
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri, "uriBaseId": "SCANROOT"}}
    if finding.offset is not None:
        physical["region"] = {"byteOffset": finding.offset}
    location: dict[str, Any] = {"physicalLocation": physical}
    if finding.member is not None:
        location["logicalLocations"] = [
            {"fullyQualifiedName": _text(f"{finding.path}!/{finding.member}"), "kind": "member"}
        ]
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": _LEVELS[finding.severity],
        "message": {"text": _text(finding.message)},
        "locations": [location],
        "properties": {"severity": finding.severity.label, "format": finding.format},
    }
    if finding.config_path is not None:
        result["properties"]["configPath"] = _text(finding.config_path)
    return result
