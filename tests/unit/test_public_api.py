"""The public surface is exactly what docs/api.md describes, and it is importable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bastion

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_all_matches_the_documented_names() -> None:
    documented = set(re.findall(r"^\| `([A-Za-z_]+)[(`]", DOC.read_text(), flags=re.M))
    assert set(bastion.__all__) == documented
    assert list(bastion.__all__) == sorted(bastion.__all__)


def test_every_public_name_resolves() -> None:
    for name in bastion.__all__:
        assert getattr(bastion, name) is not None


def test_importing_bastion_does_not_load_cryptography() -> None:
    code = "import sys, bastion, bastion.cli; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
