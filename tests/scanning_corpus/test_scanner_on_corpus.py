"""bastion.scan against the generated corpus: every malicious sample is detected with
a finding of its own (not merely "could not scan"), and the benign corpus yields no
finding at all, file by file and as a folder.

A sample the scanner misses is listed in ``SCANNER_MISSES`` and runs as a strict
xfail, so that the gap stays visible and the entry must go once it is fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.scanning import Finding, Severity, scan
from tests.scanning_corpus.generate import BENIGN_NAMES, MALICIOUS_NAMES, Sample

SCANNER_MISSES: dict[str, str] = {}


def _detections(findings: list[Finding]) -> list[Finding]:
    """Findings about the content itself, at HIGH or above (not scan.incomplete etc.)."""
    return [
        f for f in findings if f.severity >= Severity.HIGH and not f.rule_id.startswith("scan.")
    ]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=SCANNER_MISSES[name]))
        if name in SCANNER_MISSES
        else name
        for name in MALICIOUS_NAMES
    ],
)
def test_scanner_detects_malicious_sample(name: str, corpus_by_name: dict[str, Sample]) -> None:
    report = scan(corpus_by_name[name].path)
    assert _detections(report.findings), [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_scanner_reports_nothing_on_benign_sample(
    name: str, corpus_by_name: dict[str, Sample]
) -> None:
    report = scan(corpus_by_name[name].path)
    assert report.findings == []


def test_benign_folder_yields_zero_findings(corpus_root: Path, corpus: list[Sample]) -> None:
    report = scan(corpus_root / "benign")
    assert report.findings == []
    assert {s.path for s in report.scanned} >= set(BENIGN_NAMES)


def test_malicious_folder_names_every_detected_sample(
    corpus_root: Path, corpus: list[Sample]
) -> None:
    report = scan(corpus_root / "malicious")
    flagged = {f.path for f in _detections(report.findings)}
    assert flagged == set(MALICIOUS_NAMES) - set(SCANNER_MISSES)
