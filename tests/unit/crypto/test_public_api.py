"""``bastion.crypto``'s public surface: sorted, documented, and free of server imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bastion.crypto

DOC = Path(__file__).resolve().parents[3] / "docs" / "encryption.md"


def test_all_is_sorted_and_every_name_is_documented() -> None:
    names = bastion.crypto.__all__
    assert list(names) == sorted(names)
    text = DOC.read_text()
    missing = [name for name in names if f"`{name}" not in text]
    assert missing == []
    assert all(getattr(bastion.crypto, name) is not None for name in names)


def test_the_core_package_imports_no_server_database_or_web_code() -> None:
    code = (
        "import sys, bastion.crypto; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'starlette', 'sqlalchemy', 'httpx', 'uvicorn', 'alembic'} "
        "or m.startswith(('bastion.registry', 'bastion.api', 'bastion.web', 'bastion.db'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
