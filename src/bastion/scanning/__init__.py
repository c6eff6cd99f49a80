"""Static scanning of model files for hidden code and hostile structure.

Nothing in a scanned file is ever executed or imported: pickles are audited
opcode by opcode, containers are parsed as their loaders parse them, and
anything that cannot be scanned is reported (``scan.incomplete``), never passed.
See ``docs/scanning.md``.
"""

from __future__ import annotations

from bastion.scanning._convert import ConvertResult, convert
from bastion.scanning._limits import Limits
from bastion.scanning._report import Finding, ScanReport, Severity
from bastion.scanning._scan import scan
from bastion.scanning._tree import Tree, scan_tree

__all__ = [
    "ConvertResult",
    "Finding",
    "Limits",
    "ScanReport",
    "Severity",
    "Tree",
    "convert",
    "scan",
    "scan_tree",
]
